"""Pure logic of the cluster layer: the ring and the override table."""
