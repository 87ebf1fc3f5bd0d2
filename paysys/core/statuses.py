"""The one way a status changes, for every model that has one.

A model declares its legal moves in ``TRANSITIONS`` (``{old: {new, ...}}``) and uses
:class:`StatusQuerySet` as its manager. Every status change is then ``.transition(new, ...)``:
one UPDATE guarded by ``WHERE status IN (the states allowed to move to new)``, returning the
rows it moved, so two concurrent movers cannot both make the same move and an illegal one moves
nothing. A plain ``update(status=...)`` raises. Searching for ``.transition(`` lists every
status change in the system (``tests/core/test_statuses.py`` keeps it so).
"""

from __future__ import annotations

from django.db import models

from paysys.core.errors import Conflict


class IllegalTransition(Conflict):
    code = "illegal_transition"


def sources_of(model, new: str) -> list[str]:
    """The states a row of ``model`` may move to ``new`` from."""
    return [old for old, targets in model.TRANSITIONS.items() if new in targets]


def check_transition(model, current: str, new: str) -> None:
    """Raise :class:`IllegalTransition` unless ``model.TRANSITIONS`` allows ``current`` -> ``new``."""
    if new not in model.TRANSITIONS.get(current, ()):
        raise IllegalTransition(f"{model._meta.verbose_name} cannot move from {current} to {new}")


class StatusQuerySet(models.QuerySet):
    """Every status change of the model goes through :meth:`transition`. The status column is
    ``status`` unless the model names another in ``STATUS_FIELD``."""

    def transition(self, new: str, **changes) -> int:
        """Move the rows that may legally move to ``new``, in one UPDATE conditional on their
        current status; rows in any other state stay as they are. Returns rows moved."""
        field = getattr(self.model, "STATUS_FIELD", "status")
        movable = self.filter(**{f"{field}__in": sources_of(self.model, new)})
        return super(StatusQuerySet, movable).update(**{field: new}, **changes)

    def transition_locked(self, current: dict, new: str, **changes) -> int:
        """:meth:`transition` of rows this transaction has locked and read (``current``: primary
        key -> the status read under the lock): each move is checked here, and the UPDATE names
        the rows by primary key alone. With the rows locked a status predicate guards nothing,
        and it can cost a deadlock: the database may then walk an index on the status through
        rows other transactions hold, waiting on them while they wait on these (MariaDB does so
        when few rows are in that status). Raises IllegalTransition, moving nothing."""
        field = getattr(self.model, "STATUS_FIELD", "status")
        for status in set(current.values()):
            check_transition(self.model, status, new)
        rows = self.filter(pk__in=list(current))
        return super(StatusQuerySet, rows).update(**{field: new}, **changes)

    def update(self, **changes) -> int:
        if getattr(self.model, "STATUS_FIELD", "status") in changes:  # a programming error
            raise TypeError(
                f"a {self.model._meta.verbose_name}'s status changes only through transition()"
            )
        return super().update(**changes)
