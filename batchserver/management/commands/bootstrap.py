"""python manage.py bootstrap: everything `make run` needs before it starts the processes."""

from __future__ import annotations

import os

from django.core.management import call_command
from django.core.management.base import BaseCommand

from batchserver.models import ApiKey
from batchserver.services import api_key_create, api_key_ensure


class Command(BaseCommand):
    help = ("Apply migrations, install the periodic jobs, and make sure an API key exists "
            "(BATCHSERVER_API_KEY if set, else a new 'local' key on first start, printed once).")

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
            self.stdout.write(f"API key from BATCHSERVER_API_KEY: {'created' if created else 'found'} "
                              f"(project '{key.project.name}').")
        elif not ApiKey.objects.active().exists():
            key, raw = api_key_create(name="local")
            if key_file:
                with open(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
                    fh.write(raw + "\n")
            self.stdout.write(self.style.SUCCESS(
                "\nCreated an API key for project 'local'. It is shown only now:\n\n"
                f"    export OPENAI_API_KEY={raw}\n    export OPENAI_BASE_URL=http://localhost:"
                f"{os.environ.get('PORT', '4080')}/v1\n"))
        else:
            self.stdout.write("API keys exist already (python manage.py apikey list; apikey create --name NAME).")
