"""A resend that InnoDB picks as a deadlock's victim is run again, not answered 503: the
delivery pass's claim locks notification rows from the other end, so the two can deadlock."""

import threading

import pytest
from django.db import connections
from django.utils import timezone

from notifications.models import Notification
from notifications.services import notifications_recover_failed
from tests.statuses import force_status

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


@pytest.fixture
def mariadb():
    if connections["notifications"].vendor != "mysql":
        pytest.skip("a deadlock needs InnoDB (the full stack)")


def test_a_resend_chosen_as_deadlock_victim_is_run_again(mariadb, make_merchant, notify):
    merchant, _ = make_merchant()
    first, second, *others = [notify(merchant) for _ in range(12)]
    force_status(
        Notification.objects.filter(pk__in=[first.pk, second.pk]),
        status="FAILED",
        next_attempt_at=None,
    )
    holder_has_second, resend_waits = threading.Event(), threading.Event()
    outcome = {}

    def other_transaction():
        """Writes many rows (so InnoDB rolls back the lighter resend, not this), holds the
        second record, then asks for the first, which the resend holds by then."""
        connection = connections.create_connection("notifications")
        try:
            with connection.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute(
                    "UPDATE notifications_notification SET updated_at = updated_at + INTERVAL 1 SECOND WHERE id IN (%s)"
                    % ",".join(str(o.pk) for o in others)
                )
                cursor.execute(
                    "SELECT id FROM notifications_notification WHERE id = %s FOR UPDATE",
                    [second.pk],
                )
                holder_has_second.set()
                resend_waits.wait(10)
                cursor.execute(
                    "SELECT id FROM notifications_notification WHERE id = %s FOR UPDATE",
                    [first.pk],
                )
                cursor.execute("COMMIT")
                outcome["holder"] = "committed"
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["holder"] = repr(exc)
        finally:
            connection.close()

    holder = threading.Thread(target=other_transaction)
    holder.start()
    assert holder_has_second.wait(10)
    # the resend locks the first record, then waits for the second; the holder then asks for
    # the first: a deadlock, whose victim is the resend (it changed fewer rows)
    threading.Timer(0.5, resend_waits.set).start()
    resent = notifications_recover_failed(
        merchant_id=merchant.pk, since=timezone.now() - timezone.timedelta(hours=1)
    )
    holder.join(15)

    assert outcome["holder"] == "committed"
    assert resent == 2
    assert set(
        Notification.objects.filter(pk__in=[first.pk, second.pk]).values_list("status", flat=True)
    ) == {"PENDING"}
