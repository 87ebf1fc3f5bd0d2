"""Errors that belong to the domain, raised by services, selectors and models of every app.

They say what went wrong in business terms; the API layer alone (``paysys.api.exceptions``)
maps each class to an HTTP status, so commands and workers never carry HTTP notions.
"""

from __future__ import annotations


class DomainError(Exception):
    code = "bad_request"

    def __init__(self, message: str, *, fields: dict | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields
        if code:
            self.code = code


class InvalidInput(DomainError):
    """The request itself is wrong (a value out of range, an unknown reference)."""

    code = "invalid"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """The request is valid but the current state does not allow it."""

    code = "conflict"


class Forbidden(DomainError):
    code = "forbidden"


class InsufficientFunds(DomainError):
    code = "insufficient_funds"


class LimitReached(DomainError):
    """A quota of the caller is used up (e.g. open orders per merchant); retry after some are done."""

    code = "limit_reached"


class Unavailable(DomainError):
    """A service or database needed for the operation does not answer; retrying later may work."""

    code = "service_unavailable"
