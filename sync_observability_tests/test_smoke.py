"""The shortest path through the product, on both engines."""

from sync_observability_tests.conftest import Backend


def test_one_sync_is_recorded(backend: Backend) -> None:
    tracker = backend.tracker()
    with tracker.track(resource="accounts", source_system="vantage") as sync:
        assert sync.watermark is None
        sync.record(processed=3, created=1, updated=2)
    state = tracker.get_state("accounts")
    assert state is not None
    assert state.last_sync_status == "success"
    assert state.records_synced == 3
    assert state.last_sync_time == sync.started_at
