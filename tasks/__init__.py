"""Prefect tasks around SDK calls, OSS reads and event waits (batch-first)."""
