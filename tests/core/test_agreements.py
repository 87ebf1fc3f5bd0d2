"""Payer agreements: a payer's consent that one merchant may charge its wallet, within limits,
until revoked; issued, reissued and revoked by commands and admin actions that record who and
when. (Paying with them, races and refusals over the API: tests/orders/test_balance_payment.py.)"""

import dataclasses
import json
import re
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.urls import reverse

from paysys.contracts import AgreementCharge
from paysys.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from paysys.core.models import Payer, PayerAgreement, PayerAgreementDay
from paysys.core.participants import agreement_branch
from paysys.core.services import (
    agreement_charge_hold,
    agreement_charge_release,
    agreement_for_payment,
    agreement_issue,
    agreement_reissue,
    agreement_revoke,
)
from paysys.demo.management.commands.run_banner import demo_merchant_file

pytestmark = pytest.mark.django_db(databases="__all__")


def command(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def check(token, payer, merchant) -> PayerAgreement:
    return agreement_for_payment(payer_token=token, payer_id=payer.pk, merchant_id=merchant.pk)


def refused(token, payer, merchant) -> str:
    with pytest.raises(Forbidden) as refusal:
        check(token, payer, merchant)
    return refusal.value.code


# --- create_payer ----------------------------------------------------------------------------


def test_create_payer_json_prints_the_payer_and_its_agreements_token_stored_hashed(merchant):
    data = json.loads(
        command("create_payer", "--name", "Alice", "--merchant", str(merchant.pk), "--json")
    )

    assert set(data) == {"payer_id", "payer_token"}
    payer = Payer.objects.get(pk=data["payer_id"])
    [agreement] = payer.agreements.all()
    assert (payer.name, agreement.merchant_id, agreement.in_force) == ("Alice", merchant.pk, True)
    assert data["payer_token"].startswith(f"ppt_{agreement.token_prefix}_")
    assert data["payer_token"] not in agreement.token_hash and len(agreement.token_hash) == 64
    assert agreement.created_by.startswith("command:") and agreement.created_at is not None
    assert (agreement.per_payment_limit, agreement.daily_limit, agreement.currency) == (
        None,
        None,
        "CNY",
    )
    assert check(data["payer_token"], payer, merchant) == agreement


def test_create_payer_takes_limits(merchant):
    data = json.loads(
        command(
            "create_payer",
            "--name",
            "Bob",
            "--merchant",
            str(merchant.pk),
            "--per-payment-limit",
            "5000",
            "--daily-limit",
            "20000",
            "--json",
        )
    )

    agreement = PayerAgreement.objects.get(payer_id=data["payer_id"])
    assert (agreement.per_payment_limit, agreement.daily_limit) == (5000, 20000)


@pytest.fixture
def demo_merchant(settings, tmp_path, merchant_and_key):
    """``make run``'s demo merchant, as var/demo-merchant.json keeps it."""
    settings.VAR_DIR = tmp_path
    merchant, api_key = merchant_and_key
    demo_merchant_file().write_text(json.dumps({"merchant_id": merchant.pk, "api_key": api_key}))
    return merchant


def test_without_merchant_create_payer_makes_the_agreement_with_the_demo_merchant(
    settings, demo_merchant
):
    settings.SANDBOX_ENABLED = True

    data = json.loads(command("create_payer", "--name", "Alice", "--json"))

    assert PayerAgreement.objects.get(payer_id=data["payer_id"]).merchant_id == demo_merchant.pk


@pytest.mark.parametrize("case", ["no demo merchant", "a stale demo file", "sandbox off"])
def test_without_merchant_or_demo_merchant_create_payer_says_to_pass_one_and_creates_nothing(
    settings, demo_merchant, case
):
    settings.SANDBOX_ENABLED = case != "sandbox off"
    if case == "no demo merchant":
        demo_merchant_file().unlink()
    if case == "a stale demo file":  # another database's merchant: its key does not work here
        demo_merchant_file().write_text(
            json.dumps({"merchant_id": demo_merchant.pk, "api_key": "psk_0123456789ab_x"})
        )

    with pytest.raises(CommandError, match="pass --merchant ID"):
        command("create_payer", "--name", "Alice", "--json")

    assert not Payer.objects.exists() and not PayerAgreement.objects.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--merchant", "999999"], "no merchant #999999"),
        (["--merchant", "{m}", "--daily-limit", "0"], "daily_limit"),
        (["--merchant", "{m}", "--per-payment-limit", "-5"], "per_payment_limit"),
        (["--merchant", "{m}", "--per-payment-limit", str(10**11 + 1)], "per_payment_limit"),
    ],
)
def test_create_payer_refuses_bad_input_and_creates_nothing(merchant, args, message):
    args = [a.format(m=merchant.pk) for a in args]

    with pytest.raises(CommandError, match=message):
        command("create_payer", "--name", "Alice", *args, "--json")

    assert not Payer.objects.exists() and not PayerAgreement.objects.exists()


# --- the token: this payer, this merchant, in force ------------------------------------------


def test_a_token_is_refused_for_another_payer_another_merchant_or_anything_else(
    payer, merchant, make_merchant, issue_agreement
):
    other_merchant, _ = make_merchant()
    _, token = issue_agreement(payer, merchant)
    other_payer = Payer.objects.create(name="other")
    _, other_payers_token = issue_agreement(other_payer, merchant)

    assert check(token, payer, merchant).payer_id == payer.pk
    assert refused(token, payer, other_merchant) == "agreement_other_merchant"
    assert refused(other_payers_token, payer, merchant) == "payer_token_mismatch"
    for garbage in [
        "",
        "ppt_",
        token + "x",
        token[:-1],
        "psk_" + token[4:],
        f"ppt_{'0' * 12}_x",
        None,
        5,
    ]:
        assert refused(garbage, payer, merchant) == "payer_token_mismatch"


def test_a_payer_has_one_agreement_per_merchant_and_one_with_each_merchant(
    payer, merchant, make_merchant, issue_agreement
):
    other, _ = make_merchant()
    _, token = issue_agreement(payer, merchant)
    _, other_token = issue_agreement(payer, other)  # how a second merchant gets its own

    with pytest.raises(Conflict) as again:
        issue_agreement(payer, merchant)

    assert again.value.code == "agreement_exists"
    assert check(token, payer, merchant) and check(other_token, payer, other)
    assert refused(other_token, payer, merchant) == "agreement_other_merchant"


def test_the_database_refuses_a_second_agreement_in_force_for_a_pair(
    payer, merchant, issue_agreement
):
    agreement, _ = issue_agreement(payer, merchant)

    with pytest.raises(IntegrityError), transaction.atomic():
        PayerAgreement.objects.create(
            payer=payer,
            merchant=merchant,
            token_prefix="x",
            token_hash="x",
            currency="CNY",
            created_by="t",
            token_issued_at=agreement.token_issued_at,
            token_issued_by="t",
        )


def test_replacing_revokes_the_agreement_in_force_and_issues_a_new_one(
    payer, merchant, issue_agreement
):
    old, old_token = issue_agreement(payer, merchant, daily_limit=1000)

    new, new_token = issue_agreement(payer, merchant, daily_limit=5000, replace=True)

    old.refresh_from_db()
    assert (old.revoked_by, old.in_force, new.daily_limit) == ("command:test", None, 5000)
    assert refused(old_token, payer, merchant) == "agreement_revoked"
    assert check(new_token, payer, merchant) == new


def test_revoking_records_who_and_when_and_the_token_is_refused_from_then_on(
    payer, merchant, issue_agreement
):
    agreement, token = issue_agreement(payer, merchant)

    agreement_revoke(agreement_id=agreement.pk, revoked_by="admin:boss")
    agreement_revoke(
        agreement_id=agreement.pk, revoked_by="admin:other"
    )  # again: the first who and when stay

    agreement.refresh_from_db()
    assert (agreement.revoked_by, agreement.in_force) == (
        "admin:boss",
        None,
    ) and agreement.revoked_at
    assert refused(token, payer, merchant) == "agreement_revoked"
    with pytest.raises(Conflict):  # revoked stays revoked
        agreement_reissue(agreement_id=agreement.pk, issued_by="admin:boss")
    _, fresh = issue_agreement(payer, merchant)  # a new agreement for the pair
    assert check(fresh, payer, merchant).pk != agreement.pk


def test_reissuing_records_who_and_when_and_only_the_new_token_works(
    payer, merchant, issue_agreement
):
    agreement, old = issue_agreement(payer, merchant, per_payment_limit=700)
    issued_at = agreement.token_issued_at

    reissued, new = agreement_reissue(agreement_id=agreement.pk, issued_by="admin:boss")

    assert refused(old, payer, merchant) == "payer_token_mismatch"
    assert check(new, payer, merchant).pk == agreement.pk
    reissued.refresh_from_db()
    assert (reissued.token_issued_by, reissued.created_by, reissued.per_payment_limit) == (
        "admin:boss",
        "command:test",
        700,
    )
    assert reissued.token_issued_at > issued_at


@pytest.mark.parametrize(
    "call",
    [
        lambda: agreement_issue(payer_id=999_999, merchant_id=1, issued_by="t"),
        lambda: agreement_reissue(agreement_id=999_999, issued_by="t"),
        lambda: agreement_revoke(agreement_id=999_999, revoked_by="t"),
    ],
)
def test_unknown_payers_merchants_and_agreements_are_not_found(call):
    with pytest.raises(NotFound):
        call()


def test_limits_must_be_positive_integers_and_the_database_agrees(payer, merchant, issue_agreement):
    for limits in (
        {"daily_limit": 0},
        {"per_payment_limit": -1},
        {"daily_limit": True},
        {"currency": "XXX"},
    ):
        with pytest.raises(InvalidInput):
            issue_agreement(payer, merchant, **limits)
    agreement, _ = issue_agreement(payer, merchant)

    with pytest.raises(IntegrityError), transaction.atomic():
        PayerAgreement.objects.filter(pk=agreement.pk).update(daily_limit=0)


# --- the agreement's TCC try and cancel --------------------------------------------------------


def charge(agreement, amount, **changes) -> AgreementCharge:
    """The charge a payment of ``amount`` sends its agreement today (as the initiator builds it)."""
    branch = agreement_branch(agreement, amount=amount, currency="CNY", out_trade_no="PS1")
    return dataclasses.replace(AgreementCharge.from_payload(branch.payload), **changes)


def test_the_try_counts_within_the_limits_and_the_cancel_uncounts(payer, merchant, issue_agreement):
    agreement, _ = issue_agreement(payer, merchant, per_payment_limit=600, daily_limit=1000)

    agreement_charge_hold(charge=charge(agreement, 600))
    agreement_charge_hold(charge=charge(agreement, 400))
    with pytest.raises(Forbidden) as over:
        agreement_charge_hold(charge=charge(agreement, 1))
    with pytest.raises(Forbidden) as too_big:
        agreement_charge_hold(charge=charge(agreement, 601))

    assert (over.value.code, too_big.value.code) == (
        "agreement_daily_limit",
        "agreement_payment_limit",
    )
    day = PayerAgreementDay.objects.get(agreement=agreement)
    assert day.amount == 1000
    agreement_charge_release(charge=charge(agreement, 400))
    day.refresh_from_db()
    assert day.amount == 600
    with pytest.raises(RuntimeError):  # never more than was counted
        agreement_charge_release(charge=charge(agreement, 601))


def test_the_try_refuses_a_revoked_or_reissued_agreement_and_another_currency(
    payer, merchant, issue_agreement
):
    agreement, _ = issue_agreement(payer, merchant)
    authorised = charge(agreement, 100)

    with pytest.raises(Forbidden) as currency:
        agreement_charge_hold(charge=charge(agreement, 100, currency="USD"))
    agreement_reissue(agreement_id=agreement.pk, issued_by="admin:boss")
    with pytest.raises(Forbidden) as reissued:
        agreement_charge_hold(charge=authorised)
    agreement_revoke(agreement_id=agreement.pk, revoked_by="admin:boss")
    agreement.refresh_from_db()
    with pytest.raises(Forbidden) as revoked:
        agreement_charge_hold(charge=charge(agreement, 100))

    assert (currency.value.code, reissued.value.code, revoked.value.code) == (
        "agreement_currency",
        "payer_token_mismatch",
        "agreement_revoked",
    )
    assert not PayerAgreementDay.objects.filter(amount__gt=0).exists()


# --- manage.py payer_agreement -----------------------------------------------------------------


def test_payer_agreement_issue_reissue_revoke_and_list(payer, merchant):
    issued = json.loads(
        command(
            "payer_agreement",
            "issue",
            "--payer",
            str(payer.pk),
            "--merchant",
            str(merchant.pk),
            "--daily-limit",
            "5000",
            "--json",
        )
    )
    assert check(issued["payer_token"], payer, merchant).pk == issued["agreement_id"]
    assert issued["daily_limit"] == 5000 and issued["created_by"].startswith("command:")

    reissued = json.loads(
        command(
            "payer_agreement",
            "reissue",
            "--payer",
            str(payer.pk),
            "--merchant",
            str(merchant.pk),
            "--json",
        )
    )
    assert reissued["agreement_id"] == issued["agreement_id"]
    assert refused(issued["payer_token"], payer, merchant) == "payer_token_mismatch"
    assert check(reissued["payer_token"], payer, merchant)

    revoked = json.loads(
        command("payer_agreement", "revoke", "--agreement", str(issued["agreement_id"]), "--json")
    )
    assert revoked["revoked_by"].startswith("command:") and revoked["revoked_at"]
    assert refused(reissued["payer_token"], payer, merchant) == "agreement_revoked"

    [listed] = json.loads(command("payer_agreement", "list", "--payer", str(payer.pk), "--json"))
    assert (listed["agreement_id"], listed["used_today"], listed["revoked_by"]) == (
        issued["agreement_id"],
        0,
        revoked["revoked_by"],
    )
    assert "revoked" in command("payer_agreement", "list", "--merchant", str(merchant.pk))


@pytest.mark.parametrize(
    "args,message",
    [
        (["issue", "--payer", "{p}", "--merchant", "999999"], "no merchant #999999"),
        (["revoke", "--payer", "{p}"], "--agreement ID, or --payer ID --merchant ID"),
        (["reissue", "--payer", "{p}", "--merchant", "{m}"], "no agreement in force"),
        (["revoke", "--agreement", "999999"], "no agreement #999999"),
    ],
)
def test_payer_agreement_refusals_are_command_errors(payer, merchant, args, message):
    with pytest.raises(CommandError, match=message):
        command("payer_agreement", *[a.format(p=payer.pk, m=merchant.pk) for a in args])


# --- admin ---------------------------------------------------------------------------------------

CHANGELIST = "admin:core_payeragreement_changelist"


@pytest.fixture
def viewer(client, django_user_model):
    """Staff who may view agreements, not change them."""
    user = django_user_model.objects.create_user("clerk", password="pw-not-used", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_payeragreement"))
    client.force_login(user)
    return client


def admin_action(client, action, agreement):
    return client.post(
        reverse(CHANGELIST), {"action": action, "_selected_action": [agreement.pk]}, follow=True
    )


def test_admin_revokes_and_records_the_user_and_when(
    admin_client, payer, merchant, issue_agreement
):
    agreement, token = issue_agreement(payer, merchant)

    response = admin_action(admin_client, "revoke_selected", agreement)

    assert response.status_code == 200 and b"revoked at" in response.content
    agreement.refresh_from_db()
    assert (
        agreement.revoked_by == "admin:admin" and agreement.revoked_at is not None
    )  # pytest-django's superuser
    assert refused(token, payer, merchant) == "agreement_revoked"


def test_admin_reissues_shows_the_new_token_once_and_the_old_one_is_refused(
    admin_client, payer, merchant, issue_agreement
):
    agreement, old = issue_agreement(payer, merchant)

    response = admin_action(admin_client, "reissue_token", agreement)

    agreement.refresh_from_db()
    assert agreement.token_issued_by == "admin:admin"
    [new] = re.findall(rf"ppt_{agreement.token_prefix}_[A-Za-z0-9_-]+", response.content.decode())
    assert check(new, payer, merchant).pk == agreement.pk
    assert (
        "no-store" in response["Cache-Control"]
    )  # shown on this page only: not cached, not in a message
    assert new not in str(response.cookies) and new not in str(dict(admin_client.session))
    assert refused(old, payer, merchant) == "payer_token_mismatch"
    page = admin_client.get(
        reverse("admin:core_payeragreement_change", args=[agreement.pk])
    ).content
    assert (
        new.encode() not in page and b'name="_save"' not in page
    )  # a view page: nothing to save, no token


def test_a_view_only_user_sees_agreements_but_cannot_revoke_or_reissue(
    viewer, payer, merchant, issue_agreement
):
    agreement, token = issue_agreement(payer, merchant)
    prefix = agreement.token_prefix

    listing = viewer.get(reverse(CHANGELIST))
    for action in ("revoke_selected", "reissue_token"):
        admin_action(viewer, action, agreement)

    assert listing.status_code == 200 and b"revoke_selected" not in listing.content
    agreement.refresh_from_db()
    assert (agreement.revoked_at, agreement.token_prefix) == (None, prefix)
    assert check(token, payer, merchant) == agreement


def test_the_admin_list_searches_by_id_or_name(admin_client, payer, merchant, issue_agreement):
    issue_agreement(payer, merchant)

    found = {
        term: admin_client.get(reverse(CHANGELIST), {"q": term})
        for term in (str(payer.pk), payer.name, "nobody")
    }

    assert {term: r.status_code for term, r in found.items()} == dict.fromkeys(found, 200)
    assert [str(payer) in r.content.decode() for r in found.values()] == [True, True, False]
