"""Participants registered by action name. The initiator names an action (``"funds.credit"``)
and never imports the participant's code (docs/architecture.md, "Dependency rules").

An op is either **single**, ``fn(payload, *, xid)``, or **batched**, ``fn(ops: list[Op])``
marked with :func:`many`. The framework runs a batched op over many branches at once (one
transaction, one barrier insert, set-based SQL in the participant); a single op is run once per
branch. Either way the op runs inside ``atomic(using=alias)`` with the barrier rows, and:

* a confirm may be ``None``: the try's effect is final as it stands (the agreement's count of a
  payment); phase two then marks the branch confirmed without a transaction of the participant
  (no barrier row: once the decision is CONFIRM no cancel can follow, and nothing runs twice);

* a batched op applies **all** of its ops or raises; the framework then rolls the batch back and
  runs each op again alone, as ``fn([op])``, so per-op outcomes (one refused try among many)
  come from that one-op call, which must behave exactly as a single op would;
* the ops of one call belong to distinct branches; rows are locked in a fixed order (sorted by
  their key), so two concurrent batches on shared rows cannot deadlock (if InnoDB still picks a
  victim, the one-by-one redo absorbs it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

Op = Callable[
    ..., None
]  # fn(payload: dict, *, xid: str) -> None, or @many fn(ops: list[BranchOp]) -> None


@dataclass(frozen=True)
class BranchOp:
    """One branch's op as a batched op receives it."""

    xid: str
    payload: dict


def many(fn: Callable[[list[BranchOp]], None]) -> Callable[[list[BranchOp]], None]:
    """Mark ``fn(ops: list[BranchOp])`` as a batched op (see the module docstring)."""
    fn.tcc_many = True
    return fn


def is_many(fn) -> bool:
    return getattr(fn, "tcc_many", False)


@dataclass(frozen=True)
class Participant:
    action: str
    alias: str  # every op runs in atomic(using=alias) with its barrier row
    queue: str  # phase two runs as Celery tasks on this queue
    try_: Op
    confirm: Op | None  # None: nothing to confirm (see the module docstring)
    cancel: Op

    def op(self, name: str) -> Op | None:
        return {"try": self.try_, "confirm": self.confirm, "cancel": self.cancel}[name]

    def has_nothing_to(self, name: str) -> bool:
        """True when op ``name`` is declared empty: done without a transaction or barrier row."""
        return self.op(name) is None

    def apply(self, name: str, ops: list[BranchOp]) -> None:
        """Run op ``name`` over ``ops`` (in the caller's transaction): one call of a batched op,
        else one call per op."""
        fn = self.op(name)
        if fn is None:
            return
        if is_many(fn):
            fn(ops)
        else:
            for entry in ops:
                fn(entry.payload, xid=entry.xid)


_participants: dict[str, Participant] = {}


def participant(
    action: str, *, alias: str, queue: str, try_: Op, confirm: Op | None, cancel: Op
) -> Participant:
    """Register try / confirm / cancel of ``action``, called at import (AppConfig.ready)."""
    if alias not in settings.DATABASES:
        raise ValueError(f"participant {action!r}: unknown database alias {alias!r}")
    spec = Participant(action, alias, queue, try_, confirm, cancel)
    known = _participants.get(action)
    if known is not None and (known.alias, known.queue, known.try_.__qualname__) != (
        alias,
        queue,
        try_.__qualname__,
    ):
        raise ValueError(f"TCC action {action!r} is already registered differently")
    _participants[action] = spec
    return spec


_transaction_names: set[str] = set()


def transaction_names(*names: str) -> list[str]:
    """Declare the names of the global transactions a domain runs (in its AppConfig.ready, like
    its participants), and return every name declared: /metrics reports each one, with 0 while
    none is open or flagged, so a dashboard's ``sum()`` and ``absent()`` see it on an idle system."""
    _transaction_names.update(names)
    return sorted(_transaction_names)


class UnknownParticipant(LookupError):
    pass


def get_participant(action: str) -> Participant:
    try:
        return _participants[action]
    except KeyError:
        raise UnknownParticipant(
            f"no TCC participant {action!r} is registered in this process"
        ) from None


def actions_of_queue(queue: str) -> list[str]:
    return sorted(action for action, spec in _participants.items() if spec.queue == queue)
