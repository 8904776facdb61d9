"""Benchmarks of django_graceful: request overhead, and how each server shuts down."""
