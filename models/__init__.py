"""torch modules, losses, training loops, metrics and the artifact registry."""
