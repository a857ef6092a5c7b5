"""Prefect tasks around SDK calls, OSS reads and event waits (batch-first)."""

from alicloud_runbooks.errors import log_task_failures_on_one_line

log_task_failures_on_one_line()
