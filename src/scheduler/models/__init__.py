"""Records of the scheduler: job specs and the field schemas the CLI prints."""
