"""OSS in alisim: path-style buckets and objects with V1 and V4 signatures."""
