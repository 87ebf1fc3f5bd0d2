"""The coordinator's try threads: per database alias, up to TCC_TRY_THREADS threads of this
process, each keeping its one connection to that alias between jobs (a process opens at most that
many per alias). Tries run here, and the confirms the coordinator runs at once.

    run_per_alias(fn, work, timeout=)   fn(alias, work[alias]) on a thread of each alias, in
                                        parallel; the answers that came within the timeout

A job that times out keeps its thread until the database answers or the connection's read
timeout fires; jobs queued behind it time out too, which is right: that database does not
answer. Other aliases' jobs never wait for it. A forked child (a prefork worker) starts threads
of its own (``PerProcess``).
"""

from __future__ import annotations

import concurrent.futures
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import connections

from paysys.core.processes import PerProcess

W = TypeVar("W")
R = TypeVar("R")


def run_per_alias(fn: Callable[[str, W], R], work: dict[str, W], *, timeout: float) -> dict[str, R]:
    """``fn(alias, work[alias])`` on a try thread of each alias, and wait at most ``timeout`` for
    all of them (time queued for a free thread included). Returns the answers of the aliases
    that answered in time; one that did not is left out, and its job, if still queued, never
    runs. A job's exception is raised here."""
    deadline = time.monotonic() + timeout
    futures = {alias: _threads.submit(alias, fn, alias, part) for alias, part in work.items()}
    answers = {}
    for alias, future in futures.items():
        try:
            answers[alias] = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            future.cancel()  # still queued: it never runs
    return answers


class TryThreads:
    """This process's try threads, per alias (a fresh one has no thread yet)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools = PerProcess(dict)  # alias -> _AliasThreads, this process's own

    def submit(self, alias: str, fn, *args) -> concurrent.futures.Future:
        pools = self._pools.get()
        with self._lock:
            pool = pools.get(alias)
            if pool is None:
                pool = pools[alias] = _AliasThreads(alias)
        return pool.submit(fn, *args)


class _AliasThreads:
    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a job
        self._queued = 0  # jobs no thread has taken yet

    def submit(self, fn, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._queued += 1
            grow = self._queued > self._idle and self._threads < settings.TCC_TRY_THREADS
            if grow:
                self._threads += 1
        self._jobs.put((future, fn, args))
        if grow:
            threading.Thread(
                target=self._serve, name=f"paysys-tcc-try-{self.alias}", daemon=True
            ).start()
        return future

    def _serve(self) -> None:
        _bound_reads(self.alias)
        while True:
            with self._lock:
                self._idle += 1
            future, fn, args = self._jobs.get()
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                    future.set_exception(exc)


def _bound_reads(alias: str) -> None:
    """This thread's MySQL connection gives up on a silent server after about TCC_TRY_TIMEOUT
    (the client library retries a read up to 3 times), so a hung try frees its thread; and a
    try waits at most half of it for a row lock, so a batch held up by one locked row fails in
    time to be redone op by op (where only that op waits again)."""
    seconds = max(1, math.ceil(settings.TCC_TRY_TIMEOUT))
    connection = connections[alias]
    if connection.vendor == "mysql":
        options = {
            **connection.settings_dict.get("OPTIONS", {}),
            "read_timeout": seconds,
            "write_timeout": seconds,
        }
        options.setdefault(
            "init_command", f"SET SESSION innodb_lock_wait_timeout = {max(1, seconds // 2)}"
        )
        connection.settings_dict = {**connection.settings_dict, "OPTIONS": options}


_threads = TryThreads()
