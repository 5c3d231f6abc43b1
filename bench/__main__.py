"""``python -m bench [--quick] [--only NAME] [--json FILE]``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import memory, report, scenarios
from bench.budget import FULL, QUICK


def _parser() -> argparse.ArgumentParser:
    about = "\n".join(f"  {s.name:<17} {s.about}" for s in scenarios.SCENARIOS)
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Stigmer Core throughput and latency, with ratios to a bare grpcio baseline of the same run.",
        epilog=f"scenarios:\n{about}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small counts (the smoke test's run, under 20 s)")
    parser.add_argument("--only", choices=scenarios.NAMES, metavar="NAME", help="run one scenario (and its baseline)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    budget = QUICK if args.quick else FULL
    names = scenarios.selection(args.only)
    result = scenarios.run(names, budget, log=lambda text: print(f"# {text}", file=sys.stderr, flush=True))
    peak = memory.peak_rss_mib()
    print(report.table(result, budget, peak), flush=True)
    if args.json is not None:
        doc = report.document(result, budget, peak, quick=args.quick)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
