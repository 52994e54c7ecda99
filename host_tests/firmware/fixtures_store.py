"""Host fixtures for the store firmware tests (owned by that area)."""
