import pytest


@pytest.fixture
def bank(live_server, settings):
    """The bank simulator, the gateway and the refund notify intake, served over real HTTP."""
    settings.BANK_QUERY_URL = live_server.url + "/sandbox/bank/payments/"
    settings.BANK_NOTIFY_URL = live_server.url + "/gateway/bank/notify"
    return live_server
