"""``manage.py credit_wallet`` and ``create_payer --json`` (payer tokens)."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import FundEntry
from paysys.contracts import WalletCredited
from paysys.core.models import Payer
from paysys.core.services import payer_create_with_token, payer_token_check, payer_token_issue
from paysys.messaging.models import Message
from tests.accounts.helpers import account

pytestmark = pytest.mark.django_db(databases="__all__")


def test_credit_wallet_posts_the_credit_with_who_and_why_and_tells_accounting(payer):
    out = StringIO()

    call_command("credit_wallet", "--payer", str(payer.pk), "--amount", "5000", "--reason", "refund of ticket 42",
                 "--json", stdout=out)

    data = json.loads(out.getvalue())
    assert data["balance"] == 5000 and data["amount"] == 5000 and data["currency"] == "CNY"
    entry = FundEntry.objects.using("funds").get(pk=data["entry_id"])
    assert (entry.kind, entry.direction, entry.amount, entry.balance_after) == ("posted", "credit", 5000, 5000)
    assert entry.reason == "refund of ticket 42"
    assert entry.created_by.startswith("command:")
    assert entry.xid is None
    wallet = account("payer", payer.pk)
    assert wallet.balance == 5000 and wallet.available == 5000
    # the message is in the funds outbox, written in the same transaction as the entry
    [message] = Message.objects.using("funds").filter(topic=WalletCredited.TOPIC)
    event = WalletCredited.from_payload(message.payload)
    assert (event.entry_id, event.payer_id, event.amount, event.currency) == (entry.pk, payer.pk, 5000, "CNY")
    assert (event.reason, event.credited_by) == ("refund of ticket 42", entry.created_by)


def test_credit_wallet_twice_adds_up(payer):
    call_command("credit_wallet", "--payer", str(payer.pk), "--amount", "100", "--reason", "a", stdout=StringIO())
    out = StringIO()

    call_command("credit_wallet", "--payer", str(payer.pk), "--amount", "250", "--reason", "b", stdout=out)

    assert "balance 350" in out.getvalue()
    assert account("payer", payer.pk).balance == 350


@pytest.mark.parametrize("args,message", [
    (["--amount", "0", "--reason", "x"], "amount"),
    (["--amount", "-5", "--reason", "x"], "amount"),
    (["--amount", "100", "--reason", "   "], "reason"),
    (["--amount", "100", "--reason", "x", "--currency", "USD"], "currency"),
])
def test_credit_wallet_refuses_bad_input_and_writes_nothing(payer, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("credit_wallet", "--payer", str(payer.pk), *args, stdout=StringIO())

    assert not FundEntry.objects.using("funds").exists()
    assert not Message.objects.using("funds").exists()


def test_credit_wallet_of_an_unknown_payer_is_refused(db):
    with pytest.raises(CommandError, match="no payer #999"):
        call_command("credit_wallet", "--payer", "999", "--amount", "100", "--reason", "x", stdout=StringIO())

    assert not FundEntry.objects.using("funds").exists()


def test_create_payer_json_prints_a_payer_token_stored_hashed():
    out = StringIO()

    call_command("create_payer", "--name", "Alice", "--json", stdout=out)

    data = json.loads(out.getvalue())
    assert set(data) == {"payer_id", "payer_token"}
    payer = Payer.objects.get(pk=data["payer_id"])
    assert payer.payer_token_hash and data["payer_token"] not in payer.payer_token_hash
    assert payer_token_check(payer.pk, data["payer_token"]) is True


def test_payer_token_check_refuses_everything_but_the_payers_own_token():
    alice, alice_token = payer_create_with_token(name="Alice")
    bob, bob_token = payer_create_with_token(name="Bob")

    assert payer_token_check(alice.pk, alice_token) and payer_token_check(bob.pk, bob_token)
    assert not payer_token_check(alice.pk, bob_token)
    assert not payer_token_check(alice.pk, "")
    assert not payer_token_check(alice.pk, alice_token + "x")
    assert not payer_token_check(999_999, alice_token)
    assert not payer_token_check(alice.pk, None)
    assert not payer_token_check(str(alice.pk), alice_token)


def test_a_payer_without_a_token_gives_no_consent(payer):
    assert payer.payer_token_hash == ""
    assert not payer_token_check(payer.pk, "")
    assert not payer_token_check(payer.pk, "ppt_anything")


def test_issuing_a_new_token_revokes_the_old_one(payer):
    old = payer_token_issue(payer=payer)
    new = payer_token_issue(payer=payer)

    assert not payer_token_check(payer.pk, old)
    assert payer_token_check(payer.pk, new)


def test_credit_wallet_with_a_request_key_credits_once(payer):
    args = ["--payer", str(payer.pk), "--amount", "300", "--reason", "ticket 7", "--request-key", "ticket-7"]
    call_command("credit_wallet", *args, stdout=StringIO())
    call_command("credit_wallet", *args, stdout=StringIO())

    assert account("payer", payer.pk).balance == 300
    assert Message.objects.using("funds").filter(topic=WalletCredited.TOPIC).count() == 1
    with pytest.raises(CommandError, match="request key was used for another credit"):
        call_command("credit_wallet", "--payer", str(payer.pk), "--amount", "301", "--reason", "x",
                     "--request-key", "ticket-7", stdout=StringIO())
