"""Offline trainers and model builders (import app's shared definitions, never the reverse)."""
