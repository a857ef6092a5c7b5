"""The relay: authenticated HTTP ingress that turns Alibaba events into Prefect events."""
