"""python manage.py bootstrap: everything `make run` needs before it starts the processes."""

from __future__ import annotations

import os

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from batchserver.models import ApiKey
from batchserver.services import ProjectExists, api_key_ensure, api_key_first_start

HOW_TO_CREATE = (
    "python manage.py apikey create --name NAME --new-project PROJECT (or --project PROJECT for an existing one)"
)


class Command(BaseCommand):
    help = (
        "Apply migrations, install the periodic jobs, and create an API key: BATCHSERVER_API_KEY if set and "
        "new, else a 'local' key on the very first start of the deployment only (printed once)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--key-file", help="Also write a newly created key to this file (mode 600).")

    def handle(self, *args, key_file: str | None = None, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        from batchserver.schedules import install_schedules

        install_schedules()
        raw = os.environ.get("BATCHSERVER_API_KEY")
        if raw:
            key, created = api_key_ensure(raw_key=raw)
            self.stdout.write(
                f"API key from BATCHSERVER_API_KEY: {'created' if created else 'found'} (project '{key.project.name}')."
            )
            if not key.is_active:
                self.stderr.write(
                    "That key is revoked: requests with it get a 401. Set BATCHSERVER_API_KEY to a new "
                    f"key, or unset it and create one with {HOW_TO_CREATE}."
                )
        try:
            # After BATCHSERVER_API_KEY's key this creates none, but still records the first start.
            first = api_key_first_start()
        except ProjectExists as exc:
            raise CommandError(
                f"No API key created: a project named '{exc.name}' exists already. Create a key with {HOW_TO_CREATE}."
            ) from None
        if first is not None:
            key, raw = first
            if key_file:
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.fchmod(fd, 0o600)  # the mode of os.open applies to a new file only
                with open(fd, "w") as fh:
                    fh.write(raw + "\n")
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nCreated an API key for project '{key.project.name}'. It is shown only now:\n\n"
                    f"    export OPENAI_API_KEY={raw}\n    export OPENAI_BASE_URL=http://localhost:"
                    f"{os.environ.get('PORT', '4080')}/v1\n"
                )
            )
        elif not raw:
            active = ApiKey.objects.active().count()
            self.stdout.write(
                f"No API key created: this deployment has started before ({active} active key"
                f"{'' if active == 1 else 's'}; `python manage.py apikey list`). Only its very first "
                f"start or BATCHSERVER_API_KEY creates one. Create one with {HOW_TO_CREATE}."
            )
