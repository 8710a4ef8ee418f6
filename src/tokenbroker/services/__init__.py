"""Use cases. Each service is built complete by the composition root (bootstrap)."""
