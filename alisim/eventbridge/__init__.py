"""EventBridge (rules, patterns, HTTP targets) and CloudMonitor-style pushes for alisim."""
