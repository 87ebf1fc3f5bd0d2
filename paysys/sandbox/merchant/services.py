"""The merchant simulator's behaviour: set-up, receiving a notification, and what it recorded.

Receiving (:func:`notification_receive`), for every request, whatever it carries:

1. find the merchant: the one in the path, or on the plain path the set-up merchant whose secret
   verifies the signature (a shared demo receiver: the notification itself names no merchant);
2. verify with the ``standardwebhooks`` library (a verifier nobody here wrote);
3. misbehave if told to (gone, hang, fail the next N), else answer 400 to what did not verify;
4. process a verified ``webhook-id`` once (a unique constraint; later copies only count), answer
   200 (late, with ``delay_ms``), and record the request with its verdict and answer.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from paysys.core.errors import InvalidInput, NotFound
from paysys.sandbox.merchant.models import MerchantDelivery, MerchantEndpoint, MerchantNotification

ALIAS = "sandbox"
# how many set-up merchants the plain path tries, newest first (an HMAC each: microseconds)
PLAIN_PATH_CANDIDATES = 200

# the demo merchant's own configuration (``make run`` writes it; a real merchant keeps its
# credentials in a file just so): the plain path sets that merchant up from it on first need
DEMO_MERCHANT_FILE = "demo-merchant.json"

# option -> (kind, low, high); what a control request may set
OPTIONS = {
    "fail_next": (int, 0, 10_000),
    "fail_status": (int, 300, 599),
    "retry_after": (int, 0, 86_400),  # null clears it
    "hang_seconds": (int, 0, 600),
    "delay_ms": (int, 0, 600_000),
    "gone": (bool, None, None),
}
WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


@dataclass
class Reply:
    """What the view answers, after ``wait`` seconds (hang and slow behaviours)."""

    status: int
    body: dict
    headers: dict = field(default_factory=dict)
    wait: float = 0.0


# --- set-up ------------------------------------------------------------------------------


def _check_secret(secret) -> str | None:
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        return "a Standard Webhooks secret: whsec_ + base64"
    try:
        if not base64.b64decode(secret[len("whsec_") :], validate=True):
            return "the secret is empty"
    except (binascii.Error, ValueError):
        return "whsec_ must be followed by base64"
    return None


def endpoint_options_parse(data, *, creating: bool) -> dict:
    """A control request's JSON body -> the changes to make; bad values raise InvalidInput."""
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object", code="invalid")
    fields = {name: "unknown option" for name in set(data) - set(OPTIONS) - {"webhook_secret"}}
    for name, (kind, low, high) in OPTIONS.items():
        if name not in data or (name == "retry_after" and data[name] is None):
            continue
        value = data[name]
        if kind is bool:
            if not isinstance(value, bool):
                fields[name] = "true or false"
        elif isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            fields[name] = f"an integer from {low} to {high}"
    if "webhook_secret" in data:
        problem = _check_secret(data["webhook_secret"])
        if problem:
            fields["webhook_secret"] = problem
    elif creating:
        fields["webhook_secret"] = "required to set up a merchant: the secret paysys gave it"
    if fields:
        raise InvalidInput("invalid merchant simulator options", code="invalid", fields=fields)
    return dict(data)


def endpoint_configure(*, merchant_id: int, data) -> MerchantEndpoint:
    """Set up the merchant's receiver (its secret is required the first time) or change how it
    behaves; only the options given change. Two first set-ups at once: the loser updates."""
    try:
        return _endpoint_configure(merchant_id, data)
    except IntegrityError:
        return _endpoint_configure(merchant_id, data)


def _endpoint_configure(merchant_id: int, data) -> MerchantEndpoint:
    with transaction.atomic(using=ALIAS):
        endpoint = (
            MerchantEndpoint.objects.select_for_update().filter(merchant_id=merchant_id).first()
        )
        changes = endpoint_options_parse(data, creating=endpoint is None)
        if endpoint is None:
            return MerchantEndpoint.objects.create(merchant_id=merchant_id, **changes)
        for name, value in changes.items():
            setattr(endpoint, name, value)
        endpoint.save()
        return endpoint


def endpoint_from_demo_file() -> MerchantEndpoint | None:
    """Set up the demo merchant from its configuration file, if there is one and it is not set up
    yet; None otherwise. (Its API key in the same file is not the simulator's business.)"""
    try:
        config = json.loads((settings.VAR_DIR / DEMO_MERCHANT_FILE).read_text())
        merchant_id, secret = int(config["merchant_id"]), config["webhook_secret"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _check_secret(secret) or MerchantEndpoint.objects.filter(merchant_id=merchant_id).exists():
        return None
    try:
        with transaction.atomic(using=ALIAS):
            return MerchantEndpoint.objects.create(merchant_id=merchant_id, webhook_secret=secret)
    except IntegrityError:
        return None  # set up meanwhile by a concurrent request: it was a candidate there


def endpoint_get(*, merchant_id: int) -> MerchantEndpoint:
    endpoint = MerchantEndpoint.objects.filter(merchant_id=merchant_id).first()
    if endpoint is None:
        raise NotFound(f"merchant {merchant_id} is not set up in the merchant simulator")
    return endpoint


def endpoint_document(endpoint: MerchantEndpoint) -> dict:
    """The endpoint's state for the control API (never its secret)."""
    return {
        "merchant_id": endpoint.merchant_id,
        **{name: getattr(endpoint, name) for name in OPTIONS},
        "received": endpoint.notifications.count(),
        "deliveries": endpoint.deliveries.count(),
    }


def deliveries_list(*, merchant_id: int, limit: int = 100) -> list[MerchantDelivery]:
    """What reached the merchant, newest first (the demo and the tests read this)."""
    endpoint = endpoint_get(merchant_id=merchant_id)
    return list(endpoint.deliveries.select_related("notification")[:limit])


def delivery_document(delivery: MerchantDelivery) -> dict:
    notification = delivery.notification
    return {
        "id": delivery.pk,
        "webhook_id": delivery.webhook_id,
        "verified": delivery.verified,
        "error": delivery.error,
        "duplicate": delivery.duplicate,
        "behaviour": delivery.behaviour,
        "status_code": delivery.status_code,
        "received_at": delivery.received_at.isoformat(),
        "headers": delivery.headers,
        "body": delivery.body,
        "payload": notification.payload if notification and not delivery.duplicate else None,
        "out_trade_no": notification.out_trade_no if notification else "",
    }


# --- receiving ---------------------------------------------------------------------------


def verify(secret: str, body: str, headers: dict) -> tuple[dict | None, str]:
    """(payload, "") when the standardwebhooks verifier accepts the request, else (None, why)."""
    try:
        payload = Webhook(secret).verify(body, headers)
    except WebhookVerificationError as exc:
        return None, str(exc)
    except json.JSONDecodeError:
        return None, "signed, but the body is not JSON"
    except (ValueError, binascii.Error) as exc:  # the library's own parsing of a malformed header
        return None, f"malformed signature header ({exc.__class__.__name__})"
    if not isinstance(payload, dict):
        return None, "signed, but the body is not a JSON object"
    return payload, ""


def notification_receive(
    *, merchant_id: int | None, path: str, headers: dict, body: bytes
) -> Reply:
    now = timezone.now()
    headers = {name.lower(): value for name, value in headers.items()}
    try:
        text, decode_error = body.decode("utf-8"), ""
    except UnicodeDecodeError:
        text, decode_error = body.decode("utf-8", "replace"), "the body is not UTF-8"
    webhook_id = str(headers.get("webhook-id", ""))[:128]

    endpoint, payload, error = None, None, decode_error
    if merchant_id is not None:
        endpoint = MerchantEndpoint.objects.filter(merchant_id=merchant_id).first()
        if endpoint is None:
            error = (
                f"no merchant {merchant_id} is set up in the simulator: set it up first with "
                f"POST /sandbox/merchant/{merchant_id} (docs/api.md)"
            )
        elif not decode_error:
            payload, error = verify(endpoint.webhook_secret, text, headers)
    elif not decode_error:
        candidates = list(MerchantEndpoint.objects.order_by("-id")[:PLAIN_PATH_CANDIDATES])
        error = (
            "no merchant is set up in the simulator: set one up first with "
            "POST /sandbox/merchant/<merchant id> (docs/api.md)"
        )
        for candidate in _then_the_demo_merchant(candidates):
            payload, reason = verify(candidate.webhook_secret, text, headers)
            if payload is not None:
                endpoint, error = candidate, ""
                break
            error = (
                f"no set-up merchant's secret verifies it ({reason}): set the merchant up first "
                "with POST /sandbox/merchant/<merchant id> (docs/api.md)"
            )

    def record(
        status: int, behaviour: str = "", notification=None, duplicate: bool = False
    ) -> None:
        MerchantDelivery.objects.using(ALIAS).create(
            endpoint=endpoint,
            notification=notification,
            path=path[:256],
            webhook_id=webhook_id,
            headers=headers,
            body=text,
            verified=payload is not None,
            error=error[:256],
            duplicate=duplicate,
            behaviour=behaviour,
            status_code=status,
            received_at=now,
        )

    if endpoint is None:
        status = 404 if merchant_id is not None else 400
        record(status)
        return Reply(
            status,
            {"error": {"code": "not_verified" if status == 400 else "not_found", "message": error}},
        )
    if endpoint.gone:
        record(410, "gone")
        return Reply(
            410, {"error": {"code": "gone", "message": "this endpoint is gone (simulator: gone)"}}
        )
    if endpoint.hang_seconds:
        record(504, "hang")
        return Reply(
            504,
            {"error": {"code": "hang", "message": "held (simulator: hang)"}},
            wait=endpoint.hang_seconds,
        )
    if MerchantEndpoint.objects.filter(pk=endpoint.pk, fail_next__gt=0).update(
        fail_next=F("fail_next") - 1
    ):
        record(endpoint.fail_status, "fail")
        extra = {} if endpoint.retry_after is None else {"Retry-After": str(endpoint.retry_after)}
        return Reply(
            endpoint.fail_status,
            {"error": {"code": "fail", "message": "told to fail"}},
            headers=extra,
        )
    if payload is None:
        record(400)
        return Reply(400, {"error": {"code": "not_verified", "message": error}})

    behaviour = "slow" if endpoint.delay_ms else ""
    notification, duplicate = _process_once(endpoint, webhook_id, payload, now)
    record(200, behaviour, notification, duplicate)
    return Reply(200, {"received": True, "duplicate": duplicate}, wait=endpoint.delay_ms / 1000)


def _then_the_demo_merchant(candidates: list[MerchantEndpoint]):
    """The set-up merchants, then (only when none verified, so read rarely) the demo merchant
    from its configuration file if it is not set up yet."""
    yield from candidates
    demo = endpoint_from_demo_file()
    if demo is not None:
        yield demo


def _process_once(
    endpoint: MerchantEndpoint, webhook_id: str, payload: dict, now
) -> tuple[MerchantNotification, bool]:
    """The merchant's business handling, once per webhook-id: insert, and on the unique
    constraint count the copy instead (two copies at once: exactly one inserts)."""
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    try:
        with transaction.atomic(using=ALIAS):
            notification = MerchantNotification.objects.create(
                endpoint=endpoint,
                webhook_id=webhook_id,
                type=str(payload.get("type", ""))[:64],
                out_trade_no=str(data.get("out_trade_no", ""))[:64],
                merchant_order_no=str(data.get("merchant_order_no", ""))[:64],
                payload=payload,
                received_at=now,
            )
        return notification, False
    except IntegrityError:
        MerchantNotification.objects.filter(endpoint=endpoint, webhook_id=webhook_id).update(
            deliveries=F("deliveries") + 1
        )
        return MerchantNotification.objects.get(endpoint=endpoint, webhook_id=webhook_id), True
