"""Runnable examples; each has a test in python/tests/integrations."""
