"""wrel.methods."""
