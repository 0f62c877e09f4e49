"""The routing server: HTTP app, upstream providers, storage and metrics."""
