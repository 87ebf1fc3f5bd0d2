"""Kick, then run a pass: the one way a commit has work done soon without waiting for it.

A :class:`Kick` names a pass task. ``request(target)`` after a commit hands the target to a
background thread of this process, so the committing caller never waits on the cache or the
broker (a hung Redis must not hang the bank's notify), and the requests of many commits in the
same few milliseconds become one. That thread sends the task unless one is already pending
(a cache key, cleared by the pass as it starts), so one pass serves many transactions. A kick
is only a hint: a lost one waits for its recovery or beat pass, never fails the caller.

Tasks are sent by name (:func:`send_task`): the code that kicks never imports the tasks that
import it.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable

from celery import current_app
from django.conf import settings
from django.core.cache import cache

from paysys.core.processes import PerProcess

logger = logging.getLogger(__name__)


def send_task(name: str, *, args=(), **options) -> None:
    """Send the task ``name``. A task registered in this process goes through its own
    ``apply_async`` (its options, and ``task_always_eager`` in tests); else by name."""
    task = current_app.tasks.get(name)
    if task is not None:
        task.apply_async(args=list(args), **options)
    else:
        current_app.send_task(name, args=list(args), **options)


class BackgroundKicks:
    """Calls ``send(target)`` from a background thread of this process for each requested
    target, in order; requests while one is pending coalesce."""

    def __init__(self, send: Callable[[str], None], *, name: str) -> None:
        self._send = send
        self._name = name
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: set[str] = set()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = PerProcess(self._start)

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        thread.start()
        return thread

    def submit(self, targets) -> None:
        with self._lock:
            self._pending.update(targets)
            self._idle.clear()
        self._thread.get()
        self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every requested kick was sent (short-lived processes, before they exit)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                targets, self._pending = self._pending, set()
            for target in sorted(targets):
                self._send(target)
            with self._lock:
                if not self._pending:
                    self._idle.set()


class Kick:
    """A coalescing kick of the pass task ``task``: its one argument is the target (none when
    ``with_target`` is false), ``route(target)`` its queue options (default: the task's route).
    The background thread runs ``run_here(target)`` when given (a pass on that thread, which
    falls back to :meth:`send`), else :meth:`send`."""

    def __init__(
        self,
        task: str,
        *,
        key: str,
        ttl_setting: str,
        thread_name: str,
        route: Callable[[str], dict] | None = None,
        with_target: bool = True,
        run_here: Callable[[str], None] | None = None,
    ) -> None:
        self.task = task
        self._key = key
        self._ttl_setting = ttl_setting
        self._route = route
        self._with_target = with_target
        self.background = BackgroundKicks(
            run_here or (lambda target: self.send(target)), name=thread_name
        )
        atexit.register(self.background.flush)

    def key(self, target: str = "") -> str:
        """The cache key that marks a pending kick (the pass clears it as it starts)."""
        return self._key.format(target=target)

    def request(self, *targets: str) -> None:
        """After a commit: have the pass of each target run soon, without waiting for it."""
        self.background.submit(targets or [""])

    def flush(self, timeout: float = 5.0) -> bool:
        return self.background.flush(timeout)

    def send(self, target: str = "") -> None:
        """Send the pass task now, unless one is already pending. Never raises: with the cache
        or the broker down the work waits for its recovery or beat pass."""
        key = self.key(target)
        try:
            if not cache.add(key, 1, timeout=getattr(settings, self._ttl_setting)):
                return
            route = self._route(target) if self._route else {}
            send_task(self.task, args=[target] if self._with_target else [], **route, retry=False)
        except Exception:  # noqa: BLE001 - a hint only: recovery (or beat) runs the pass anyway
            logger.warning(
                "kick of %s(%s) not sent; its recovery pass will run it",
                self.task,
                target,
                exc_info=True,
            )
            try:
                cache.delete(key)
            except Exception:  # noqa: BLE001 - the key expires on its own
                pass

    def run_pass(
        self,
        run: Callable[[], object],
        *,
        target: str = "",
        full: Callable[[object], bool] = lambda _: False,
    ):
        """The pass task's body: clear the kick first (a commit landing while the pass runs kicks
        the next one), run the pass, and kick again at once when ``full(result)`` (more may be
        waiting: continue in a fresh task, not at the next beat)."""
        cache.delete(self.key(target))
        result = run()
        if full(result):
            self.send(target)
        return result
