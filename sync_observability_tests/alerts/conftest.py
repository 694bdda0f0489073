"""Fixtures of the alert tests: a webhook receiver (the Dagster instance is the package's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sync_observability_tests.alerts.dagster_helpers import WebhookReceiver, webhook_receiver


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver
