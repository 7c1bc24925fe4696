"""Stage 2, authenticate: who is calling (API keys, JWTs) and the failed-authentication shield."""
