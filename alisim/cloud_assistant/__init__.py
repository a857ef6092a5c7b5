"""Cloud Assistant in alisim: commands really run per instance, with their real statuses and events.

Same API product and version as ECS (`Ecs` 2014-05-26), its own service and folder.
"""
