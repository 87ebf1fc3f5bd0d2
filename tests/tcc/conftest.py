from __future__ import annotations

import pytest

from paysys.tcc import phase_two, try_threads
from tests.tcc import participants


@pytest.fixture
def ledgers(django_db_blocker):
    with django_db_blocker.unblock():
        participants.create_ledgers()
    return participants.ledger


@pytest.fixture
def fast_tcc(settings):
    """Short tries and quick resends, so deadlines and recovery are observable within a test."""
    settings.TCC_TRY_TIMEOUT = 1
    settings.TCC_DECISION_GRACE = 1
    settings.TCC_RETRY_SCHEDULE = [1, 1, 1]
    return settings


@pytest.fixture
def fresh_try_threads(monkeypatch):
    """This process's try threads started anew, with no thread yet, so a TCC_TRY_THREADS a test
    sets applies (the threads earlier tests started stay as they are)."""
    monkeypatch.setattr(try_threads, "_threads", try_threads.TryThreads())


@pytest.fixture
def dispatched(monkeypatch) -> list[str]:
    """The participant queues a decision dispatches phase two to, recorded instead of kicked: as
    if the deciding process died right after its decision."""
    queues: list[str] = []
    monkeypatch.setattr(phase_two.PHASE_TWO_PASS.background, "submit", queues.extend)
    return queues
