"""A tiny Django project for the benchmarks: the same views with and without django_graceful."""
