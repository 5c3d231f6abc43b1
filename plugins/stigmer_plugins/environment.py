"""The environment kinds (being built: see issue 3)."""
