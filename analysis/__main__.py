"""Rank every model's best configurations and write a report, from exported results alone.

    python -m analysis results/<name> [results/<other> ...] [--metric val_acc] [--top-k 5]

Writes <first results dir>/report/ (or --out): report.md, PNG plots, rankings as Parquet and CSV.
Needs no Ray: results copied off a cluster can be analysed anywhere.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.load import AnalysisError, load
from analysis.tables import METRICS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="experiment folders written by python -m search.run")
    p.add_argument("--metric", default="val_acc", choices=sorted(METRICS),
                   help="what ranks the configurations (test_acc: winners by their test numbers)")
    p.add_argument("--top-k", type=int, default=5, help="configurations shown per model")
    p.add_argument("--model", default=None, help="only these models (comma list)")
    p.add_argument("--out", default=None, help="report folder (default: <first folder>/report)")
    p.add_argument("--pool-fronts", action="store_true",
                   help="one Pareto front over every experiment given (default: one per experiment, since "
                        "searches of different data sets are not comparable)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from analysis.report import write_report  # matplotlib is imported only once the input is good

    try:
        if args.top_k < 1:
            raise AnalysisError(f"--top-k must be at least 1, got {args.top_k}")
        results = load(args.folders, args.model.split(",") if args.model else None)
        out = Path(args.out) if args.out else results.folders[0] / "report"
        report = write_report(results, out, args.metric, args.top_k, pool=args.pool_fronts)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
