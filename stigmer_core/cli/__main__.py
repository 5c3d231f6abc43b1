"""``python -m stigmer_core.cli``: what ``local start`` spawns, independent of PATH."""

from stigmer_core.cli.app import main

main(prog_name="stigmer")
