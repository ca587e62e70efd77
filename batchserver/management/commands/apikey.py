"""python manage.py apikey create|list|revoke: API keys from the command line."""

from __future__ import annotations

import argparse
import shlex

from django.core.management.base import BaseCommand, CommandError

from batchserver.limits import requests_per_minute
from batchserver.models import ApiKey, Project
from batchserver.services import ProjectExists, api_key_create, api_key_revoke, api_key_set_rate_limit


def _name(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("a name may not be empty")
    return value.strip()


def _rpm(value: str) -> int | None:
    if value.strip().lower() == "default":
        return None
    try:
        rpm = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of requests per minute, nor `default`")
    if rpm < 1:
        raise argparse.ArgumentTypeError("a rate limit is at least 1 request per minute")
    return rpm


def _rate(key: ApiKey) -> str:
    rpm = requests_per_minute(key)
    shown = "unlimited" if rpm is None else f"{rpm:,} requests/min"
    return shown if key.rate_limit_rpm is not None else f"{shown} (server default)"


class Command(BaseCommand):
    help = "Create, list and revoke API keys. A key is printed once, when it is created."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a key and print it (only this once).")
        create.add_argument("--name", required=True, type=_name, help="What the key is for, e.g. web-app.")
        # The owner is always named: a key sees every file and batch of its project.
        owner = create.add_mutually_exclusive_group(required=True)
        owner.add_argument(
            "--project", metavar="NAME", type=_name, help="An existing project: the key sees its files and batches."
        )
        owner.add_argument(
            "--new-project", metavar="NAME", type=_name, help="A project created with the key (it owns nothing yet)."
        )
        create.add_argument(
            "--rpm", type=_rpm, metavar="N", help="Requests per minute the key may send (default: the server's)."
        )
        sub.add_parser("list", help="List keys (prefix, name, project, created, last used, rate limit, revoked).")
        revoke = sub.add_parser("revoke", help="Revoke a key by its id or its prefix.")
        revoke.add_argument("key", help="The key's id or the prefix shown by `apikey list`.")
        limit = sub.add_parser("set-rate-limit", help="Set the requests per minute a key may send to /v1/.")
        limit.add_argument("key", help="The key's id or the prefix shown by `apikey list`.")
        limit.add_argument(
            "--rpm",
            required=True,
            type=_rpm,
            metavar="N|default",
            help="Requests per minute (at least 1), or `default` for the server's (BATCHSERVER_RATE_LIMIT_RPM).",
        )

    def handle(self, *args, action: str, **options):
        if action == "create":
            key, raw = self.create(name=options["name"], project=options["project"], new_project=options["new_project"])
            if options["rpm"] is not None:
                key = api_key_set_rate_limit(key=key, requests_per_minute=options["rpm"])
            self.stderr.write(
                f"Created key '{key.name}' for project '{key.project.name}'. "
                "It is shown only now; keep it somewhere safe:"
            )
            self.stdout.write(raw)
        elif action == "list":
            for key in ApiKey.objects.select_related("project"):
                state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
                used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
                self.stdout.write(
                    f"{key.pk}\t{key.prefix}…\t{key.name}\t{key.project.name}\t"
                    f"created {key.created_at:%Y-%m-%d %H:%M}\tlast used {used}\t{_rate(key)}\t{state}"
                )
        elif action == "revoke":
            key = api_key_revoke(key=self.find(options["key"]))
            self.stdout.write(f"Revoked key {key.pk} ({key.prefix}…, '{key.name}').")
        elif action == "set-rate-limit":
            key = api_key_set_rate_limit(key=self.find(options["key"]), requests_per_minute=options["rpm"])
            self.stdout.write(f"Key {key.pk} ({key.prefix}…, '{key.name}'): {_rate(key)}.")

    def find(self, ref: str) -> ApiKey:
        ref = ref.rstrip("…")
        keys = ApiKey.objects.filter(pk=int(ref)) if ref.isdigit() else ApiKey.objects.filter(prefix__startswith=ref)
        matches = list(keys)
        if len(matches) != 1:
            raise CommandError(f"{len(matches)} keys match '{ref}'; give the id from `apikey list`.")
        return matches[0]

    def create(self, *, name: str, project: str | None, new_project: str | None) -> tuple[ApiKey, str]:
        if project is not None:
            existing = Project.objects.filter(name=project).first()
            if existing is None:
                raise CommandError(
                    f"No project named '{project}'. To create it with the key, use "
                    f"--new-project {shlex.quote(project)} instead of --project."
                )
            return api_key_create(name=name, project=existing)
        try:
            return api_key_create(name=name, new_project=new_project)
        except ProjectExists:
            assert new_project is not None  # only a new project's name can be taken
            raise CommandError(
                f"A project named '{new_project}' exists already. To add the key to it, use "
                f"--project {shlex.quote(new_project)}; or choose another name for --new-project."
            )
