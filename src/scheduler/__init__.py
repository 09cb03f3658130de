"""openclaw-scheduler for Python: a durable asyncio scheduler for agent and shell jobs."""

__version__ = "0.1.0"
