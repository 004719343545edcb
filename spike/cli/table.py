"""``spike table REPORT.json ...``: the reports of several ``spike run --json`` runs (a sweep) as one
table, one row per report; ``--csv`` writes it for a spreadsheet or pandas."""
from __future__ import annotations

import argparse
import csv
import io

from spike.cli.options import refuse_overwriting
from spike.train.checkpoint import atomic_write_text
from spike.workflows import REPORT_COLUMNS, load_run_report, report_row


def add_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("reports", nargs="+", help="report files written by `spike run --json`")
    t.add_argument("--csv", default=None, metavar="PATH", help="also write the table as CSV")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run(args: argparse.Namespace) -> int:
    refuse_overwriting(args.reports, {"--csv": args.csv})
    rows = [report_row(load_run_report(path), path) for path in args.reports]
    cells = [[_cell(r[c]) for c in REPORT_COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(REPORT_COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(REPORT_COLUMNS, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    if args.csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(args.csv, out.getvalue())
        print(f"-> {args.csv}")
    return 0
