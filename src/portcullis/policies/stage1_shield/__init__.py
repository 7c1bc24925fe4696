"""Stage 1, shield: refusals that need no identity (IP rules, CORS preflights)."""
