"""One INFO line per business step of a payment (order paid, merchant credited, points awarded,
voucher booked, merchant notified), each with its out_trade_no: what an operator greps for.

Logged once the step's transaction has committed: a step rolled back (a batch redone op by op,
a failed try) is no step, and a redelivery the inbox or barrier drops logs nothing again.
"""

from __future__ import annotations

import logging

from django.db import transaction


def log_steps(logger: logging.Logger, message: str, rows: list[tuple], *, using: str) -> None:
    """``logger.info(message, *row)`` for each row after ``using``'s transaction commits (at once
    outside one)."""

    def emit() -> None:
        for row in rows:
            logger.info(message, *row)

    if rows:
        transaction.on_commit(emit, using=using)
