"""Operations an administrator runs: backup and restore, and the like."""
