"""wrel.engine."""
