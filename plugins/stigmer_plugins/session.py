"""The session kinds (being built: see issue 3)."""
