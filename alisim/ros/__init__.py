"""ROS (Resource Orchestration Service, API 2019-09-10): stacks from real templates."""
