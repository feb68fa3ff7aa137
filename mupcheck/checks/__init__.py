"""Checks of a muP implementation itself: static lint, coordinate checks."""
