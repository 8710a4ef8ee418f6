"""Test-side helpers: an independent DPoP toolkit and in-memory fakes of the ports."""
