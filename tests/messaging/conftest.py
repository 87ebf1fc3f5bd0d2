import pytest

from paysys.messaging import relay
from tests.messaging.helpers import ShipRecorder, handled


@pytest.fixture(autouse=True)
def _forget_handled():
    handled.clear()


@pytest.fixture
def ship(monkeypatch):
    """relay_due's broker hand-off, recorded instead of sent."""
    recorder = ShipRecorder()
    monkeypatch.setattr(relay, "_ship", recorder)
    return recorder
