"""wrel.web."""
