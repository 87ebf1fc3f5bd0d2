import re
import uuid

import pytest
from django.db import transaction

from accounting.models import Account, AccountCode, Voucher, VoucherLine
from accounting.services import (
    InvalidVoucher,
    UnbalancedVoucher,
    UnknownAccount,
    chart_of_accounts_seed,
    voucher_book,
    voucher_book_order_paid,
    voucher_book_wallet_credited,
)
from paysys.contracts import OrderPaid
from paysys.core.money import fee_for
from tests.accounting.factories import order_paid_payload, wallet_credited_payload
from tests.concurrency import run_at_once

pytestmark = pytest.mark.django_db(databases="__all__")


def lines_of(voucher: Voucher) -> list[tuple[str, int, int]]:
    return list(
        VoucherLine.objects.using("accounting")
        .filter(voucher=voucher)
        .order_by("account__code")
        .values_list("account__code", "debit", "credit")
    )


def nothing_booked() -> bool:
    return (
        not Voucher.objects.using("accounting").exists()
        and not VoucherLine.objects.using("accounting").exists()
    )


# --- order.paid ---------------------------------------------------------------------------------


def test_order_paid_debits_bank_clearing_and_credits_merchant_and_fee():
    assert fee_for(1234, 60) == 7
    payload = order_paid_payload(amount=1234, fee_rate_bp=60)
    message_id = uuid.uuid4()

    voucher, created = voucher_book_order_paid(payload, message_id=message_id)

    assert created is True
    assert voucher.source == f"{OrderPaid.TOPIC}:{payload['out_trade_no']}"
    assert voucher.currency == "CNY"
    assert voucher.message_id == message_id
    assert payload["out_trade_no"] in voucher.description
    assert lines_of(voucher) == [("1002", 1234, 0), ("2202", 0, 1227), ("6001", 0, 7)]


def test_order_paid_takes_the_fee_from_the_payload_not_a_recomputation():
    payload = order_paid_payload(amount=1000, fee=13)  # whatever orders decided, accounting books

    voucher, _ = voucher_book_order_paid(payload)

    assert lines_of(voucher) == [("1002", 1000, 0), ("2202", 0, 987), ("6001", 0, 13)]


def test_order_paid_without_fee_books_two_lines():
    payload = order_paid_payload(amount=500, fee_rate_bp=0)
    assert payload["fee"] == 0

    voucher, _ = voucher_book_order_paid(payload)

    assert lines_of(voucher) == [("1002", 500, 0), ("2202", 0, 500)]


def test_balance_payment_debits_payer_wallets_instead_of_bank_clearing():
    payload = order_paid_payload(
        amount=1234, fee_rate_bp=60, method="balance", bank_trade_no=None, points_awarded=12
    )

    voucher, created = voucher_book_order_paid(payload)

    assert created is True
    assert lines_of(voucher) == [("2202", 0, 1227), ("2241", 1234, 0), ("6001", 0, 7)]
    assert "wallet" in voucher.description


def test_order_paid_with_an_unknown_method_is_refused_and_nothing_is_written():
    with pytest.raises(InvalidVoucher, match="method"):
        voucher_book_order_paid(order_paid_payload(method="cash"))
    assert nothing_booked()


def test_wallet_credited_debits_bank_clearing_and_credits_payer_wallets_once():
    payload = wallet_credited_payload(amount=50_000)

    first, created = voucher_book_wallet_credited(payload)
    again, created_again = voucher_book_wallet_credited(payload)

    assert (created, created_again, again.pk) == (True, False, first.pk)
    assert first.source == f"wallet.credited:{payload['entry_id']}"
    assert lines_of(first) == [("1002", 50_000, 0), ("2241", 0, 50_000)]
    assert payload["reason"] in first.description and payload["credited_by"] in first.description


def test_wallet_credited_with_a_bad_amount_is_refused():
    with pytest.raises(InvalidVoucher):
        voucher_book_wallet_credited(wallet_credited_payload(amount=0))
    assert nothing_booked()


def test_order_paid_twice_books_one_voucher():
    payload = order_paid_payload()

    first, first_created = voucher_book_order_paid(payload)
    second, second_created = voucher_book_order_paid(payload)

    assert (first_created, second_created) == (True, False)
    assert second.pk == first.pk
    assert Voucher.objects.using("accounting").count() == 1
    assert VoucherLine.objects.using("accounting").count() == 3


@pytest.mark.parametrize(
    "overrides",
    [
        {"fee": 2000, "amount": 1000},
        {"fee": -1},
        {"amount": 0, "fee": 0},
        {"amount": "1234", "fee": 7},
        {"fee": 1.5},
    ],
    ids=["fee-above-amount", "negative-fee", "zero-amount", "string-amount", "float-fee"],
)
def test_order_paid_with_impossible_amounts_is_refused(overrides):
    with pytest.raises(InvalidVoucher):
        voucher_book_order_paid(order_paid_payload(**overrides))

    assert nothing_booked()


def test_order_paid_without_amount_is_refused():
    payload = order_paid_payload()
    del payload["amount"]

    with pytest.raises(InvalidVoucher, match="amount"):
        voucher_book_order_paid(payload)


# --- voucher_book -------------------------------------------------------------------------------


def test_unbalanced_voucher_is_refused_before_the_database_is_touched(django_assert_num_queries):
    """Σ debit = Σ credit is checked first; the sum in the database only backs it up."""
    with (
        django_assert_num_queries(0, using="accounting"),
        pytest.raises(UnbalancedVoucher) as refused,
    ):
        voucher_book(
            source="test:unbalanced", currency="CNY", lines=[("1002", 100, 0), ("2202", 0, 99)]
        )

    assert (
        str(refused.value) == "voucher 'test:unbalanced' does not balance: debits 100, credits 99"
    )
    assert nothing_booked()


def test_unbalanced_voucher_on_unknown_accounts_is_refused_as_unbalanced():
    with pytest.raises(UnbalancedVoucher):
        voucher_book(
            source="test:unbalanced", currency="CNY", lines=[("9998", 100, 0), ("9999", 0, 99)]
        )

    assert nothing_booked()


def test_empty_voucher_is_refused_before_the_database_is_touched(django_assert_num_queries):
    with (
        django_assert_num_queries(0, using="accounting"),
        pytest.raises(UnbalancedVoucher, match="debits 0, credits 0"),
    ):
        voucher_book(source="test:empty", currency="CNY", lines=[])

    assert nothing_booked()


def test_the_smallest_voucher_books():
    """One fen each side: the lower bounds (> 0) are not off by one."""
    voucher, created = voucher_book(
        source="test:one-fen", currency="CNY", lines=[("1002", 1, 0), ("2202", 0, 1)]
    )

    assert created is True
    assert lines_of(voucher) == [("1002", 1, 0), ("2202", 0, 1)]
    assert voucher.description == ""


@pytest.mark.parametrize(
    "line",
    [
        ("2202", 0, 0),
        ("2202", 5, 5),
        ("2202", -5, 0),
        ("2202", 0, -5),
        ("2202", -5, 10),
        ("2202", 10, -5),
        ("2202", True, 0),
        ("2202", 5),
        None,
    ],
    ids=[
        "zero",
        "both-sides",
        "negative-debit",
        "negative-credit",
        "negative-debit-positive-credit",
        "positive-debit-negative-credit",
        "bool",
        "short",
        "none",
    ],
)
def test_line_that_is_not_one_positive_side_is_refused(line):
    with pytest.raises(
        InvalidVoucher,
        match=r"^a line (is|debits or credits a positive amount, not both).*"
        + re.escape(repr(line))
        + "$",
    ):
        voucher_book(source="test:bad-line", currency="CNY", lines=[("1002", 5, 0), line])

    assert nothing_booked()


def test_unknown_account_is_refused_and_nothing_is_written():
    with pytest.raises(
        UnknownAccount, match=r"^voucher 'test:unknown' uses unknown account\(s\): 9998, 9999$"
    ):
        voucher_book(
            source="test:unknown",
            currency="CNY",
            lines=[("1002", 5, 0), ("9999", 0, 3), ("9998", 0, 2)],
        )

    assert nothing_booked()


@pytest.mark.parametrize(
    "source,currency,error",
    [
        ("", "CNY", "source must be 1..128 characters, got ''"),
        ("x" * 129, "CNY", "source must be 1..128 characters, got 'xxx"),
        ("test:cur", "cny", "currency must be a 3-letter upper-case code, got 'cny'"),
        ("test:cur", "", "currency must be a 3-letter upper-case code, got ''"),
    ],
)
def test_bad_source_or_currency_is_refused(source, currency, error):
    with pytest.raises(InvalidVoucher, match="^" + re.escape(error)):
        voucher_book(source=source, currency=currency, lines=[("1002", 5, 0), ("2202", 0, 5)])

    assert nothing_booked()


def test_a_source_of_the_longest_length_books():
    voucher, _ = voucher_book(
        source="x" * 128, currency="CNY", lines=[("1002", 5, 0), ("2202", 0, 5)]
    )

    assert voucher.source == "x" * 128


def test_voucher_check_runs_inside_the_transaction_before_commit(monkeypatch):
    """Given lines that pass validation but are written wrongly, the in-transaction sum catches it
    and the voucher rolls back: an after-commit check would be too late."""
    from accounting import services

    real_insert_objects = services.insert_objects

    def insert_objects_losing_the_last_line(alias, objs, **kwargs):
        if objs and isinstance(objs[0], VoucherLine):
            objs = objs[:-1]
        return real_insert_objects(alias, objs, **kwargs)

    monkeypatch.setattr(services, "insert_objects", insert_objects_losing_the_last_line)
    with pytest.raises(UnbalancedVoucher, match="as written"):
        voucher_book(
            source="test:lost-line", currency="CNY", lines=[("1002", 5, 0), ("2202", 0, 5)]
        )

    monkeypatch.undo()
    assert nothing_booked()


def test_duplicate_does_not_break_the_callers_transaction():
    lines = [("1002", 5, 0), ("2202", 0, 5)]
    voucher_book(source="test:dup", currency="CNY", lines=lines)

    with transaction.atomic(using="accounting"):
        _, created = voucher_book(source="test:dup", currency="CNY", lines=lines)
        # the caller's transaction is still usable after the swallowed IntegrityError
        voucher_book(source="test:after-dup", currency="CNY", lines=lines)

    assert created is False
    assert set(Voucher.objects.using("accounting").values_list("source", flat=True)) == {
        "test:dup",
        "test:after-dup",
    }


def test_duplicate_with_different_lines_keeps_the_first_and_logs(caplog):
    voucher_book(source="test:conflict", currency="CNY", lines=[("1002", 5, 0), ("2202", 0, 5)])

    voucher, created = voucher_book(
        source="test:conflict", currency="CNY", lines=[("1002", 6, 0), ("2202", 0, 6)]
    )

    assert created is False
    assert lines_of(voucher) == [("1002", 5, 0), ("2202", 0, 5)]
    assert [r.getMessage() for r in caplog.records if r.name == "accounting.services"] == [
        "voucher test:conflict already booked with CNY [('1002', 5, 0), ('2202', 0, 5)]; "
        "a replay asked for CNY [('1002', 6, 0), ('2202', 0, 6)] (kept the first)"
    ]


def test_duplicate_in_another_currency_logs_it(caplog):
    lines = [("1002", 5, 0), ("2202", 0, 5)]
    voucher_book(source="test:currency", currency="CNY", lines=lines)

    voucher_book(source="test:currency", currency="USD", lines=lines)

    assert "already booked with CNY" in caplog.text and "a replay asked for USD" in caplog.text


def test_identical_replay_logs_nothing(caplog):
    lines = [("2202", 0, 5), ("1002", 5, 0)]  # in any order
    voucher_book(source="test:same", currency="CNY", lines=lines)

    voucher, created = voucher_book(source="test:same", currency="CNY", lines=list(reversed(lines)))

    assert created is False and voucher.source == "test:same"
    assert not [r for r in caplog.records if r.name == "accounting.services"]


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_concurrent_bookings_of_one_source_make_one_voucher():
    """Two workers book the same event at once: the unique source admits one, the other gets it back."""
    payload = order_paid_payload()
    results = run_at_once(
        *[lambda: voucher_book_order_paid(payload)] * 2
    )  # raises if either raised

    assert sorted(created for _, created in results) == [False, True]
    assert len({voucher.pk for voucher, _ in results}) == 1
    assert Voucher.objects.using("accounting").count() == 1
    assert VoucherLine.objects.using("accounting").count() == 3


def test_the_services_name_their_database_and_need_no_router(settings, caplog):
    """Every read and write says ``using="accounting"``: the service does not lean on the router
    (which would send an unrouted query to the default database, where no voucher table is)."""
    settings.DATABASE_ROUTERS = []
    Account.objects.using("accounting").filter(code=AccountCode.FEE_INCOME).delete()
    payload = order_paid_payload()

    assert chart_of_accounts_seed() == 1
    voucher, created = voucher_book_order_paid(payload)
    again, replayed = voucher_book_order_paid({**payload, "fee": 0})

    assert (created, replayed, again.pk) == (True, False, voucher.pk)
    assert lines_of(voucher) == [("1002", 1234, 0), ("2202", 0, 1227), ("6001", 0, 7)]
    assert "already booked" in caplog.text
