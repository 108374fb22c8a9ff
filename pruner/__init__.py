"""pruner."""
