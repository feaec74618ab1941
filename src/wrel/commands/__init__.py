"""wrel.commands."""
