"""Stage 6, respond: what every response carries (security headers)."""
