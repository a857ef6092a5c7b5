"""How the flows are served locally, with the schedules and triggers of prefect.yaml."""
