import pytest

from accounting.services import chart_of_accounts_seed


@pytest.fixture(autouse=True)
def chart_of_accounts(request):
    """Migration 0002 seeds the chart, but a transactional test's flush removes those rows, and
    with --reuse-db the flushed state outlives the session: restore what is missing."""
    if request.node.get_closest_marker("django_db"):
        chart_of_accounts_seed()
