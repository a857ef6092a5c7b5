"""Event-driven Alibaba Cloud runbooks on Prefect 3: the core (no flow code here)."""

__version__ = "0.1.0"
