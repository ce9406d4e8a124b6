"""pandas UDFs that load a model or codec once per Python worker and apply it to batches."""
