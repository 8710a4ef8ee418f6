"""Adversarial tests of the edge authorizer (REST, HTTP API v2, Lambda@Edge)."""
