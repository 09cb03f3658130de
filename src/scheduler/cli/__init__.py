"""The ``openclaw-scheduler`` command line: thin over the service, store and models."""
