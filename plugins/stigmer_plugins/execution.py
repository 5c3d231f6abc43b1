"""The execution kinds (being built: see issue 3)."""
