"""wrel.evaluation."""
