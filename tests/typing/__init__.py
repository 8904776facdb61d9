"""Files that mypy checks in tests/test_typing.py (they import and run as plain Python too)."""
