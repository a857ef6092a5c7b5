"""Events alisim publishes, in the documents Alibaba Cloud itself sends."""
