"""Orders fixtures: the bank simulator and the gateway over real HTTP, paying with the notify held."""

from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client


@pytest.fixture
def bank(live_server, settings):
    """The bank simulator and the gateway, served over real HTTP."""
    settings.BANK_QUERY_URL = live_server.url + "/sandbox/bank/payments/"
    settings.BANK_NOTIFY_URL = live_server.url + "/gateway/bank/notify"
    return live_server


def pay_with_notify_held(pay_url: str) -> str:
    """The payer pays, but the bank's notify is held back: as if it were lost on the way.
    Returns the bank trade number."""
    response = Client().post(
        urlsplit(pay_url).path, {"hold": True}, content_type="application/json",
        headers={"Authorization": f"Bearer {settings.SANDBOX_TOKEN}"},
    )
    assert response.status_code == 200, response.content
    return response.json()["bank_trade_no"]


@pytest.fixture
def make_payer_with_token(db, merchant):
    """``make() -> (payer, payer_token)``: a payer with an agreement with ``merchant``."""
    from paysys.core.services import payer_create_with_agreement

    count = iter(range(1, 10_000))

    def make():
        payer, _, token = payer_create_with_agreement(name=f"token-payer-{next(count)}", merchant_id=merchant.pk,
                                                      issued_by="command:test")
        return payer, token

    return make
