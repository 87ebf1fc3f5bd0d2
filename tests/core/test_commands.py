import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from paysys.core.models import Merchant
from paysys.core.services import merchant_by_api_key

pytestmark = pytest.mark.django_db(databases="__all__")


def test_create_merchant_json_output_and_hashed_key():
    out = StringIO()

    call_command(
        "create_merchant",
        "--name",
        "Shop",
        "--notify-url",
        "https://shop.example/notify",
        "--json",
        stdout=out,
    )

    data = json.loads(out.getvalue())
    assert set(data) == {"merchant_id", "api_key", "webhook_secret"}
    merchant = Merchant.objects.get(pk=data["merchant_id"])
    assert data["webhook_secret"].startswith("whsec_")
    assert data["api_key"] not in merchant.api_key_hash and merchant.api_key_hash != data["api_key"]
    assert data["api_key"].startswith("psk_" + merchant.api_key_prefix + "_")
    assert merchant_by_api_key(data["api_key"]) == merchant
    assert merchant.fee_rate_bp == 60


def test_webhook_secret_is_standard_webhooks_format():
    from standardwebhooks.webhooks import Webhook

    out = StringIO()
    call_command(
        "create_merchant",
        "--name",
        "Shop",
        "--notify-url",
        "https://shop.example/n",
        "--json",
        stdout=out,
    )

    Webhook(json.loads(out.getvalue())["webhook_secret"])  # raises on a malformed secret


def test_create_merchant_rejects_bad_input_and_writes_nothing():
    with pytest.raises(CommandError, match="merchant not created"):
        call_command("create_merchant", "--name", "Shop", "--notify-url", "not-a-url", "--json")
    with pytest.raises(CommandError):
        call_command(
            "create_merchant",
            "--name",
            "Shop",
            "--notify-url",
            "https://x.example",
            "--fee-rate-bp",
            "20000",
        )

    assert Merchant.objects.count() == 0


# check --deploy and refusing to start without secrets: tests/core/test_security_settings.py


def test_beat_schedules_are_synced_from_code(settings):
    from django_celery_beat.models import PeriodicTask

    from paysys.core.schedules import sync_beat_schedules

    settings.CELERY_BEAT_SCHEDULE = {
        **settings.CELERY_BEAT_SCHEDULE,
        "orders.extra": {"task": "orders.close_expired_orders", "schedule": 7.0},
    }
    sync_beat_schedules()
    assert PeriodicTask.objects.get(name="orders.extra").interval.every == 7

    del settings.CELERY_BEAT_SCHEDULE["orders.extra"]
    removed = sync_beat_schedules()

    assert removed == ["orders.extra"]
    assert set(PeriodicTask.objects.values_list("name", flat=True)) >= set(
        settings.CELERY_BEAT_SCHEDULE
    )
    assert not PeriodicTask.objects.filter(name="orders.extra").exists()


def test_beat_entries_expire_so_slow_passes_do_not_pile_up():
    from django_celery_beat.models import PeriodicTask

    from paysys.core.schedules import sync_beat_schedules

    sync_beat_schedules()

    poll = PeriodicTask.objects.get(name="orders.poll_bank")
    assert poll.expire_seconds == 1
    assert PeriodicTask.objects.get(name="messaging.recover_messages").expire_seconds == 5


def test_create_merchant_warns_when_its_notify_url_would_be_refused_at_delivery(settings):
    settings.NOTIFY_ALLOWED_NETWORKS = ()
    out, err = StringIO(), StringIO()

    call_command(
        "create_merchant",
        "--name",
        "Shop",
        "--notify-url",
        "http://169.254.169.254/notify",
        "--json",
        stdout=out,
        stderr=err,
    )

    assert "will be refused at delivery" in err.getvalue() and "link-local" in err.getvalue()
    assert Merchant.objects.filter(pk=json.loads(out.getvalue())["merchant_id"]).exists()
