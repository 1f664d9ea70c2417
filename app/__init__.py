"""bestmatch online service and the definitions shared with jobs and training."""
