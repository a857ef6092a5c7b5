"""Alibaba Cloud events: their pydantic models and their mapping to Prefect events."""
