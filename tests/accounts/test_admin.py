"""Admin: accounts and entries are read-only; crediting a wallet needs its own permission."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from accounts.models import FundAccount, FundEntry
from accounts.services import wallet_credit
from paysys.contracts import WalletCredited
from paysys.messaging.models import Message
from tests.accounts.helpers import fund_payload, new_xid, phase

pytestmark = pytest.mark.django_db(databases="__all__")

CREDIT_URL = "admin:accounts_fundaccount_credit_wallet"


@pytest.fixture
def admin_client(client, django_user_model):
    client.force_login(
        django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-not-used")
    )
    return client


@pytest.fixture
def staff_client(client, django_user_model):
    """Staff who may view accounts, but not credit wallets."""
    user = django_user_model.objects.create_user("clerk", password="pw-not-used", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_fundaccount", "view_fundentry"])
    )
    client.force_login(user)
    return client


@pytest.fixture
def accounts_with_entries(payer):
    wallet_credit(payer_id=payer.pk, amount=1000, reason="welcome", credited_by="test")
    phase("points.award", "try", {"payer_id": payer.pk, "points": 10}, new_xid())
    xid = new_xid()
    phase("funds.credit", "try", fund_payload("merchant", 1, 500), xid)
    return payer


@pytest.mark.parametrize("model", ["fundaccount", "fundentry", "pointsaccount", "pointsentry"])
def test_lists_and_rows_show_and_nothing_is_editable(admin_client, accounts_with_entries, model):
    changelist = admin_client.get(reverse(f"admin:accounts_{model}_changelist"))
    assert changelist.status_code == 200

    from django.apps import apps

    obj = apps.get_model("accounts", model).objects.first()
    change = admin_client.get(reverse(f"admin:accounts_{model}_change", args=[obj.pk]))
    assert change.status_code == 200
    assert b'name="_save"' not in change.content
    assert admin_client.get(reverse(f"admin:accounts_{model}_add")).status_code == 403
    assert (
        admin_client.post(
            reverse(f"admin:accounts_{model}_delete", args=[obj.pk]), {"post": "yes"}
        ).status_code
        == 403
    )


def test_credit_wallet_form_credits_with_the_admin_user_as_who(admin_client, payer):
    response = admin_client.post(
        reverse(CREDIT_URL),
        {
            "payer_id": payer.pk,
            "amount": 2500,
            "currency": "CNY",
            "reason": "goodwill",
            "request_key": "k1",
        },
    )

    assert response.status_code == 302
    entry = FundEntry.objects.using("funds").get()
    assert (entry.amount, entry.balance_after, entry.reason, entry.created_by) == (
        2500,
        2500,
        "goodwill",
        "admin:boss",
    )
    assert Message.objects.using("funds").filter(topic=WalletCredited.TOPIC).count() == 1
    entries = admin_client.get(response["Location"])  # the wallet's entries
    assert entries.status_code == 200 and b"goodwill" in entries.content


def test_credit_wallet_form_shows_errors_and_writes_nothing(admin_client):
    response = admin_client.post(
        reverse(CREDIT_URL),
        {"payer_id": 999, "amount": 0, "currency": "CNY", "reason": "", "request_key": "k1"},
    )
    assert response.status_code == 200
    assert not FundEntry.objects.using("funds").exists()

    response = admin_client.post(
        reverse(CREDIT_URL),
        {"payer_id": 999, "amount": 10, "currency": "CNY", "reason": "x", "request_key": "k1"},
    )
    assert response.status_code == 200
    assert b"no payer #999" in response.content
    assert not FundEntry.objects.using("funds").exists()


def test_the_action_on_a_wallet_opens_the_prefilled_form(admin_client, accounts_with_entries):
    wallet = FundAccount.objects.using("funds").get(owner_type="payer")

    response = admin_client.post(
        reverse("admin:accounts_fundaccount_changelist"),
        {"action": "credit_selected_wallet", "_selected_action": [wallet.pk]},
    )

    assert response.status_code == 302
    form = admin_client.get(response["Location"])
    assert f'value="{wallet.owner_id}"'.encode() in form.content


def test_without_the_permission_no_wallet_is_credited(staff_client, payer):
    assert staff_client.get(reverse("admin:accounts_fundaccount_changelist")).status_code == 200
    assert (
        b"Credit a payer"
        not in staff_client.get(reverse("admin:accounts_fundaccount_changelist")).content
    )

    response = staff_client.post(
        reverse(CREDIT_URL),
        {"payer_id": payer.pk, "amount": 1, "currency": "CNY", "reason": "x", "request_key": "k1"},
    )

    assert response.status_code == 403
    assert not FundEntry.objects.using("funds").exists()


def test_the_same_form_submitted_twice_credits_once(admin_client, payer):
    form = admin_client.get(reverse(CREDIT_URL))
    key = form.context["form"].fields["request_key"].initial
    assert f'name="request_key" value="{key}"'.encode() in form.content
    data = {
        "payer_id": payer.pk,
        "amount": 700,
        "currency": "CNY",
        "reason": "goodwill",
        "request_key": key,
    }

    admin_client.post(reverse(CREDIT_URL), data)
    admin_client.post(reverse(CREDIT_URL), data)

    assert FundEntry.objects.using("funds").get().amount == 700
    assert (
        FundAccount.objects.using("funds").get(owner_type="payer", owner_id=payer.pk).balance == 700
    )
    assert Message.objects.using("funds").filter(topic=WalletCredited.TOPIC).count() == 1
    assert (
        admin_client.get(reverse(CREDIT_URL)).context["form"].fields["request_key"].initial != key
    )  # a new form, a new key


def test_a_database_down_during_the_credit_is_an_error_on_the_form_and_resubmitting_credits_once(
    admin_client, payer, monkeypatch
):
    from django.db import OperationalError

    from accounts import services

    data = {
        "payer_id": payer.pk,
        "amount": 900,
        "currency": "CNY",
        "reason": "goodwill",
        "request_key": "k-down",
    }
    real = services.publish

    def broken(*args, **kwargs):
        raise OperationalError("funds database gone")

    monkeypatch.setattr(services, "publish", broken)
    response = admin_client.post(reverse(CREDIT_URL), data)
    assert response.status_code == 200 and b"A database is unavailable" in response.content
    assert not FundEntry.objects.using("funds").exists()

    monkeypatch.setattr(services, "publish", real)
    admin_client.post(reverse(CREDIT_URL), data)
    admin_client.post(reverse(CREDIT_URL), data)
    assert (
        FundAccount.objects.using("funds").get(owner_type="payer", owner_id=payer.pk).balance == 900
    )
