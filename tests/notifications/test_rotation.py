"""Webhook secret rotation: a merchant's verifier (the standardwebhooks library, which nobody here
wrote) accepts notifications signed during the grace period with either the old or the new secret."""

import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.contrib.admin.sites import site
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from paysys.core.errors import InvalidInput, NotFound
from paysys.core.models import Merchant
from paysys.core.services import merchant_rotate_webhook_secret, merchant_webhook_secrets
from tests.concurrency import run_at_once

pytestmark = pytest.mark.django_db(databases="__all__")


def signed_headers(secrets: list[str], body: str, msg_id: str = "msg_1") -> dict:
    """Headers as a sender signing with every secret of ``merchant_webhook_secrets`` sends them."""
    now = datetime.now(tz=UTC)
    signatures = " ".join(Webhook(secret).sign(msg_id, now, body) for secret in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signatures,
    }


def test_a_new_merchant_signs_with_its_one_secret(merchant):
    assert merchant_webhook_secrets(merchant) == [merchant.webhook_secret]


def test_during_the_grace_period_both_secrets_sign_and_either_verifies(merchant):
    old = merchant.webhook_secret

    rotated = merchant_rotate_webhook_secret(merchant_id=merchant.pk)

    assert rotated.webhook_secret != old and rotated.webhook_secret.startswith("whsec_")
    assert merchant_webhook_secrets(rotated) == [rotated.webhook_secret, old]
    body = json.dumps({"type": "order.paid"})
    headers = signed_headers(merchant_webhook_secrets(rotated), body)
    assert " " in headers["webhook-signature"]  # two signatures, space-separated
    assert Webhook(old).verify(body, headers) == {"type": "order.paid"}  # merchant not yet switched
    assert Webhook(rotated.webhook_secret).verify(body, headers) == {
        "type": "order.paid"
    }  # switched
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body + " ", headers)  # a tampered body still fails


def test_after_the_grace_period_only_the_new_secret_signs(merchant):
    old = merchant.webhook_secret
    rotated = merchant_rotate_webhook_secret(merchant_id=merchant.pk)
    Merchant.objects.filter(pk=merchant.pk).update(
        previous_webhook_secret_until=timezone.now() - timedelta(seconds=1)
    )
    rotated.refresh_from_db()

    assert merchant_webhook_secrets(rotated) == [rotated.webhook_secret]
    body = "{}"
    headers = signed_headers(merchant_webhook_secrets(rotated), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)


@override_settings(NOTIFY_SECRET_GRACE=3600)
def test_the_default_grace_comes_from_settings(merchant):
    rotated = merchant_rotate_webhook_secret(merchant_id=merchant.pk)

    assert rotated.previous_webhook_secret_until - rotated.webhook_secret_rotated_at == timedelta(
        hours=1
    )


def test_a_zero_grace_stops_the_old_secret_at_once(merchant):
    rotated = merchant_rotate_webhook_secret(merchant_id=merchant.pk, grace=timedelta(0))

    assert merchant_webhook_secrets(rotated) == [rotated.webhook_secret]


def test_a_second_rotation_keeps_only_the_last_two_secrets(merchant):
    first = merchant.webhook_secret
    second = merchant_rotate_webhook_secret(merchant_id=merchant.pk).webhook_secret

    third = merchant_rotate_webhook_secret(merchant_id=merchant.pk)

    assert merchant_webhook_secrets(third) == [third.webhook_secret, second]
    assert first not in merchant_webhook_secrets(third)


def test_rotation_refuses_unknown_merchants_and_negative_grace(merchant):
    with pytest.raises(NotFound):
        merchant_rotate_webhook_secret(merchant_id=merchant.pk + 1000)
    with pytest.raises(InvalidInput):
        merchant_rotate_webhook_secret(merchant_id=merchant.pk, grace=timedelta(hours=-1))
    merchant.refresh_from_db()
    assert merchant.webhook_secret_rotated_at is None


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_concurrent_rotations_chain_and_never_drop_the_secret_just_issued(merchant):
    # each rotation moves the then-current secret to "previous" under a row lock: two at once
    # chain (old -> a -> b); without the lock both would move the old one and a would vanish,
    # leaving a merchant who was just given a unable to verify anything
    rotate = lambda: merchant_rotate_webhook_secret(merchant_id=merchant.pk).webhook_secret  # noqa: E731

    issued = run_at_once(rotate, rotate)

    merchant.refresh_from_db()
    assert merchant.webhook_secret in issued
    assert merchant.previous_webhook_secret in issued
    assert merchant.previous_webhook_secret != merchant.webhook_secret


def test_command_prints_the_new_secret_as_json(merchant):
    out = StringIO()

    call_command(
        "rotate_webhook_secret",
        "--merchant",
        str(merchant.pk),
        "--grace-hours",
        "2",
        "--json",
        stdout=out,
    )

    data = json.loads(out.getvalue())
    merchant.refresh_from_db()
    assert data["merchant_id"] == merchant.pk
    assert data["webhook_secret"] == merchant.webhook_secret
    assert (
        datetime.fromisoformat(data["previous_valid_until"])
        == merchant.previous_webhook_secret_until
    )
    assert merchant.previous_webhook_secret_until - merchant.webhook_secret_rotated_at == timedelta(
        hours=2
    )


def test_command_human_output_and_errors(merchant):
    out = StringIO()
    call_command("rotate_webhook_secret", "--merchant", str(merchant.pk), stdout=out)
    merchant.refresh_from_db()
    assert merchant.webhook_secret in out.getvalue()

    with pytest.raises(CommandError, match="not rotated"):
        call_command("rotate_webhook_secret", "--merchant", str(merchant.pk + 1000))
    with pytest.raises(CommandError, match="not rotated"):
        call_command("rotate_webhook_secret", "--merchant", str(merchant.pk), "--grace-hours", "-1")


def test_admin_action_rotates_selected_merchants(admin_client, make_merchant):
    a, _ = make_merchant()
    b, _ = make_merchant()
    untouched, _ = make_merchant()
    old = {m.pk: m.webhook_secret for m in (a, b, untouched)}

    response = admin_client.post(
        "/admin/core/merchant/",
        {"action": "rotate_webhook_secret", "_selected_action": [a.pk, b.pk]},
        follow=True,
    )

    assert response.status_code == 200
    for m in (a, b):
        m.refresh_from_db()
        assert m.webhook_secret != old[m.pk] and m.previous_webhook_secret == old[m.pk]
        assert m.webhook_secret in response.content.decode()
    untouched.refresh_from_db()
    assert untouched.webhook_secret == old[untouched.pk]
    assert "rotate_webhook_secret" in site._registry[Merchant].get_actions(response.wsgi_request)
