"""Batch jobs that feed the service: catalog indexing and feature refresh."""
