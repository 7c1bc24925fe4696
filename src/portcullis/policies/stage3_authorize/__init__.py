"""Stage 3, authorize: may this caller use this route (scopes, roles)."""
