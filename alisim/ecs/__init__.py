"""ECS instances in alisim: the lifecycle, its events and the instance actions."""
