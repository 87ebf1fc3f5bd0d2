import pytest

from accounting.models import Voucher, VoucherLine
from accounting.selectors import trial_balance, trial_balances, unbalanced_vouchers, voucher_get
from accounting.services import voucher_book, voucher_book_order_paid
from paysys.contracts import OrderPaid
from tests.accounting.factories import order_paid_payload

pytestmark = pytest.mark.django_db(databases="__all__")


def by_code(tb):
    return {row.account.code: (row.debit, row.credit, row.balance) for row in tb.rows}


def test_trial_balance_of_an_empty_ledger_lists_every_account_at_zero():
    tb = trial_balance()

    assert by_code(tb) == {code: (0, 0, 0) for code in ["1002", "2202", "2241", "2242", "6001"]}
    assert (tb.total_debit, tb.total_credit, tb.balanced) == (0, 0, True)


def test_trial_balance_sums_vouchers_and_balances_on_the_normal_side():
    voucher_book_order_paid(order_paid_payload(amount=1234, fee_rate_bp=60))  # fee 7
    voucher_book_order_paid(order_paid_payload(amount=10_000, fee_rate_bp=60))  # fee 60

    tb = trial_balance()

    rows = by_code(tb)
    assert rows["1002"] == (11_234, 0, 11_234)  # asset: debit - credit
    assert rows["2202"] == (0, 11_167, 11_167)  # liability: credit - debit
    assert rows["6001"] == (0, 67, 67)
    assert tb.total_debit == tb.total_credit == 11_234
    assert tb.balanced


def test_trial_balance_per_currency():
    voucher_book_order_paid(order_paid_payload(amount=1000, fee_rate_bp=0))
    voucher_book_order_paid(order_paid_payload(amount=300, fee_rate_bp=0, currency="USD"))

    balances = {tb.currency: tb for tb in trial_balances()}

    assert sorted(balances) == ["CNY", "USD"]
    assert balances["CNY"].total_debit == balances["CNY"].total_credit == 1000
    assert balances["USD"].total_debit == balances["USD"].total_credit == 300
    assert trial_balance().total_debit == 1300


def test_trial_balance_reports_an_imbalance_written_around_the_service():
    voucher, _ = voucher_book(
        source="test:tampered", currency="CNY", lines=[("1002", 5, 0), ("2202", 0, 5)]
    )
    VoucherLine.objects.using("accounting").filter(voucher=voucher, credit=5).update(credit=4)

    tb = trial_balance(currency="CNY")

    assert (tb.balanced, tb.difference) == (False, 1)
    assert unbalanced_vouchers() == [(voucher, 5, 4)]


def test_unbalanced_vouchers_lists_a_voucher_without_lines():
    empty = Voucher.objects.using("accounting").create(source="test:no-lines", currency="CNY")
    voucher_book(source="test:fine", currency="CNY", lines=[("1002", 5, 0), ("2202", 0, 5)])

    assert unbalanced_vouchers() == [(empty, 0, 0)]


def test_voucher_get_by_source():
    payload = order_paid_payload()
    voucher, _ = voucher_book_order_paid(payload)

    assert voucher_get(source=f"{OrderPaid.TOPIC}:{payload['out_trade_no']}") == voucher
    assert voucher_get(source=f"{OrderPaid.TOPIC}:nope") is None
