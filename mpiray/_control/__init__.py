"""Rank 0: the GCS tables, the global scheduler and the service thread around them."""
