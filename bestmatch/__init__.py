"""The ``bestmatch`` command line: serving, jobs, dev servers, models and the demo."""
