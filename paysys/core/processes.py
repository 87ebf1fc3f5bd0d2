"""One value per process, for what a forked child must not share with its parent: threads (a
kicker, an event loop, a pool of try threads) do not survive a fork."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


class PerProcess:
    """One value per process, built on first use: a forked child (a prefork worker) builds its
    own, since the parent's threads do not survive the fork."""

    def __init__(self, factory: Callable[[], object]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._value = None

    def get(self):
        with self._lock:
            if self._pid != os.getpid():
                self._pid, self._value = os.getpid(), self._factory()
            return self._value
