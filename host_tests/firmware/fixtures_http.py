"""Host fixtures for the http firmware tests (owned by that area)."""
