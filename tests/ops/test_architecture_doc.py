"""docs/architecture.md stays true: every module, class or function it names exists."""

from __future__ import annotations

import importlib
import re

from tests.stack import ROOT

APPS = ("batchserver", "files_api", "batches_api", "inference", "webhooks")


def resolve(dotted: str) -> object:
    """The object a dotted name names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ModuleNotFoundError(dotted)


def test_every_name_in_the_architecture_page_exists(db):
    text = (ROOT / "docs" / "architecture.md").read_text()
    names = sorted({name for name in re.findall(r"`([a-z_]+(?:\.[A-Za-z_]+)+)`", text) if name.startswith(APPS)})
    assert len(names) > 30  # the page names the code it describes
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert missing == []


def test_the_readme_links_the_architecture_page():
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()
