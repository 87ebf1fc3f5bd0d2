from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from paysys.contracts.branches import AgreementCharge
from paysys.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from paysys.core.models import Merchant, Payer, PayerAgreement, PayerAgreementDay
from paysys.core.money import MAX_AMOUNT

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "psk_"
PAYER_TOKEN_PREFIX = "ppt_"


def _hash_api_key(api_key: str) -> str:
    # API keys and payer tokens carry 192 random bits, so a fast hash is enough (no dictionary to attack)
    return hashlib.sha256(api_key.encode()).hexdigest()


def generate_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def merchant_create(*, name: str, notify_url: str, fee_rate_bp: int = 60) -> tuple[Merchant, str]:
    """Create a merchant; returns it with its API key, which is shown this once and never stored."""
    name = name.strip()
    if not name or len(name) > 128:
        raise ValidationError({"name": "1-128 characters"})
    URLValidator(schemes=["http", "https"])(notify_url)
    if not 0 <= fee_rate_bp <= 10_000:
        raise ValidationError({"fee_rate_bp": "between 0 and 10000 basis points"})
    api_key, prefix = _new_key(API_KEY_PREFIX)
    merchant = Merchant.objects.create(
        name=name,
        notify_url=notify_url,
        fee_rate_bp=fee_rate_bp,
        api_key_prefix=prefix,
        api_key_hash=_hash_api_key(api_key),
        webhook_secret=generate_webhook_secret(),
    )
    return merchant, api_key


def webhook_secret_grace() -> timedelta:
    """How long a rotated-out secret keeps signing: ``NOTIFY_SECRET_GRACE`` seconds, default 24 h."""
    return timedelta(seconds=settings.NOTIFY_SECRET_GRACE)


def merchant_webhook_secrets(merchant: Merchant) -> list[str]:
    """The secrets a notification to ``merchant`` is signed with: the current one first, then the
    previous one while its grace lasts (Standard Webhooks allows several space-separated
    signatures, so a merchant verifying with either secret accepts it)."""
    secrets_ = [merchant.webhook_secret]
    until = merchant.previous_webhook_secret_until
    if merchant.previous_webhook_secret and until is not None and timezone.now() < until:
        secrets_.append(merchant.previous_webhook_secret)
    return secrets_


def merchant_rotate_webhook_secret(*, merchant_id: int, grace: timedelta | None = None) -> Merchant:
    """Give the merchant a new webhook secret; the old one keeps signing for ``grace`` (default
    ``NOTIFY_SECRET_GRACE``; zero ends it at once, e.g. after a leak). A secret rotated out
    earlier and still in its grace is dropped: only the last two secrets ever sign."""
    grace = webhook_secret_grace() if grace is None else grace
    if grace < timedelta(0):
        raise InvalidInput("the grace period cannot be negative", fields={"grace": "must be >= 0"})
    with transaction.atomic(using="default"):
        merchant = Merchant.objects.select_for_update().filter(pk=merchant_id).first()
        if merchant is None:
            raise NotFound(f"merchant {merchant_id} not found")
        now = timezone.now()
        merchant.previous_webhook_secret = merchant.webhook_secret
        merchant.previous_webhook_secret_until = now + grace
        merchant.webhook_secret = generate_webhook_secret()
        merchant.webhook_secret_rotated_at = now
        merchant.save(
            update_fields=[
                "webhook_secret",
                "previous_webhook_secret",
                "previous_webhook_secret_until",
                "webhook_secret_rotated_at",
            ]
        )
    return merchant


def _key_prefix(key: str, marker: str) -> str | None:
    """The lookup prefix of a key shaped ``<marker><12 hex>_<secret>`` (API keys, payer tokens), or None."""
    if not isinstance(key, str) or not key.startswith(marker):
        return None
    prefix, sep, _ = key[len(marker) :].partition("_")
    return prefix if sep and len(prefix) == 12 else None


def _new_key(marker: str) -> tuple[str, str]:
    """A new key and its lookup prefix."""
    prefix = secrets.token_hex(6)
    return f"{marker}{prefix}_{secrets.token_urlsafe(24)}", prefix


def merchant_by_api_key(api_key: str) -> Merchant | None:
    """The merchant owning ``api_key``, or None; frozen merchants are returned (the caller decides)."""
    prefix = _key_prefix(api_key, API_KEY_PREFIX)
    if prefix is None:
        return None
    merchant = Merchant.objects.filter(api_key_prefix=prefix).first()
    if merchant is None or not hmac.compare_digest(merchant.api_key_hash, _hash_api_key(api_key)):
        return None
    return merchant


def payer_create(*, name: str) -> Payer:
    """A payer with no agreement yet (no balance payments until :func:`agreement_issue`)."""
    name = name.strip()
    if not name or len(name) > 128:
        raise ValidationError({"name": "1-128 characters"})
    return Payer.objects.create(name=name)


# --- payer agreements: a payer's consent to balance payments by one merchant ----------------


def payer_create_with_agreement(
    *, name: str, merchant_id: int, issued_by: str, **limits
) -> tuple[Payer, PayerAgreement, str]:
    """A payer and its agreement with merchant ``merchant_id`` (:func:`agreement_issue`): the
    agreement's token is returned this once and never stored. Nothing is created if either fails."""
    with transaction.atomic(using="default"):
        payer = payer_create(name=name)
        agreement, token = agreement_issue(
            payer_id=payer.pk, merchant_id=merchant_id, issued_by=issued_by, **limits
        )
    return payer, agreement, token


def agreement_issue(
    *,
    payer_id: int,
    merchant_id: int,
    issued_by: str,
    currency: str | None = None,
    per_payment_limit: int | None = None,
    daily_limit: int | None = None,
    replace: bool = False,
) -> tuple[PayerAgreement, str]:
    """A new agreement: merchant ``merchant_id`` may charge payer ``payer_id``'s wallet, each
    payment at most ``per_payment_limit`` and the payments of a day at most ``daily_limit``
    (minor units of ``currency``, default the first of ORDER_CURRENCIES; None: no limit).
    Returns it with its token, shown this once.

    One agreement per payer and merchant is in force: if there is one already, Conflict, unless
    ``replace``: then it is revoked (by ``issued_by``) in the same transaction (new limits, say).
    """
    currency = currency or settings.ORDER_CURRENCIES[0]
    problems = {
        field: f"empty or an integer between 1 and {MAX_AMOUNT} (minor units)"
        for field, limit in (("per_payment_limit", per_payment_limit), ("daily_limit", daily_limit))
        if limit is not None and (not _is_int(limit) or not 1 <= limit <= MAX_AMOUNT)
    }
    if currency not in settings.ORDER_CURRENCIES:
        problems["currency"] = f"one of {', '.join(settings.ORDER_CURRENCIES)}"
    if not issued_by or len(issued_by) > 150:
        problems["issued_by"] = "1-150 characters: who issues it"
    if problems:
        raise InvalidInput("agreement not issued", fields=problems)
    token, prefix = _new_key(PAYER_TOKEN_PREFIX)
    now = timezone.now()
    with transaction.atomic(using="default"):
        if not _is_int(payer_id) or not Payer.objects.filter(pk=payer_id).exists():
            raise NotFound(f"no payer #{payer_id}")
        if not _is_int(merchant_id) or not Merchant.objects.filter(pk=merchant_id).exists():
            raise NotFound(f"no merchant #{merchant_id}")
        if replace:
            in_force = PayerAgreement.objects.filter(
                payer_id=payer_id, merchant_id=merchant_id, in_force=True
            )
            for current in in_force.select_for_update():
                _revoke(current, revoked_by=issued_by, now=now)
        try:
            with transaction.atomic(using="default"):
                agreement = PayerAgreement.objects.create(
                    payer_id=payer_id,
                    merchant_id=merchant_id,
                    token_prefix=prefix,
                    token_hash=_hash_api_key(token),
                    currency=currency,
                    per_payment_limit=per_payment_limit,
                    daily_limit=daily_limit,
                    created_by=issued_by,
                    token_issued_at=now,
                    token_issued_by=issued_by,
                )
        except (
            IntegrityError
        ):  # the one in force (the database says so: payeragreement_one_in_force)
            current = PayerAgreement.objects.filter(
                payer_id=payer_id, merchant_id=merchant_id, in_force=True
            ).first()
            raise Conflict(
                f"payer #{payer_id} already has an agreement in force with merchant #{merchant_id}"
                f"{f' (#{current.pk})' if current else ''}: reissue its token, or replace or revoke it",
                code="agreement_exists",
            ) from None
    logger.info(
        "agreement #%s: payer #%s with merchant #%s issued by %s",
        agreement.pk,
        payer_id,
        merchant_id,
        issued_by,
    )
    return agreement, token


def agreement_reissue(*, agreement_id: int, issued_by: str) -> tuple[PayerAgreement, str]:
    """Give the agreement a new token (after a leak, say): the old one stops working at once,
    limits and today's payments stay. A revoked agreement stays revoked (Conflict): issue a new one."""
    if not issued_by or len(issued_by) > 150:
        raise InvalidInput(
            "token not reissued", fields={"issued_by": "1-150 characters: who reissues it"}
        )
    token, prefix = _new_key(PAYER_TOKEN_PREFIX)
    with transaction.atomic(using="default"):
        agreement = _agreement_for_update(agreement_id)
        if agreement.is_revoked:
            raise Conflict(
                f"{agreement} was revoked at {agreement.revoked_at:%Y-%m-%d %H:%M} UTC: issue a new agreement",
                code="agreement_revoked",
            )
        agreement.token_prefix, agreement.token_hash = prefix, _hash_api_key(token)
        agreement.token_issued_at, agreement.token_issued_by = timezone.now(), issued_by
        agreement.save(
            update_fields=["token_prefix", "token_hash", "token_issued_at", "token_issued_by"]
        )
    logger.info("%s: token reissued by %s", agreement, issued_by)
    return agreement, token


def agreement_revoke(*, agreement_id: int, revoked_by: str) -> PayerAgreement:
    """End the agreement: its token is refused from now on (a payment already past its try
    completes). Revoking a revoked agreement changes nothing (the first who and when stay)."""
    if not revoked_by or len(revoked_by) > 150:
        raise InvalidInput(
            "agreement not revoked", fields={"revoked_by": "1-150 characters: who revokes it"}
        )
    with transaction.atomic(using="default"):
        agreement = _agreement_for_update(agreement_id)
        if not agreement.is_revoked:
            _revoke(agreement, revoked_by=revoked_by, now=timezone.now())
    return agreement


def _agreement_for_update(agreement_id: int) -> PayerAgreement:
    agreement = (
        PayerAgreement.objects.select_for_update().filter(pk=agreement_id).first()
        if _is_int(agreement_id)
        else None
    )
    if agreement is None:
        raise NotFound(f"no agreement #{agreement_id}")
    return agreement


def _revoke(agreement: PayerAgreement, *, revoked_by: str, now) -> None:
    agreement.in_force, agreement.revoked_at, agreement.revoked_by = None, now, revoked_by
    agreement.save(update_fields=["in_force", "revoked_at", "revoked_by"])
    logger.info("%s revoked by %s", agreement, revoked_by)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# compared against when a token finds no agreement, so every refusal costs the same
_NO_TOKEN_HASH = _hash_api_key(PAYER_TOKEN_PREFIX + "no-token")


def agreement_for_payment(*, payer_token: str, payer_id: int, merchant_id: int) -> PayerAgreement:
    """The agreement whose token is ``payer_token``, if it lets merchant ``merchant_id`` charge
    payer ``payer_id`` (an order's payer): else Forbidden, whose code says why: the token is not
    this payer's (``payer_token_mismatch``), it is the payer's agreement with another merchant
    (``agreement_other_merchant``), or it was revoked (``agreement_revoked``). Reads only.

    Constant time in the token: the hashes are compared with hmac.compare_digest, and a token
    that finds no agreement is compared against a dummy hash and refused."""
    prefix = _key_prefix(payer_token, PAYER_TOKEN_PREFIX)
    agreement = PayerAgreement.objects.filter(token_prefix=prefix).first() if prefix else None
    matches = hmac.compare_digest(
        agreement.token_hash if agreement else _NO_TOKEN_HASH,
        _hash_api_key(payer_token if isinstance(payer_token, str) else ""),
    )
    if agreement is None or not matches or agreement.payer_id != payer_id:
        raise Forbidden(
            "payer_token is not this order's payer's consent", code="payer_token_mismatch"
        )
    if refusal := _standing_refusal(agreement, merchant_id=merchant_id):
        raise refusal
    return agreement


def agreement_limits_check(agreement: PayerAgreement, *, amount: int, currency: str) -> None:
    """Forbidden if a payment of ``amount`` would break the agreement's limits as they stand
    now (``agreement_currency``, ``agreement_payment_limit``, ``agreement_daily_limit``). Reads
    only: the payment's try counts it atomically (:func:`agreement_charge_hold`)."""
    used = 0
    if agreement.daily_limit is not None:  # (no daily limit: today's total is not needed)
        today = PayerAgreementDay.objects.filter(agreement=agreement, day=PayerAgreementDay.today())
        used = today.values_list("amount", flat=True).first() or 0
    if refusal := (
        _limit_refusal(agreement, amount=amount, currency=currency)
        or _daily_refusal(agreement, amount=amount, used=used)
    ):
        raise refusal


def _standing_refusal(agreement: PayerAgreement, *, merchant_id: int) -> Forbidden | None:
    if agreement.merchant_id != merchant_id:
        return Forbidden(
            "payer_token is the payer's agreement with another merchant; this merchant needs its own",
            code="agreement_other_merchant",
        )
    if agreement.is_revoked:
        return Forbidden(
            f"payer_token's agreement was revoked at {agreement.revoked_at:%Y-%m-%d %H:%M} UTC",
            code="agreement_revoked",
        )
    return None


def _limit_refusal(agreement: PayerAgreement, *, amount: int, currency: str) -> Forbidden | None:
    if currency != agreement.currency:
        return Forbidden(
            f"the agreement is for payments in {agreement.currency}, not {currency}",
            code="agreement_currency",
        )
    if agreement.per_payment_limit is not None and amount > agreement.per_payment_limit:
        return Forbidden(
            f"{amount} is above the agreement's per-payment limit of {agreement.per_payment_limit} "
            f"(minor units of {agreement.currency})",
            code="agreement_payment_limit",
        )
    return None


def _daily_refusal(agreement: PayerAgreement, *, amount: int, used: int) -> Forbidden | None:
    if agreement.daily_limit is not None and used + amount > agreement.daily_limit:
        return Forbidden(
            f"{amount} on top of today's {used} is above the agreement's daily limit of "
            f"{agreement.daily_limit} (minor units of {agreement.currency})",
            code="agreement_daily_limit",
        )
    return None


# --- the agreement as a TCC participant of a balance payment (paysys.core.participants) ------


def agreement_charge_hold(*, charge: AgreementCharge) -> None:
    """Try: count the payment against the agreement, or Forbidden. Under the agreement's row
    lock, so a revoke or reissue is either before (refused) or after (this payment stands), and
    the day's total is a conditional UPDATE: payments racing with one agreement never pass its
    daily limit together."""
    agreement = PayerAgreement.objects.select_for_update().filter(pk=charge.agreement_id).first()
    if (
        agreement is None
        or agreement.token_prefix != charge.token_prefix
        or agreement.payer_id != charge.payer_id
    ):
        raise Forbidden(
            "payer_token is no longer this payer's consent (reissued)", code="payer_token_mismatch"
        )
    if refusal := (
        _standing_refusal(agreement, merchant_id=charge.merchant_id)
        or _limit_refusal(agreement, amount=charge.amount, currency=charge.currency)
    ):
        raise refusal
    within = (
        Q()
        if agreement.daily_limit is None
        else Q(amount__lte=agreement.daily_limit - charge.amount)
    )
    day = PayerAgreementDay.objects.filter(agreement=agreement, day=charge.day)
    counted = day.filter(within).update(amount=F("amount") + charge.amount)
    if not counted and not day.exists():  # the day's first payment: its row first
        PayerAgreementDay.objects.create(agreement=agreement, day=charge.day)  # no race: locked
        counted = day.filter(within).update(amount=F("amount") + charge.amount)
    if not counted:
        raise _daily_refusal(agreement, amount=charge.amount, used=day.get().amount)


def agreement_charge_release(*, charge: AgreementCharge) -> None:
    """Cancel: uncount the payment (the barrier runs this only after its try counted it)."""
    released = PayerAgreementDay.objects.filter(
        agreement_id=charge.agreement_id, day=charge.day, amount__gte=charge.amount
    ).update(amount=F("amount") - charge.amount)
    if (
        not released
    ):  # a data or framework bug: raised, so the cancel is retried and then shown to a human
        raise RuntimeError(
            f"agreement #{charge.agreement_id} counted less than {charge.amount} on {charge.day}"
        )
