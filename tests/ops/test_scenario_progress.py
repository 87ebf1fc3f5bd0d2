"""A scenario waiting for the platform to converge says what it waits for as it goes, not only
when it gives up (against a stack with something stuck from before, that was ten silent minutes)."""

import pytest

from paysys.demo import scenarios


def test_a_long_convergence_wait_prints_what_it_waits_for(monkeypatch):
    monkeypatch.setattr(scenarios, "NOTE_EVERY", 0.2)
    lines = []
    scenario = scenarios.Scenario(client=None, stamp="t", say=lines.append)
    monkeypatch.setattr(scenario, "all_completed", lambda: False)  # a notification never lands

    with pytest.raises(TimeoutError, match="not converged 2 s after the fault was removed"):
        scenario.converge(since=scenarios.time.monotonic(), timeout=2.0)

    notes = [line for line in lines if line.startswith("  still waiting")]
    assert len(notes) >= 2
    assert "this scenario's payments not all completed" in notes[0]
