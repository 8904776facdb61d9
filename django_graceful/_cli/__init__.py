"""What the management commands share: argument types, and how each server is started."""
