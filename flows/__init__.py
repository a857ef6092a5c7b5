"""Prefect flows: the runbooks users run and deploy."""
