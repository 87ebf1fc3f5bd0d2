"""Participants registered by action name. The initiator names an action (``"funds.credit"``)
and never imports the participant's code (DESIGN.md, "Dependency rules")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from django.conf import settings

Op = Callable[..., None]  # fn(payload: dict, *, xid: str) -> None


@dataclass(frozen=True)
class Participant:
    action: str
    alias: str  # every op runs in atomic(using=alias) with its barrier row
    queue: str  # phase two runs as Celery tasks on this queue
    try_: Op
    confirm: Op
    cancel: Op

    def op(self, name: str) -> Op:
        return {"try": self.try_, "confirm": self.confirm, "cancel": self.cancel}[name]


_participants: dict[str, Participant] = {}


def participant(action: str, *, alias: str, queue: str, try_: Op, confirm: Op, cancel: Op) -> Participant:
    """Register try / confirm / cancel of ``action``, called at import (AppConfig.ready)."""
    if alias not in settings.DATABASES:
        raise ValueError(f"participant {action!r}: unknown database alias {alias!r}")
    spec = Participant(action, alias, queue, try_, confirm, cancel)
    known = _participants.get(action)
    if known is not None and (known.alias, known.queue, known.try_.__qualname__) != (alias, queue, try_.__qualname__):
        raise ValueError(f"TCC action {action!r} is already registered differently")
    _participants[action] = spec
    return spec


class UnknownParticipant(LookupError):
    pass


def get_participant(action: str) -> Participant:
    try:
        return _participants[action]
    except KeyError:
        raise UnknownParticipant(f"no TCC participant {action!r} is registered in this process") from None


def actions_of_queue(queue: str) -> list[str]:
    return sorted(action for action, spec in _participants.items() if spec.queue == queue)


def unregister(action: str) -> None:
    """For tests that register throwaway participants."""
    _participants.pop(action, None)
