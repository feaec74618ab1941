"""wrel.data."""
