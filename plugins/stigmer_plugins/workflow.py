"""The workflow kinds (being built: see issue 3)."""
