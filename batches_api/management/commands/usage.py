"""`manage.py usage`: what the projects used, per project, model and day (UTC), for scripts and invoices.

manage.py usage --since 2026-11-01 --until 2026-11-30 --project team-a --model SmolLM2-135M-Instruct
manage.py usage --since 2026-11-01 --format csv > usage.csv
manage.py usage --total --format json
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from batches_api.accounting import COUNTED, usage_csv, usage_days, usage_totals


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"Invalid date {value!r}: use YYYY-MM-DD, e.g. 2026-11-01.")


class Command(BaseCommand):
    help = "Usage per project, model and day (batches, requests, tokens, engine seconds): a table, CSV or JSON."

    def add_arguments(self, parser):
        parser.add_argument("--since", type=_day, help="first day, YYYY-MM-DD (UTC), included")
        parser.add_argument("--until", type=_day, help="last day, YYYY-MM-DD (UTC), included")
        parser.add_argument("--project", help="a project's name")
        parser.add_argument("--model", help="a served model's name")
        parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
        parser.add_argument("--total", action="store_true", help="one line: the sums over the rows selected")

    def handle(self, *args, since, until, project, model, format, total, **options):
        if since and until and since > until:
            raise CommandError(f"--since {since} is after --until {until}.")
        rows = usage_days(since=since, until=until, project=project, model=model)
        if total:
            figures = dataclasses.asdict(usage_totals(rows))
            if format == "json":
                self.stdout.write(json.dumps(figures))
            else:
                self.stdout.write("\n".join(f"{name}: {value}" for name, value in figures.items()))
            return
        if format == "csv":
            self.stdout.write(usage_csv(rows.iterator()), ending="")
        elif format == "json":
            for row in rows.iterator():
                line = {"day": row.day.isoformat(), "project": row.project.name, "model": row.model}
                self.stdout.write(json.dumps(line | {name: getattr(row, name) for name in COUNTED}))
        else:
            self._table(rows)

    def _table(self, rows) -> None:
        head = [
            "day",
            "project",
            "model",
            "batches c/f/e/x",
            "requests ok",
            "failed",
            "input",
            "cached",
            "output",
            "engine s",
        ]
        lines = [head]
        for row in rows.iterator():
            lines.append(
                [
                    row.day.isoformat(),
                    row.project.name,
                    row.model or "—",
                    f"{row.batches_completed}/{row.batches_failed}/{row.batches_expired}/{row.batches_cancelled}",
                    str(row.requests_succeeded),
                    str(row.requests_failed),
                    str(row.input_tokens),
                    str(row.cached_input_tokens),
                    str(row.output_tokens),
                    f"{row.engine_seconds:.1f}",
                ]
            )
        if len(lines) == 1:
            self.stdout.write("No usage in this range.")
            return
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        for line in lines:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
