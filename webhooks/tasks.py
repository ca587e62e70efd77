"""Task-cluster jobs of webhooks: thin, they take ids and call services."""

from __future__ import annotations

from webhooks import services


def send_delivery(delivery_id: str) -> None:
    """One attempt of a delivery; does nothing when another task has sent it or is sending it."""
    services.delivery_send(delivery_id=delivery_id)
