"""Operations an administrator runs: import from OpenClaw cron, backup and restore."""
