"""``python -m harness.report SWEEP_DIR... [--out DIR] [--note TEXT] [--no-html]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .document import build_report


def main(argv: list[str] | None = None) -> int:
    """CLI entry: one error line and exit code 2 on bad input, else the report's path."""
    parser = argparse.ArgumentParser(prog="python -m harness.report",
                                     description="The findings report: claim vs measurement.")
    parser.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR",
                        help="sweep or run dirs (record.json files are found below them)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where report.md, report.html and the plots go (default: "
                             "SWEEP_DIR/report of the first dir)")
    parser.add_argument("--note", action="append", default=[],
                        help="a provenance line for the report's header (repeatable)")
    parser.add_argument("--no-html", action="store_true", help="write report.md and plots only")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.sweep_dirs, args.out, args.note, html_too=not args.no_html)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report written to {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
