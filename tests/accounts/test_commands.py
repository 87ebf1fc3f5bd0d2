"""``manage.py credit_wallet`` (``create_payer`` and payer agreements: tests/core/test_agreements.py)."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import FundEntry
from paysys.contracts import WalletCredited
from paysys.messaging.models import Message
from tests.accounts.helpers import account

pytestmark = pytest.mark.django_db(databases="__all__")


def test_credit_wallet_posts_the_credit_with_who_and_why_and_tells_accounting(payer):
    out = StringIO()

    call_command(
        "credit_wallet",
        "--payer",
        str(payer.pk),
        "--amount",
        "5000",
        "--reason",
        "refund of ticket 42",
        "--json",
        stdout=out,
    )

    data = json.loads(out.getvalue())
    assert data["balance"] == 5000 and data["amount"] == 5000 and data["currency"] == "CNY"
    entry = FundEntry.objects.using("funds").get(pk=data["entry_id"])
    assert (entry.kind, entry.direction, entry.amount, entry.balance_after) == (
        "posted",
        "credit",
        5000,
        5000,
    )
    assert entry.reason == "refund of ticket 42"
    assert entry.created_by.startswith("command:")
    assert entry.xid is None
    wallet = account("payer", payer.pk)
    assert wallet.balance == 5000 and wallet.available == 5000
    # the message is in the funds outbox, written in the same transaction as the entry
    [message] = Message.objects.using("funds").filter(topic=WalletCredited.TOPIC)
    event = WalletCredited.from_payload(message.payload)
    assert (event.entry_id, event.payer_id, event.amount, event.currency) == (
        entry.pk,
        payer.pk,
        5000,
        "CNY",
    )
    assert (event.reason, event.credited_by) == ("refund of ticket 42", entry.created_by)


def test_credit_wallet_twice_adds_up(payer):
    call_command(
        "credit_wallet",
        "--payer",
        str(payer.pk),
        "--amount",
        "100",
        "--reason",
        "a",
        stdout=StringIO(),
    )
    out = StringIO()

    call_command(
        "credit_wallet", "--payer", str(payer.pk), "--amount", "250", "--reason", "b", stdout=out
    )

    assert "balance 350" in out.getvalue()
    assert account("payer", payer.pk).balance == 350


@pytest.mark.parametrize(
    "args,message",
    [
        (["--amount", "0", "--reason", "x"], "amount"),
        (["--amount", "-5", "--reason", "x"], "amount"),
        (["--amount", "100", "--reason", "   "], "reason"),
        (["--amount", "100", "--reason", "x", "--currency", "USD"], "currency"),
    ],
)
def test_credit_wallet_refuses_bad_input_and_writes_nothing(payer, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("credit_wallet", "--payer", str(payer.pk), *args, stdout=StringIO())

    assert not FundEntry.objects.using("funds").exists()
    assert not Message.objects.using("funds").exists()


def test_credit_wallet_of_an_unknown_payer_is_refused(db):
    with pytest.raises(CommandError, match="no payer #999"):
        call_command(
            "credit_wallet", "--payer", "999", "--amount", "100", "--reason", "x", stdout=StringIO()
        )

    assert not FundEntry.objects.using("funds").exists()
