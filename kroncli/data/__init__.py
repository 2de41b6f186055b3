"""Task data: GLUE (task table and loaders)."""
