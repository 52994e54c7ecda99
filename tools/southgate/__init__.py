"""southgate: a local MindConnect (Insights Hub) service for developing and testing agents offline."""
