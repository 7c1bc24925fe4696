"""Stage 5, validate: the request body, only once the caller is known and within limits."""
