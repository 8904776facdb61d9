"""The per-worker runtime: the lifecycle and its phases, what a server's stops mean, the
contract its driver meets, the registry of in-flight work, bounded waits and hooks, the
OS-signal chain. Imports no server, no server's driver, no diagnosis."""
