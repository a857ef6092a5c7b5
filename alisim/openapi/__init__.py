"""The OpenAPI side of alisim: signatures, parameters, dispatch by action and version."""
