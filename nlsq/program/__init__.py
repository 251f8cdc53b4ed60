"""Build: the compiled programs, their specs, cache keys, padding and host callbacks."""
