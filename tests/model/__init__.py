"""Model round trip: the dynamic-dispatch pyfunc logged, loaded and called in process (validation, batch scoring)."""
