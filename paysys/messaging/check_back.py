"""Asking a producer whether the transaction behind a PREPARED message committed."""

from __future__ import annotations

import uuid

import requests

from paysys.messaging import registry

VERDICTS = {"COMMITTED": True, "ROLLED_BACK": False, "UNKNOWN": None}


def ask_producer(check_back: str, business_key: str, message_id: uuid.UUID) -> tuple[bool | None, str]:
    """Returns (True: committed | False: never committed | None: undecided, error text)."""
    if check_back.startswith(("http://", "https://")):
        return _ask_url(check_back, business_key, message_id)
    resolve = registry.get_check_back(check_back)
    if resolve is None:
        return None, f"no check-back {check_back!r} is registered"
    try:
        return resolve(business_key), ""
    except Exception as exc:  # noqa: BLE001 - undecided; asked again next pass
        return None, f"{exc.__class__.__name__}: {exc}"[:500]


def _ask_url(url: str, business_key: str, message_id: uuid.UUID) -> tuple[bool | None, str]:
    """POST {"message_id", "business_key"}; the producer answers {"status": COMMITTED|ROLLED_BACK|UNKNOWN}."""
    try:
        response = requests.post(url, json={"message_id": str(message_id), "business_key": business_key}, timeout=5)
        response.raise_for_status()
        status = response.json().get("status")
    except (requests.RequestException, ValueError, AttributeError) as exc:
        return None, f"check-back {url} failed: {exc}"[:500]
    if status not in VERDICTS:
        return None, f"check-back {url} answered {status!r}"
    return VERDICTS[status], ""
