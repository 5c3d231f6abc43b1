"""The ``stigmer`` command line: daemon, declarative apply, reads, backups, backends.

No command has code for a particular kind: kinds come from the plugin
registry (local backend) or from server reflection (remote backend), and
every rpc is invoked by path with the kind's own message classes.
"""

from stigmer_core.cli.app import main

__all__ = ["main"]
