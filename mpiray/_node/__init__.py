"""Raylet ranks: local scheduling, the worker pool and the worker process."""
