"""The "how a merchant verifies a notification" snippet (docs/api.md, once the README's), run against
what paysys sends."""

from __future__ import annotations

import pytest
from django.conf import settings
from standardwebhooks.webhooks import WebhookVerificationError

from notifications.delivery import deliver_due

pytestmark = pytest.mark.django_db(databases="__all__")

# exactly the five lines of docs/api.md (kept identical: the last test checks the page carries them)
SNIPPET = """\
from standardwebhooks.webhooks import Webhook, WebhookVerificationError  # pip install standardwebhooks
def on_paysys_notification(body: bytes, headers: dict, secret: str) -> dict:  # your notify URL's POST handler
    # secret: the whsec_... paysys gave you (create_merchant, rotate_webhook_secret)
    return Webhook(secret).verify(body, headers)  # WebhookVerificationError: answer 400, paysys retries
# then process it once per headers["webhook-id"] (retries and resends repeat it) and answer 2xx
"""


def run_snippet():
    namespace: dict = {}
    exec(SNIPPET, namespace)
    return namespace["on_paysys_notification"]


def test_the_snippet_accepts_what_paysys_sends_and_rejects_a_tampered_body(
    merchant, notify, receiver
):
    record = notify(merchant)
    deliver_due()
    [request] = receiver.requests()
    on_paysys_notification = run_snippet()

    event = on_paysys_notification(request.body.encode(), request.headers, merchant.webhook_secret)

    assert event["type"] == "order.paid" and event["data"]["out_trade_no"] == record.out_trade_no
    with pytest.raises(WebhookVerificationError):
        on_paysys_notification(
            request.body.replace("1234", "1").encode(), request.headers, merchant.webhook_secret
        )


def test_the_snippet_is_five_lines_and_the_api_page_carries_it_verbatim():
    assert len(SNIPPET.splitlines()) == 5
    page = (
        settings.BASE_DIR / "docs" / "api.md"
    ).read_text()  # moved there from the README (issue 17)
    assert "on_paysys_notification" in page
    assert SNIPPET in page
