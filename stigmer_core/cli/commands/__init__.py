"""The ``stigmer`` subcommands, one module per area."""
