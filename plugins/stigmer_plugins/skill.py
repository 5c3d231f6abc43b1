"""The skill kinds (being built: see issue 3)."""
