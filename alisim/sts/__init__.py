"""STS: who the caller is (GetCallerIdentity)."""
