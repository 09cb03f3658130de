"""Operations an admin runs: import from OpenClaw cron, ..."""
