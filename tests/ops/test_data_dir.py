"""The data dir is its owner's only: the folder is created 0700, the generated secret key and the SQLite file
0600, stored file bytes 0640 in folders 0750, whatever the umask. Processes that start together on an empty data
dir agree on one secret key. Settings act when they are imported, so each case is a new Python process."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from tests.stack import finished, settings_process


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


STORE = """
import django
django.setup()
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
call_command("migrate", "batchserver", verbosity=0)
print(default_storage.save("files/file-abc", ContentFile(b"secret bytes")))
"""


def test_modes_of_a_new_data_dir_whatever_the_umask(tmp_path):
    for umask in (0o022, 0o000):
        data_dir = tmp_path / f"umask-{umask:03o}" / "var"
        name = finished(settings_process(STORE, data_dir, umask=umask))
        assert mode(data_dir) == 0o700, umask
        assert mode(data_dir / "secret_key") == 0o600, umask
        assert mode(data_dir / "db.sqlite3") == 0o600, umask
        stored = data_dir / "files" / name
        assert stored.read_bytes() == b"secret bytes"
        assert mode(stored) == 0o640, umask
        assert mode(data_dir / "files") == mode(stored.parent) == 0o750, umask
        assert [p.name for p in data_dir.iterdir() if "secret_key" in p.name] == ["secret_key"]  # no temporary one


def test_an_existing_data_dir_keeps_its_mode_and_its_key(tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o750)
    (data_dir / "secret_key").write_text("kept-from-before\n")
    key = finished(settings_process("from django.conf import settings; print(settings.SECRET_KEY)", data_dir))
    assert key == "kept-from-before"
    assert mode(data_dir) == 0o750


RACE = """
import time
from pathlib import Path
go = Path({go!r})
import django.conf, dj_database_url  # the slow imports, before the start line
while not go.exists():
    time.sleep(0.001)
from django.conf import settings
print(settings.SECRET_KEY)
"""


def test_processes_starting_together_agree_on_the_secret_key(tmp_path):
    for round_ in range(3):
        data_dir, go = tmp_path / f"race-{round_}", tmp_path / f"go-{round_}"
        procs = [settings_process(RACE.format(go=str(go)), data_dir) for _ in range(6)]
        time.sleep(1.5)  # every process is waiting at the start line
        go.touch()
        keys = {finished(proc) for proc in procs}
        assert len(keys) == 1 and len(keys.pop()) >= 50
        assert [p.name for p in data_dir.iterdir() if "secret_key" in p.name] == ["secret_key"]  # no temporary one


# The worst interleaving, made certain: another process places its key just before this one places its own.
LOSER = """
import os
from pathlib import Path
final = Path(os.environ["BATCHSERVER_DATA_DIR"]) / "secret_key"
def other_process_first(place):
    def placed_after_the_winner(src, dst, *args, **kwargs):
        if Path(dst) == final and not final.exists():
            final.write_text("the-winners-key")
        return place(src, dst, *args, **kwargs)
    return placed_after_the_winner
os.link, os.replace, os.rename = (other_process_first(f) for f in (os.link, os.replace, os.rename))
from django.conf import settings
print(settings.SECRET_KEY)
"""


def test_a_process_that_loses_the_race_reads_the_winners_key(tmp_path):
    assert finished(settings_process(LOSER, tmp_path / "var")) == "the-winners-key"
    assert (tmp_path / "var" / "secret_key").read_text() == "the-winners-key"
