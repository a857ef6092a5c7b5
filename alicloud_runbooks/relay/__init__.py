"""The relay: authenticated HTTP ingress that turns Alibaba events into stored Prefect events."""
