"""Object storage: the node-local shared-memory store and its on-disk format."""
