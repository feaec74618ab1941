"""Internals of the embedded synthetic benchmark; the public entry is ``wrel.data.synthetic``."""
