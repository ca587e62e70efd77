"""python manage.py project list|set-limits: projects' limits and what they use of them, from the command line."""

from __future__ import annotations

import argparse
import re

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from batches_api.selectors import project_usage
from batchserver.limits import human_bytes
from batchserver.models import Project
from batchserver.services import KEEP, project_set_limits

DEFAULT = "default"
UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _count(value: str) -> int | None:
    """A whole number (1_000_000 and 1,000,000 are read too), or `default`."""
    if value.strip().lower() == DEFAULT:
        return None
    try:
        number = int(value.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number, nor `default`")
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is negative")
    return number


def _size(value: str) -> int | None:
    """Bytes: 5000000, 500MB, 2GB, 1.5TB (powers of 1024), or `default`."""
    if value.strip().lower() == DEFAULT:
        return None
    match = re.fullmatch(r"\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([KMGT]?B?)\s*", value.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size such as 5000000, 500MB or 2GB, nor `default`")
    unit = match[2] if match[2] in ("", "B") or match[2].endswith("B") else match[2] + "B"
    return int(float(match[1].replace(",", "").replace("_", "")) * UNITS[unit])


def _model_limit(value: str) -> tuple[str, int | None]:
    model, sep, limit = value.rpartition("=")
    if not sep or not model:
        raise argparse.ArgumentTypeError(f"{value!r} is not MODEL=TOKENS (e.g. SmolLM2-135M-Instruct=2000000)")
    return model, _count(limit)


def _limit(limit: int | None, unit=lambda n: f"{n:,}") -> str:
    return "unlimited" if limit is None else unit(limit)


class Command(BaseCommand):
    help = "List projects with their limits, and set a project's limits."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="Each project's batches in flight, stored bytes and enqueued tokens per model.")
        limits = sub.add_parser(
            "set-limits",
            help="Set a project's own limits; `default` gives a limit back to the server's default.",
            description="Each value replaces the project's own limit; `default` gives it back to the server's default "
            "(BATCHSERVER_ENQUEUED_TOKENS_LIMIT, BATCHSERVER_MAX_BATCHES_IN_FLIGHT, BATCHSERVER_MAX_STORED_BYTES; "
            "none set means no limit). Limits not named stay as they are.",
        )
        limits.add_argument("project", help="The project's name.")
        limits.add_argument(
            "--enqueued-tokens",
            nargs="+",
            type=_model_limit,
            metavar="MODEL=N",
            default=[],
            help="Input tokens of the project's validating, in_progress and finalizing batches of MODEL, at most "
            "(MODEL=default: the server's default).",
        )
        limits.add_argument(
            "--batches-in-flight",
            type=_count,
            metavar="N|default",
            default=KEEP,
            help="Batches that may be validating, in_progress or finalizing at once.",
        )
        limits.add_argument(
            "--stored-bytes",
            type=_size,
            metavar="SIZE|default",
            default=KEEP,
            help="Bytes of files the project may store (e.g. 50GB; powers of 1024).",
        )

    def handle(self, *args, action: str, **options):
        if action == "list":
            for project in Project.objects.order_by("name"):
                self.show(project)
            return
        found = Project.objects.filter(name=options["project"]).first()
        if found is None:
            raise CommandError(f"No project named '{options['project']}'. `manage.py project list` shows them.")
        unknown = [model for model, _ in options["enqueued_tokens"] if model not in settings.BATCHSERVER_MODELS]
        if unknown:
            raise CommandError(
                f"No model named '{unknown[0]}' is served here. Served models: "
                + ", ".join(sorted(settings.BATCHSERVER_MODELS))
                + "."
            )
        project = project_set_limits(
            project=found,
            enqueued_tokens=dict(options["enqueued_tokens"]),
            max_batches_in_flight=options["batches_in_flight"],
            max_stored_bytes=options["stored_bytes"],
        )
        self.show(project)

    def show(self, project: Project) -> None:
        usage = project_usage(project)
        self.stdout.write(
            f"{project.name}\tbatches in flight {usage.batches_in_flight:,} / "
            f"{_limit(usage.batches_in_flight_limit)}\tstored {human_bytes(usage.stored_bytes)} / "
            f"{_limit(usage.stored_bytes_limit, human_bytes)}"
        )
        for model, (tokens, limit) in usage.enqueued_tokens.items():
            self.stdout.write(f"  {model}\tenqueued tokens {tokens:,} / {_limit(limit)}")
        default = settings.BATCHSERVER_ENQUEUED_TOKENS_LIMIT
        if default is not None:
            self.stdout.write(f"  any other model\tenqueued tokens 0 / {default:,} (server default)")
