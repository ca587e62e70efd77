"""The serving loop's result writer, on the real database: what the loop learns from it decides when a batch is
asked to finalize, so a write is reported only once its batch no longer counts as waiting for the writer."""

from __future__ import annotations

from inference.writer import Results, ResultWriter


def test_a_write_is_reported_once_its_batches_no_longer_count_as_pending(db_access):
    writer = ResultWriter("test")
    try:
        first = Results(worker_id=0, outcomes=[], clean=[-1], failed=[], batch_ids={"batch_a", "batch_b"})
        second = Results(worker_id=0, outcomes=[], clean=[-2], failed=[-3], batch_ids={"batch_b"})
        writer.submit(first)
        writer.submit(second)
        assert writer.pending_batch_ids <= {"batch_a", "batch_b"}
        reported = writer.written.get(timeout=10)
        assert reported.batch_ids == {"batch_a", "batch_b"}
        assert "batch_a" not in writer.pending_batch_ids  # its one write is done when the loop hears of it
        reported = writer.written.get(timeout=10)
        assert reported.batch_ids == {"batch_b"}
        assert writer.pending_batch_ids == set() and writer.pending == 0
        assert writer.drain(1)
    finally:
        writer.stop()
