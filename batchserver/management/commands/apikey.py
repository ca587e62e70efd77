"""python manage.py apikey create|list|revoke: API keys from the command line."""

from __future__ import annotations

import argparse
import shlex

from django.core.management.base import BaseCommand, CommandError

from batchserver.models import ApiKey, Project
from batchserver.services import ProjectExists, api_key_create, api_key_revoke


def _name(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("a name may not be empty")
    return value.strip()


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
        sub.add_parser("list", help="List keys (prefix, name, project, created, last used, revoked).")
        revoke = sub.add_parser("revoke", help="Revoke a key by its id or its prefix.")
        revoke.add_argument("key", help="The key's id or the prefix shown by `apikey list`.")

    def handle(self, *args, action: str, **options):
        if action == "create":
            key, raw = self.create(name=options["name"], project=options["project"], new_project=options["new_project"])
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
                    f"created {key.created_at:%Y-%m-%d %H:%M}\tlast used {used}\t{state}"
                )
        elif action == "revoke":
            ref = options["key"]
            matches = list(
                ApiKey.objects.filter(pk=int(ref))
                if ref.isdigit()
                else ApiKey.objects.filter(prefix__startswith=ref.rstrip("…"))
            )
            if len(matches) != 1:
                raise CommandError(f"{len(matches)} keys match '{ref}'; give the id from `apikey list`.")
            key = api_key_revoke(key=matches[0])
            self.stdout.write(f"Revoked key {key.pk} ({key.prefix}…, '{key.name}').")

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
