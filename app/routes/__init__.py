"""The HTTP API by concern: search, admin, moderation, health and metrics."""
