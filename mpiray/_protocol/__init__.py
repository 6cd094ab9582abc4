"""Messages exchanged between rank 0, raylets and workers."""
