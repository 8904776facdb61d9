"""The per-worker runtime: the lifecycle and its phases, the registry of in-flight work,
bounded waits and hooks, the OS-signal chain. Imports no server, no adapter, no diagnosis."""
