"""Who uses a file. Apps built on files_api (batches_api: a batch reads its input file and writes its output and
error files) register a finder here, so that files_api can answer "may this file be deleted?" and show who uses
it without importing them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from django.contrib.admin.utils import quote
from django.urls import reverse


@dataclass(frozen=True)
class FileUse:
    file_id: str
    kind: str  # what uses it, e.g. "batch"
    object_id: str
    status: str  # the user's status, e.g. "in_progress"
    role: str  # what the file is to it, e.g. "input"
    admin_url_name: str  # the URL name of the user's page in the console, e.g. "admin:batches_api_batch_change"
    blocks_deletion: bool  # the user still needs the file (an unfinished batch reads its input)

    @property
    def admin_url(self) -> str:
        return reverse(self.admin_url_name, args=[quote(self.object_id)])

    def refusal(self) -> str:
        return (
            f"File '{self.file_id}' is the {self.role} of {self.kind} '{self.object_id}', which has not "
            f"finished. Cancel the {self.kind} or wait for it to finish, then delete the file."
        )


class Finder(Protocol):
    def __call__(self, file_ids: list[str], *, needed_only: bool) -> Iterable[FileUse]: ...


_finders: list[Finder] = []
SHOWN = 1000  # uses listed for the files of one page, newest first


def register(finder: Finder) -> None:
    """`finder(file_ids, needed_only=…)` yields the uses of those files, newest first: all of them (at most
    SHOWN), or only those that block their deletion (every one of those)."""
    _finders.append(finder)


def file_uses(file_ids: Iterable[str]) -> dict[str, list[FileUse]]:
    """What uses these files, newest first (for the console)."""
    return _collect(file_ids, needed_only=False)


def files_in_use(file_ids: Iterable[str]) -> dict[str, FileUse]:
    """The files among these that may not be deleted now, with a use that needs each."""
    return {file_id: uses[0] for file_id, uses in _collect(file_ids, needed_only=True).items()}


def _collect(file_ids: Iterable[str], *, needed_only: bool) -> dict[str, list[FileUse]]:
    ids = list(file_ids)
    uses: dict[str, list[FileUse]] = defaultdict(list)
    if ids:
        for finder in _finders:
            for use in finder(ids, needed_only=needed_only):
                uses[use.file_id].append(use)
    return uses
