"""wrel.models."""
