"""Notify records: creating them from events, and what a human (admin, API, commands) does to them.

The delivery engine (claiming due records, sending, recording attempts) is
``notifications.delivery``; everything here is a short database write in the ``notifications``
alias, followed by a kick so the change is delivered at once rather than at the next beat.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.fields import DateTimeField

from notifications.models import Endpoint, MerchantSchedule, Notification
from paysys.contracts import OrderPaid, RefundFinished
from paysys.core.errors import Conflict, InvalidInput
from paysys.core.kicks import Kick
from paysys.core.sql import insert_objects, retry_deadlock_victim

logger = logging.getLogger(__name__)

ALIAS = "notifications"
Status = Notification.Status
# a time in a body, exactly as the API writes it (ISO 8601, UTC as "Z"): a merchant comparing the
# webhook's paid_at with GET /api/v1/orders/{no} sees the same string
api_datetime = DateTimeField().to_representation


def new_webhook_id() -> str:
    # Standard Webhooks: unique per message, the same on every retry, no "."
    return f"msg_{uuid.uuid4().hex}"


# --- schedule ------------------------------------------------------------------------------


def _valid_schedule(schedule) -> list[int]:
    if (
        not isinstance(schedule, list)
        or not 1 <= len(schedule) <= 30
        or not all(
            isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 7 * 86400 for w in schedule
        )
    ):
        raise InvalidInput(
            "retry_schedule must be a list of 1-30 waits in whole seconds, each 1 s to 7 days",
            fields={"retry_schedule": "list of 1-30 integers between 1 and 604800"},
        )
    return schedule


def retry_schedules(merchant_ids) -> dict[int, list[int]]:
    """Waits after attempt 1, 2, ... for each merchant: its own schedule, else the default."""
    ids = set(merchant_ids)
    own = dict(
        MerchantSchedule.objects.using(ALIAS)
        .filter(merchant_id__in=ids)
        .values_list("merchant_id", "retry_schedule")
    )
    default = list(settings.NOTIFY_RETRY_SCHEDULE)
    return {merchant_id: own.get(merchant_id) or default for merchant_id in ids}


def merchant_schedule_set(
    *, merchant_id: int, retry_schedule: list[int] | None
) -> MerchantSchedule | None:
    """Give a merchant its own retry schedule, or back to the default with ``None``. Applies from
    the next failed attempt of each record (a wait already scheduled stays)."""
    if retry_schedule is None:
        MerchantSchedule.objects.using(ALIAS).filter(merchant_id=merchant_id).delete()
        return None
    schedule, _ = MerchantSchedule.objects.using(ALIAS).update_or_create(
        merchant_id=merchant_id, defaults={"retry_schedule": _valid_schedule(retry_schedule)}
    )
    return schedule


# --- endpoints -----------------------------------------------------------------------------


def endpoint_get_or_create(*, merchant_id: int, url: str) -> Endpoint:
    """The endpoint row of (merchant, url). Two consumers creating it at once: the unique
    constraint decides, the loser reads the winner's row."""
    endpoint = Endpoint.objects.using(ALIAS).filter(merchant_id=merchant_id, url=url).first()
    if endpoint:
        return endpoint
    try:
        with transaction.atomic(using=ALIAS):
            return Endpoint.objects.using(ALIAS).create(merchant_id=merchant_id, url=url)
    except IntegrityError:
        return (
            Endpoint.objects.using(ALIAS).select_for_update().get(merchant_id=merchant_id, url=url)
        )


def endpoint_disable(endpoint: Endpoint, *, reason: str) -> Endpoint:
    """Stop sending to the endpoint until it is enabled again; its due records fail with the
    reason when their turn comes (no request is made)."""
    reason = (reason or "disabled by an operator")[:255]
    Endpoint.objects.using(ALIAS).filter(pk=endpoint.pk, disabled_at__isnull=True).update(
        disabled_at=timezone.now(), disabled_reason=reason
    )
    endpoint.refresh_from_db(using=ALIAS)
    return endpoint


def endpoint_enable(endpoint: Endpoint, *, recover: bool = True) -> int:
    """Send to the endpoint again. With ``recover`` (the default), the records that failed while
    it was disabled are resent (same webhook-id, schedule from the start). Returns how many."""
    disabled_at = endpoint.disabled_at
    Endpoint.objects.using(ALIAS).filter(pk=endpoint.pk).update(
        disabled_at=None, disabled_reason="", consecutive_failures=0
    )
    endpoint.refresh_from_db(using=ALIAS)
    if not recover or disabled_at is None:
        return 0
    return _resend(
        Notification.objects.using(ALIAS).filter(
            endpoint=endpoint, status=Status.FAILED, updated_at__gte=disabled_at
        )
    )


# --- records -------------------------------------------------------------------------------


def order_paid_body(event: OrderPaid, *, timestamp: datetime) -> str:
    """The request body, fixed once: every attempt sends (and signs) exactly these bytes."""
    return json.dumps(
        {
            "type": OrderPaid.TOPIC,
            "timestamp": api_datetime(timestamp),
            "data": {
                "merchant_order_no": event.merchant_order_no,
                "out_trade_no": event.out_trade_no,
                "amount": event.amount,
                "currency": event.currency,
                "fee": event.fee,
                "status": "SUCCESS",
                "paid_at": api_datetime(parse_datetime(event.paid_at)),
                "method": event.method,
                "points_awarded": event.points_awarded,
            },
        },
        separators=(",", ":"),
    )


def notification_create_for_order_paid(
    event: OrderPaid, *, message_id: uuid.UUID | None = None
) -> Notification:
    """One record per (order, event type), due now. A duplicate event returns the existing record
    unchanged (same webhook-id, no second delivery). Runs inside the consumer's transaction."""
    try:
        with transaction.atomic(using=ALIAS):
            created = notifications_create_for_orders_paid([(event, message_id)])
    except IntegrityError:
        created = []  # a concurrent consumer of a duplicate event won
    if created:
        return created[0]
    # a locking read sees a concurrent winner's committed row
    existing = (
        Notification.objects.using(ALIAS)
        .select_for_update()
        .filter(order_id=event.order_id, event_type=OrderPaid.TOPIC)
        .first()
    )
    if existing is None:
        raise IntegrityError(
            f"no notification for order {event.order_id} was created, and none exists"
        )
    return existing


def notifications_create_for_orders_paid(
    events: list[tuple[OrderPaid, uuid.UUID | None]],
) -> list[Notification]:
    """:func:`notification_create_for_order_paid` for a batch of ``(event, message_id)``: one
    read of the records that exist, one of the endpoints, one INSERT for the new records, one
    kick. A record created meanwhile by a concurrent consumer raises IntegrityError (the
    consumer's savepoint rolls the batch back and each event goes again alone). Runs inside the
    consumer's transaction."""
    existing = set(
        Notification.objects.using(ALIAS)
        .filter(order_id__in=[event.order_id for event, _ in events], event_type=OrderPaid.TOPIC)
        .values_list("order_id", flat=True)
    )
    events = [(event, message_id) for event, message_id in events if event.order_id not in existing]
    if not events:
        return []
    merchant_urls: dict[int, str] = {}  # an order without its own notify_url: the merchant's
    urls = []
    for event, _ in events:
        if not event.notify_url and event.merchant_id not in merchant_urls:
            merchant_urls[event.merchant_id] = _merchant_notify_url(event.merchant_id)
        urls.append(event.notify_url or merchant_urls[event.merchant_id])
    endpoints = {
        (endpoint.merchant_id, endpoint.url): endpoint
        for endpoint in Endpoint.objects.using(ALIAS).filter(
            merchant_id__in={e.merchant_id for e, _ in events}, url__in=set(urls)
        )
    }
    now = timezone.now()
    records = []
    for (event, message_id), url in zip(events, urls, strict=False):
        endpoint = endpoints.get((event.merchant_id, url))
        if endpoint is None:  # a merchant's first notification to this URL
            endpoint = endpoints[event.merchant_id, url] = endpoint_get_or_create(
                merchant_id=event.merchant_id, url=url
            )
        records.append(
            Notification(
                webhook_id=new_webhook_id(),
                merchant_id=event.merchant_id,
                order_id=event.order_id,
                out_trade_no=event.out_trade_no,
                merchant_order_no=event.merchant_order_no,
                event_type=OrderPaid.TOPIC,
                endpoint=endpoint,
                url=url,
                body=order_paid_body(event, timestamp=now),
                next_attempt_at=now,
                message_id=message_id,
            )
        )
    if (
        len(records) == 1
    ):  # notification_create_for_order_paid: the record, with its id, is the answer
        Notification.objects.using(ALIAS).bulk_create(records)
    else:  # a consumer's batch: one plain INSERT, no ids needed
        insert_objects(ALIAS, records)
    transaction.on_commit(request_delivery, using=ALIAS)
    return records


def refund_event_type(event: RefundFinished) -> str:
    """A refund's record key: ``refund.succeeded:<refund_no>`` (or ``refund.failed:…``): one per
    refund, and an order may have several (records are unique per order and event type). The
    body's ``type`` is ``refund.succeeded`` / ``refund.failed``."""
    return f"refund.{event.status.lower()}:{event.refund_no}"


def refund_body(event: RefundFinished, *, timestamp: datetime) -> str:
    return json.dumps(
        {
            "type": f"refund.{event.status.lower()}",
            "timestamp": api_datetime(timestamp),
            "data": {
                "refund_no": event.refund_no,
                "merchant_refund_no": event.merchant_refund_no,
                "merchant_order_no": event.merchant_order_no,
                "out_trade_no": event.out_trade_no,
                "amount": event.amount,
                "currency": event.currency,
                "status": event.status,
                "reason": event.reason,
                "failure_reason": event.failure_reason,
                "method": event.method,
                "finished_at": api_datetime(parse_datetime(event.finished_at))
                if event.finished_at
                else None,
            },
        },
        separators=(",", ":"),
    )


def notification_create_for_refund(
    event: RefundFinished, *, message_id: uuid.UUID | None = None
) -> Notification:
    """One record per refund, due now, sent like ``order.paid``'s (same signing, schedule, API).
    A duplicate event returns the existing record. Runs inside the consumer's transaction."""
    event_type = refund_event_type(event)
    existing = (
        Notification.objects.using(ALIAS)
        .filter(order_id=event.order_id, event_type=event_type)
        .first()
    )
    if existing is not None:
        return existing
    url = event.notify_url or _merchant_notify_url(event.merchant_id)
    now = timezone.now()
    record = Notification.objects.using(ALIAS).create(
        webhook_id=new_webhook_id(),
        merchant_id=event.merchant_id,
        order_id=event.order_id,
        out_trade_no=event.out_trade_no,
        merchant_order_no=event.merchant_order_no,
        event_type=event_type,
        endpoint=endpoint_get_or_create(merchant_id=event.merchant_id, url=url),
        url=url,
        body=refund_body(event, timestamp=now),
        next_attempt_at=now,
        message_id=message_id,
    )
    transaction.on_commit(request_delivery, using=ALIAS)
    return record


def _merchant_notify_url(merchant_id: int) -> str:
    from paysys.core.models import Merchant  # core identity: every app may read it

    return Merchant.objects.only("notify_url").get(pk=merchant_id).notify_url


def notification_resend(notification: Notification) -> Notification:
    """Deliver again now, with the same webhook-id and body; the schedule starts over. Works in
    any state (a merchant may ask for a SUCCEEDED one again). Its endpoint must be enabled."""
    if notification.endpoint.is_disabled:
        raise Conflict(
            f"the endpoint {notification.url} is disabled ({notification.endpoint.disabled_reason}); enable it first",
            code="endpoint_disabled",
        )
    _resend(Notification.objects.using(ALIAS).filter(pk=notification.pk))
    notification.refresh_from_db(using=ALIAS)
    return notification


def notifications_recover_failed(*, merchant_id: int, since: datetime) -> int:
    """Resend every FAILED record of the merchant created since ``since`` whose endpoint is
    enabled (Svix's "recover"). Returns how many were made due."""
    return _resend(
        Notification.objects.using(ALIAS).filter(
            merchant_id=merchant_id,
            status=Status.FAILED,
            created_at__gte=since,
            endpoint__disabled_at__isnull=True,
        )
    )


def _resend(records) -> int:
    # PENDING again: no longer "succeeded" (the earlier success stays in its attempt rows). The
    # delivery pass's claim locks the same rows from the other end (index, then row): a resend
    # that loses the deadlock is run again rather than answered 503
    now = timezone.now()
    updated = retry_deadlock_victim(
        ALIAS,
        lambda: records.transition(
            Status.PENDING, step=0, next_attempt_at=now, updated_at=now, succeeded_at=None
        ),
    )
    if updated:
        request_delivery()
    return updated


# --- kick ----------------------------------------------------------------------------------


# a delivery pass, kicked from a background thread: the caller (a consumer, the admin) never
# waits on the cache or the broker; a lost kick only waits for the next beat
DELIVERY = Kick(
    "notifications.deliver_due",
    key="notifications:kick",
    ttl_setting="NOTIFY_KICK_TTL",
    with_target=False,
    thread_name="paysys-notify-kicker",
)


def request_delivery() -> None:
    """Have a delivery pass run soon. Kicks coalesce; a lost kick only waits for the next beat."""
    DELIVERY.request()
