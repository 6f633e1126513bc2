"""The `ember` command line. Server-side commands import server packages lazily."""
