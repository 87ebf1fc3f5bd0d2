"""Copies of one signed notify arriving at once (a bank resending, or anyone replaying a signed
body): each is answered as a duplicate, none is a 500, the payment is stored and published once.

On MariaDB the copies meet on the stored row (each failed insert holds a shared lock on it, each
counts the duplicate with an exclusive one) and InnoDB picks deadlock victims: their transactions
run again."""

from __future__ import annotations

import pytest

from paysys.gateway.models import BankNotify, BankNotifyReceipt
from tests.concurrency import run_at_once
from tests.gateway.conftest import published
from tests.gateway.test_notify import encode, notify_body, post

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


def test_twenty_copies_of_a_stored_notify_at_once_are_twenty_duplicates():
    raw = encode(notify_body())
    assert post(raw).status_code == 200

    answers = run_at_once(*[lambda: post(raw) for _ in range(20)], timeout=60)

    assert [a.status_code for a in answers] == [200] * 20, [a.content[:200] for a in answers]
    assert all(a.json()["duplicate"] for a in answers)
    notify = BankNotify.objects.get()
    assert notify.duplicates == 20
    assert published() == 1
    assert BankNotifyReceipt.objects.filter(state="PROCESSED").count() == 21


def test_copies_of_a_new_notify_at_once_store_it_once():
    raw = encode(notify_body(bank_trade_no="B-FIRST-TOGETHER"))

    answers = run_at_once(*[lambda: post(raw) for _ in range(10)], timeout=60)

    assert [a.status_code for a in answers] == [200] * 10, [a.content[:200] for a in answers]
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 9
    assert BankNotify.objects.get().duplicates == 9
    assert published() == 1
