"""Run code in several threads at the same moment, as concurrent workers or requests would."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connections


def run_at_once(*calls: Callable, timeout: float = 30) -> list:
    """Call each function in its own thread, all released by one barrier. Each thread uses its
    own database connections and closes them. Returns the results in the order of ``calls``;
    raises the first exception a thread raised (so a test sees any error that escaped)."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[index] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    if errors:
        raise errors[0]
    return results
