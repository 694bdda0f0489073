"""Worker processes of the multi-process tests: started together, always reaped."""

from __future__ import annotations

import queue
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def workers_running(processes: Sequence[Any], results: Any) -> Iterator[None]:
    """Start ``processes``; on the way out wait for each (one still alive after 30 s is killed)
    and close the ``results`` queue. A worker that did not report in time fails the test."""
    for process in processes:
        process.start()
    try:
        yield
    except queue.Empty:
        pytest.fail("a worker process did not report in time")
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
        results.close()
        results.join_thread()
