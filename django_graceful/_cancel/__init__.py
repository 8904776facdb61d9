"""What views get to stop cleanly: ``@cancellable``, ``shield()``, and interrupted SQL."""
