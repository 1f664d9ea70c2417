"""Prohibited-item detection: multimodal DARTS search, detectors and moderation."""
