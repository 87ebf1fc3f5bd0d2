import pytest

from paysys.messaging import kicks, relay
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


@pytest.fixture
def kicked(monkeypatch):
    """Relay kicks, recorded (the aliases asked for) instead of sent."""
    aliases: list[str] = []
    monkeypatch.setattr(kicks, "kick_relay", aliases.append)
    return aliases
