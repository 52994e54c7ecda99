"""Host fixtures for the identity firmware tests (owned by that area)."""
