"""django-q2 tasks of the task cluster. Thin: ids in, services called. Each is a claimed job on its batch, so a
task delivered twice, or run while another copy runs, does nothing the second time."""

from __future__ import annotations

from batches_api import services


def validate_batch(batch_id: str) -> str | None:
    batch = services.batch_validate(batch_id=batch_id)
    return batch.status if batch else None


def finalize_batch(batch_id: str) -> str | None:
    batch = services.batch_finalize(batch_id=batch_id)
    return batch.status if batch else None
