import pytest
from django.urls import reverse

from accounting.models import Voucher
from accounting.services import voucher_book_order_paid
from tests.accounting.factories import order_paid_payload

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-not-used")
    client.force_login(user)
    return client


@pytest.fixture
def booked():
    voucher, _ = voucher_book_order_paid(order_paid_payload(amount=1234, fee_rate_bp=60))
    voucher_book_order_paid(order_paid_payload(amount=500, fee_rate_bp=0))
    return voucher


def test_trial_balance_page_shows_totals_and_that_they_agree(admin_client, booked):
    response = admin_client.get(reverse("admin:accounting_voucher_trial_balance"))

    assert response.status_code == 200
    body = response.content.decode()
    assert "Trial balance" in body
    assert "Debits equal credits: 1734 = 1734." in body
    assert '<th class="total-debit" style="text-align: right;">1734</th>' in body
    assert '<th class="total-credit" style="text-align: right;">1734</th>' in body
    assert "Fee income" in body


def test_trial_balance_page_of_an_empty_ledger(admin_client):
    response = admin_client.get(reverse("admin:accounting_voucher_trial_balance"))

    assert response.status_code == 200
    assert "Debits equal credits: 0 = 0." in response.content.decode()


def test_trial_balance_page_needs_staff(client):
    response = client.get(reverse("admin:accounting_voucher_trial_balance"))

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_voucher_changelist_links_to_the_trial_balance(admin_client, booked):
    response = admin_client.get(
        reverse("admin:accounting_voucher_changelist"), {"q": booked.source}
    )

    assert response.status_code == 200
    body = response.content.decode()
    assert reverse("admin:accounting_voucher_trial_balance") in body
    assert booked.source in body


def test_voucher_is_read_only_with_its_lines(admin_client, booked):
    response = admin_client.get(reverse("admin:accounting_voucher_change", args=[booked.pk]))

    assert response.status_code == 200
    body = response.content.decode()
    assert "1227" in body and "Merchant payable" in body
    assert 'name="_save"' not in body
    assert admin_client.get(reverse("admin:accounting_voucher_add")).status_code == 403
    assert (
        admin_client.post(reverse("admin:accounting_voucher_delete", args=[booked.pk])).status_code
        == 403
    )
    assert Voucher.objects.using("accounting").filter(pk=booked.pk).exists()


def test_voucher_search_finds_the_merchant_order_number(admin_client, booked):
    other = Voucher.objects.using("accounting").exclude(pk=booked.pk).get()
    merchant_order_no = booked.description.split(" order ")[1].split(",")[0]

    body = admin_client.get(
        reverse("admin:accounting_voucher_changelist"), {"q": merchant_order_no}
    ).content.decode()

    assert booked.source in body and other.source not in body


def test_voucher_lines_are_not_captioned_with_their_own_label(admin_client, booked):
    # Django's tabular inline puts each line's name (account and amount again) above its row
    body = admin_client.get(
        reverse("admin:accounting_voucher_change", args=[booked.pk])
    ).content.decode()

    assert "accounting/voucher_admin.css" in body


def test_account_changelist_lists_the_chart(admin_client):
    response = admin_client.get(reverse("admin:accounting_account_changelist"))

    assert response.status_code == 200
    assert "Bank clearing" in response.content.decode()
