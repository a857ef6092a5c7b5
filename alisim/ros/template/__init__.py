"""The ROS template engine: parsing and static checks (`parse`), parameter values
(`parameters`), intrinsic functions (`functions`) and the dependency graph (`graph`)."""
