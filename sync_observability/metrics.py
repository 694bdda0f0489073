"""Run metrics of a sync: cost, data volume, peak memory, data quality, tags.

What seed 002 (docs/seeds.md) tracks per ETL run beyond counts.

Recorded with :meth:`RunMetricsMixin.record_metrics`, validated on the way in, and stored by the
tracker in ``sync_history.metadata["metrics"]`` with seed 002's names::

    {
        "total_cost_usd": 8.5,
        "cost_breakdown": {"compute_cost_usd": 6.2, "storage_cost_usd": 1.8},
        "bytes_read": 268435456000,
        "bytes_written": 193273528320,
        "peak_memory_mb": 5120.0,
        "data_quality": {"completeness_score": 0.98, "accuracy_score": 0.94, "overall_score": 0.95},
        "tags": {"environment": "production", "team": "data-engineering"}
    }

Only what was recorded appears. Quality scores are fractions between 0 and 1, as in seed 002
(0.95, not 95). ``storage/reporting/daily_costs.py`` sums cost and volume per day and resource
from there.

Examples:
    .. code-block:: python

        with sync_tracker.track(context) as sync:
            result = run_job()
            sync.record_metrics(
                cost_parts={"compute_cost_usd": 6.2, "storage_cost_usd": 1.8},
                bytes_read=result.bytes_in,
                completeness=0.98,
                tags={"team": "data-engineering"},
            )
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sync_observability.errors import InvalidInputError
from sync_observability.validation import check_count, check_name, check_number, check_text

_V = TypeVar("_V")

MAX_TAG_VALUE_LENGTH = 1000
# record_metrics' quality arguments and the names they are stored under (seed 002's).
QUALITY_SCORES = {
    "completeness": "completeness_score",
    "accuracy": "accuracy_score",
    "overall_quality": "overall_score",
}


def check_score(field: str, value: Any) -> float:
    """A data-quality score: a finite number from 0 to 1 (a fraction, not a percentage)."""
    check_number(field, value, minimum=0)
    if value > 1:
        raise InvalidInputError(field, value, "must be between 0 and 1 (a fraction: 0.95, not 95)")
    return float(value)


class RunMetricsMixin:
    """Cost, volume, memory, quality and tags of one sync, for :class:`~sync_observability.SyncRun`.

    ``record_metrics`` may be called any number of times: a later value of a field replaces the
    earlier one, cost parts and tags are merged by name.
    """

    def _init_run_metrics(self) -> None:
        self._metrics: dict[str, Any] = {}
        self._cost_parts: dict[str, float] = {}
        self._quality: dict[str, float] = {}
        self._tags: dict[str, str] = {}

    def record_metrics(
        self,
        *,
        total_cost_usd: float | None = None,
        cost_parts: Mapping[str, float] | None = None,
        bytes_read: int | None = None,
        bytes_written: int | None = None,
        peak_memory_mb: float | None = None,
        completeness: float | None = None,
        accuracy: float | None = None,
        overall_quality: float | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Record this sync's metrics; arguments left as None are not changed.

        Args:
            total_cost_usd: what the run cost, in US dollars. When never given, the total is the
                sum of ``cost_parts``.
            cost_parts: the cost by part, e.g. ``{"compute_cost_usd": 6.2}``, in US dollars.
            bytes_read: bytes read from the source.
            bytes_written: bytes written to the target.
            peak_memory_mb: the highest memory use, in MB.
            completeness: share of expected values present, from 0 to 1.
            accuracy: share of values that passed accuracy checks, from 0 to 1.
            overall_quality: the overall data-quality score, from 0 to 1.
            tags: free-form labels, string to string (``{"team": "data-engineering"}``).

        Raises:
            InvalidInputError: naming the field and value (not a finite number, negative, a
                score above 1, a non-string tag); nothing is recorded.
        """
        values: dict[str, Any] = {}
        if total_cost_usd is not None:
            values["total_cost_usd"] = float(check_number("total_cost_usd", total_cost_usd))
        for field, count in (("bytes_read", bytes_read), ("bytes_written", bytes_written)):
            if count is not None:
                values[field] = check_count(field, count)
        if peak_memory_mb is not None:
            values["peak_memory_mb"] = float(check_number("peak_memory_mb", peak_memory_mb))
        scores = {
            QUALITY_SCORES[field]: check_score(field, value)
            for field, value in (
                ("completeness", completeness),
                ("accuracy", accuracy),
                ("overall_quality", overall_quality),
            )
            if value is not None
        }
        parts = _check_cost_parts(cost_parts)
        new_tags = _check_tags(tags)
        self._metrics.update(values)
        self._cost_parts.update(parts)
        self._quality.update(scores)
        self._tags.update(new_tags)

    @property
    def run_metrics(self) -> dict[str, Any]:
        """What was recorded, JSON-serializable, in seed 002's layout (see the module docstring)."""
        metrics = dict(self._metrics)
        if self._cost_parts:
            metrics["cost_breakdown"] = dict(self._cost_parts)
            metrics.setdefault("total_cost_usd", sum(self._cost_parts.values()))
        if self._quality:
            metrics["data_quality"] = dict(self._quality)
        if self._tags:
            metrics["tags"] = dict(self._tags)
        return {key: metrics[key] for key in _ORDER if key in metrics}


_ORDER = (
    "total_cost_usd",
    "cost_breakdown",
    "bytes_read",
    "bytes_written",
    "peak_memory_mb",
    "data_quality",
    "tags",
)


def _check_cost_parts(parts: Any) -> dict[str, float]:
    return _check_mapping(
        "cost_parts", parts, "name to US dollars", lambda n, v: float(check_number(n, v))
    )


def _check_tags(tags: Any) -> dict[str, str]:
    return _check_mapping(
        "tags", tags, "string to string", lambda n, v: check_text(n, v, MAX_TAG_VALUE_LENGTH)
    )


def _check_mapping(
    name: str, value: Any, of: str, check: Callable[[str, Any], _V]
) -> dict[str, _V]:
    """``value`` (None: empty) as a dict of names to what ``check(f"{name}[key]", item)`` gives."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(name, value, f"must be a mapping of {of}")
    checked = {}
    for key, item in value.items():
        check_name(f"{name} key", key)
        checked[key] = check(f"{name}[{key!r}]", item)
    return checked
