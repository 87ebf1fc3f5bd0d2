import base64
import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone

from paysys.core.errors import InvalidInput, NotFound
from paysys.core.models import Merchant, Payer

API_KEY_PREFIX = "psk_"
PAYER_TOKEN_PREFIX = "ppt_"


def _hash_api_key(api_key: str) -> str:
    # API keys (and payer tokens) carry 192 random bits, so a fast hash is enough (no dictionary to attack)
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
    prefix = secrets.token_hex(6)
    api_key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(24)}"
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
        merchant.save(update_fields=[
            "webhook_secret", "previous_webhook_secret", "previous_webhook_secret_until", "webhook_secret_rotated_at",
        ])
    return merchant


def merchant_by_api_key(api_key: str) -> Merchant | None:
    """The merchant owning ``api_key``, or None; frozen merchants are returned (the caller decides)."""
    if not api_key.startswith(API_KEY_PREFIX):
        return None
    prefix, sep, _ = api_key[len(API_KEY_PREFIX):].partition("_")
    if not sep or len(prefix) != 12:
        return None
    merchant = Merchant.objects.filter(api_key_prefix=prefix).first()
    if merchant is None or not hmac.compare_digest(merchant.api_key_hash, _hash_api_key(api_key)):
        return None
    return merchant


def payer_create(*, name: str) -> Payer:
    """A payer without a payer token (no balance payments until :func:`payer_token_issue`)."""
    name = name.strip()
    if not name or len(name) > 128:
        raise ValidationError({"name": "1-128 characters"})
    return Payer.objects.create(name=name)


def payer_create_with_token(*, name: str) -> tuple[Payer, str]:
    """A payer and its payer token, which is shown this once and never stored."""
    with transaction.atomic():
        payer = payer_create(name=name)
        return payer, payer_token_issue(payer=payer)


def payer_token_issue(*, payer: Payer) -> str:
    """Give the payer a new payer token (the previous one stops working); returned once."""
    token = PAYER_TOKEN_PREFIX + secrets.token_urlsafe(24)
    Payer.objects.filter(pk=payer.pk).update(payer_token_hash=_hash_api_key(token))
    payer.payer_token_hash = _hash_api_key(token)
    return token


# compared against when the payer is unknown or has no token, so every refusal costs the same
_NO_TOKEN_HASH = _hash_api_key(PAYER_TOKEN_PREFIX + "no-token")


def payer_token_check(payer_id: int, token: str) -> bool:
    """True when ``token`` is ``payer_id``'s payer token (the payer's consent to a balance payment).

    Constant time in the token: the hashes are compared with hmac.compare_digest, and an unknown
    payer or one without a token is compared against a dummy hash and refused."""
    if not isinstance(token, str) or not isinstance(payer_id, int) or isinstance(payer_id, bool):
        return False
    stored = Payer.objects.filter(pk=payer_id).values_list("payer_token_hash", flat=True).first() or ""
    matches = hmac.compare_digest(stored or _NO_TOKEN_HASH, _hash_api_key(token))
    return bool(stored) and matches
