"""Stage 4, limit: rate limits per consumer, IP, route or globally."""
