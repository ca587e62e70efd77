"""What other apps may react to without batches_api knowing them (they build on batches_api, never the reverse)."""

from django.dispatch import Signal

# Sent inside the transaction of every batch transition (batches_api.services), with `batch` (its row as the
# transition left it) and `status` (the new one): a receiver's writes commit if and only if the transition does.
batch_status_changed = Signal()
