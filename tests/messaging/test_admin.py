"""The message admin: every service's outbox, read-only, with resends as the only writes."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import OperationalError, connections
from django.utils import timezone

from paysys.messaging import kicks, outbox, registry
from paysys.messaging.models import Message
from tests.messaging.helpers import force_status

pytestmark = [pytest.mark.django_db(databases="__all__"), pytest.mark.usefixtures("kicked")]

Status = Message.Status
CHANGELIST = "/admin/messaging/message/"


@registry.consumer("test.topic", queue="accounting", name="accounting.test_admin")
def on_test_topic(message):
    pass


@pytest.fixture
def staff(django_user_model):
    """Staff who may look but not resend (view permission only)."""
    user = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_message"))
    return user


def add(
    alias: str,
    status: str = Status.SENDING,
    *,
    topic: str = "test.topic",
    queue: str = "accounting",
    send_count: int = 0,
    age: timedelta | None = None,
    last_error: str = "",
    **extra,
) -> Message:
    row = Message.objects.using(alias).create(
        topic=topic,
        consumer=f"{queue}.test_admin",
        queue=queue,
        payload={"n": 1, "text": "héllo"},
        status=status,
        send_count=send_count,
        last_error=last_error,
        **{"confirmed_at": timezone.now(), **extra},
    )
    if age is not None:
        Message.objects.using(alias).filter(pk=row.pk).update(created_at=timezone.now() - age)
    return row


def shown(response) -> set[str]:
    """message_ids listed in a changelist page."""
    assert response.status_code == 200, response.content[:500]
    return set(
        re.findall(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            response.content.decode(),
        )
    )


def ids(*rows: Message) -> set[str]:
    return {str(r.message_id) for r in rows}


def fresh(row: Message) -> Message:
    return Message.objects.using(row._state.db).get(pk=row.pk)


# --- changelist: one service at a time ----------------------------------------------------


def test_changelist_shows_the_chosen_services_messages(admin_client):
    core = add("default")
    in_orders = add("orders")
    in_funds = add("funds")

    assert shown(admin_client.get(CHANGELIST)) == ids(core)
    assert shown(admin_client.get(CHANGELIST, {"service": "orders"})) == ids(in_orders)
    assert shown(admin_client.get(CHANGELIST, {"service": "funds"})) == ids(in_funds)


def test_the_same_row_id_in_two_services_are_two_messages(admin_client):
    # row ids are per database and may coincide: the service carried in the URL decides
    in_orders, in_notifications = add("orders", id=9001), add("notifications", id=9001)

    orders_page = admin_client.get(
        f"{CHANGELIST}9001/change/", {"_changelist_filters": "service=orders"}
    )
    notifications_page = admin_client.get(f"{CHANGELIST}9001/change/", {"service": "notifications"})

    assert shown(orders_page) == ids(in_orders)
    assert shown(notifications_page) == ids(in_notifications)


def test_detail_of_a_row_missing_in_the_chosen_service_redirects(admin_client):
    row = add("orders")

    response = admin_client.get(
        f"{CHANGELIST}{row.pk + 1000}/change/", {"_changelist_filters": "service=orders"}
    )

    assert response.status_code == 302


def test_unknown_service_is_refused_not_a_crash(admin_client):
    response = admin_client.get(CHANGELIST, {"service": "nope"})

    assert response.status_code == 302
    assert "e=1" in response["Location"]


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"status__exact": "DEAD"}, {"dead-1", "dead-2"}),
        ({"dead": "yes"}, {"dead-1", "dead-2"}),
        ({"dead": "no"}, {"sending", "consumed", "old"}),
        ({"topic": "other.topic"}, {"consumed"}),
        ({"queue": "notifications"}, {"dead-2"}),
        ({"older_than": "1h"}, {"old"}),
        ({"older_than": "1m"}, {"old"}),
        ({"older_than": "1d"}, set()),
        ({"dead": "yes", "queue": "accounting"}, {"dead-1"}),
    ],
)
def test_filters(admin_client, params, expected):
    rows = {
        "sending": add("orders"),
        "consumed": add("orders", Status.CONSUMED, topic="other.topic"),
        "dead-1": add("orders", Status.DEAD),
        "dead-2": add("orders", Status.DEAD, queue="notifications"),
        "old": add("orders", age=timedelta(hours=2)),
    }
    add("default", Status.DEAD)  # another service: never listed here

    listed = shown(admin_client.get(CHANGELIST, {"service": "orders", **params}))

    assert listed == ids(*(rows[name] for name in expected))


def test_show_counts_counts_rows_of_the_chosen_service(admin_client):
    add("orders", Status.DEAD)
    add("orders")
    add("orders")
    add("default", Status.DEAD)

    page = admin_client.get(CHANGELIST, {"service": "orders", "_facets": "True"}).content.decode()

    assert re.search(r">Sending \(2\)<", page) and re.search(r">Dead \(1\)<", page)


def test_search_by_message_id(admin_client):
    wanted, other = add("orders"), add("orders")

    assert shown(
        admin_client.get(CHANGELIST, {"service": "orders", "q": str(wanted.message_id)})
    ) == ids(wanted)
    assert other


def test_changelist_links_keep_the_service_for_the_detail_page(admin_client):
    row = add("accounting")

    page = admin_client.get(CHANGELIST, {"service": "accounting"}).content.decode()

    assert f"{row.pk}/change/?_changelist_filters=service%3Daccounting" in page


def test_changelist_of_a_database_that_is_down_sends_to_the_dashboard(admin_client):
    def refuse(execute, sql, params, many, context):
        raise OperationalError("down")

    with connections["orders"].execute_wrapper(refuse):
        response = admin_client.get(CHANGELIST, {"service": "orders"})
        dashboard = admin_client.get(response["Location"])

    assert response.status_code == 302
    assert response["Location"].endswith("/dashboard/")
    assert "Database unavailable" in dashboard.content.decode()


# --- detail page --------------------------------------------------------------------------


def test_detail_is_read_only_with_pretty_payload(admin_client):
    row = add("orders", Status.DEAD, last_error="RuntimeError: boom")

    response = admin_client.get(
        f"{CHANGELIST}{row.pk}/change/", {"_changelist_filters": "service=orders"}
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert re.search(
        r"<pre[^>]*>\{\s*\n\s+&quot;n&quot;: 1,\s*\n\s+&quot;text&quot;: &quot;héllo&quot;\s*\n\}</pre>",
        page,
    )
    assert "RuntimeError: boom" in page
    assert 'name="_save"' not in page  # no edit form
    assert "resend-form" in page


def test_writes_through_admin_are_impossible(admin_client):
    row = add("orders")
    query = "?_changelist_filters=service%3Dorders"

    add_page = admin_client.get(f"{CHANGELIST}add/")
    edit = admin_client.post(
        f"{CHANGELIST}{row.pk}/change/{query}", {"status": "CONSUMED", "topic": "x"}
    )
    delete = admin_client.post(f"{CHANGELIST}{row.pk}/delete/{query}", {"post": "yes"})
    bulk_delete = admin_client.post(
        f"{CHANGELIST}?service=orders",
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
    )

    assert add_page.status_code == 403
    assert edit.status_code == 403
    assert delete.status_code == 403
    assert bulk_delete.status_code in {200, 302}
    assert fresh(row).status == Status.SENDING and fresh(row).topic == "test.topic"
    assert (
        'href="/admin/messaging/message/add/"' not in admin_client.get(CHANGELIST).content.decode()
    )


def test_resend_button_resends_one_message(admin_client, kicked):
    row = add("orders", Status.DEAD, send_count=5)
    other = add("orders", Status.DEAD, send_count=5)
    query = "?_changelist_filters=service%3Dorders"

    response = admin_client.post(f"{CHANGELIST}{row.pk}/resend/{query}")

    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}{row.pk}/change/{query}"
    row = fresh(row)
    assert (row.status, row.send_count) == (Status.SENDING, 0)
    assert row.next_send_at <= timezone.now()
    assert fresh(other).status == Status.DEAD
    assert kicked == ["orders"]


def test_resend_button_is_post_only(admin_client):
    row = add("orders", Status.DEAD)

    assert admin_client.get(f"{CHANGELIST}{row.pk}/resend/?service=orders").status_code == 405
    assert fresh(row).status == Status.DEAD


# --- resend selected ----------------------------------------------------------------------


def test_resend_selected_resets_the_count_and_makes_them_due(admin_client, kicked):
    later = timezone.now() + timedelta(minutes=10)
    dead = add("accounting", Status.DEAD, send_count=5)
    waiting = add("accounting", Status.SENDING, send_count=3, next_send_at=later)
    consumed = add("accounting", Status.CONSUMED, send_count=1)
    untouched = add("accounting", Status.DEAD, send_count=5)

    response = admin_client.post(
        f"{CHANGELIST}?service=accounting",
        {"action": "resend_selected", "_selected_action": [dead.pk, waiting.pk, consumed.pk]},
        follow=True,
    )

    page = response.content.decode()
    assert "2 message(s) resent" in page and "1 skipped" in page
    now = timezone.now()
    for row in (fresh(dead), fresh(waiting)):
        assert (row.status, row.send_count) == (Status.SENDING, 0)
        assert row.next_send_at <= now
    assert fresh(consumed).status == Status.CONSUMED
    assert fresh(untouched).status == Status.DEAD
    assert kicked == ["accounting"]


def test_resend_selected_only_touches_the_chosen_service(admin_client):
    in_orders = add("orders", Status.DEAD, send_count=5)
    in_funds = add("funds", Status.DEAD, send_count=5)

    admin_client.post(
        f"{CHANGELIST}?service=funds",
        {"action": "resend_selected", "select_across": "1", "_selected_action": [in_funds.pk]},
    )

    assert fresh(in_funds).status == Status.SENDING
    assert fresh(in_orders).status == Status.DEAD


def test_staff_without_change_permission_can_look_but_not_resend(client, staff):
    row = add("orders", Status.DEAD)
    client.force_login(staff)

    listing = client.get(CHANGELIST, {"service": "orders"})
    action = client.post(
        f"{CHANGELIST}?service=orders", {"action": "resend_selected", "_selected_action": [row.pk]}
    )
    button = client.post(f"{CHANGELIST}{row.pk}/resend/?service=orders")
    bulk = client.post(f"{CHANGELIST}resend-dead/", {"service": "orders", "queue": "accounting"})

    assert shown(listing) == ids(row)
    assert "resend_selected" not in listing.content.decode()
    assert action.status_code in {200, 302}
    assert (button.status_code, bulk.status_code) == (403, 403)
    assert fresh(row).status == Status.DEAD


# --- resend all dead of a queue -----------------------------------------------------------


def test_resend_all_dead_of_a_queue_clears_dead_on_that_queue_only(admin_client, kicked):
    dead_accounting = [add("orders", Status.DEAD, send_count=5) for _ in range(3)]
    dead_notifications = add("orders", Status.DEAD, queue="notifications", send_count=5)
    dead_elsewhere = add("funds", Status.DEAD, send_count=5)

    preview = admin_client.get(
        f"{CHANGELIST}resend-dead/", {"service": "orders", "queue": "accounting"}
    )
    response = admin_client.post(
        f"{CHANGELIST}resend-dead/", {"service": "orders", "queue": "accounting"}
    )

    assert preview.status_code == 200
    assert "3 dead message(s)" in preview.content.decode()
    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}?service=orders&queue=accounting"
    assert all(
        fresh(r).status == Status.SENDING and fresh(r).send_count == 0 for r in dead_accounting
    )
    assert fresh(dead_notifications).status == Status.DEAD
    assert fresh(dead_elsewhere).status == Status.DEAD
    assert kicked == ["orders"]


def test_resend_all_dead_warns_about_never_confirmed_messages(admin_client):
    add("orders", Status.DEAD)
    add(
        "orders", Status.DEAD, confirmed_at=None
    )  # check-back gave up: the producer never confirmed

    preview = admin_client.get(
        f"{CHANGELIST}resend-dead/", {"service": "orders", "queue": "accounting"}
    )

    page = preview.content.decode()
    assert "2 dead message(s)" in page
    assert "1 of them were never confirmed" in page


def test_resend_all_dead_refuses_an_unknown_queue(admin_client):
    row = add("orders", Status.DEAD)

    response = admin_client.post(
        f"{CHANGELIST}resend-dead/", {"service": "orders", "queue": "no-such-queue"}
    )

    assert response.status_code == 200  # the form again, with its error
    assert "errorlist" in response.content.decode()
    assert fresh(row).status == Status.DEAD


# --- dashboard ----------------------------------------------------------------------------


def test_dashboard_counts_states_per_queue_of_every_service(admin_client):
    for _ in range(3):
        add("orders", Status.CONSUMED)
    add("orders", Status.DEAD)
    add("orders", Status.SENDING, queue="notifications", age=timedelta(minutes=5))
    add("accounting", Status.PREPARED, queue="funds", age=timedelta(hours=3))

    response = admin_client.get(f"{CHANGELIST}dashboard/")

    page = response.content.decode()
    assert response.status_code == 200
    orders = section(page, "orders")
    cells = row_cells(orders, "accounting")
    assert cells == [
        "accounting",
        "0",
        "0",
        "3",
        "1",
        "Resend 1 dead",
    ]  # PREPARED SENDING CONSUMED DEAD
    assert row_cells(orders, "notifications")[:5] == ["notifications", "0", "1", "0", "0"]
    assert re.search(r'class="oldest-pending">5 min \d+ s<', orders)
    assert re.search(r'class="oldest-pending">3 h 0 min<', section(page, "accounting"))
    assert 'class="oldest-pending">none<' in section(page, "points")
    assert "Database unavailable" not in page


def test_dashboard_headings_use_the_bars_link_colour(admin_client):
    page = admin_client.get(f"{CHANGELIST}dashboard/").content.decode()

    assert (
        "messaging/dashboard.css" in page
    )  # white links on the blue heading bar, not blue on blue


def test_dashboard_survives_a_database_that_is_down(admin_client):
    add("funds", Status.DEAD)

    def refuse(execute, sql, params, many, context):
        raise OperationalError("down")

    with connections["orders"].execute_wrapper(refuse):
        page = admin_client.get(f"{CHANGELIST}dashboard/").content.decode()

    assert "Database unavailable" in section(page, "orders")
    assert row_cells(section(page, "funds"), "accounting")[4] == "1"


def test_changelist_links_to_the_dashboard_and_the_bulk_resend(admin_client):
    page = admin_client.get(CHANGELIST, {"service": "orders"}).content.decode()

    assert f'href="{CHANGELIST}dashboard/"' in page
    assert f'href="{CHANGELIST}resend-dead/?service=orders"' in page


def section(page: str, alias: str) -> str:
    match = re.search(rf'<div class="module" id="outbox-{alias}">(.*?)</div>', page, re.S)
    assert match, f"no section for {alias}"
    return match.group(1)


def row_cells(section_html: str, queue: str) -> list[str]:
    match = re.search(rf'<tr class="queue-{re.escape(queue)}">(.*?)</tr>', section_html, re.S)
    assert match, f"no row for {queue}"
    return [
        re.sub(r"<[^>]+>", "", cell).strip()
        for cell in re.findall(r"<td>(.*?)</td>", match.group(1), re.S)
    ]


def test_no_add_permission(admin_client, rf, admin_user):
    from django.contrib import admin as django_admin

    model_admin = django_admin.site._registry[Message]
    request = rf.get(CHANGELIST)
    request.user = admin_user

    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert model_admin.has_resend_permission(request)


@pytest.mark.parametrize("verdict,expected", [("confirm", {"SENDING"}), ("discard", set())])
def test_admin_settles_a_never_confirmed_dead_message(admin_client, verdict, expected, monkeypatch):

    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)
    message_id = outbox.prepare(
        "test.topic",
        {"n": 1},
        using="orders",
        business_key="undecided",
        check_back="nobody.answers",
    )
    force_status(Message.objects.using("orders"), "DEAD", next_send_at=None)
    row = Message.objects.using("orders").filter(message_id=message_id).first()

    page = admin_client.get(f"/admin/messaging/message/{row.pk}/change/?service=orders")
    assert "Confirm (producer committed)" in page.content.decode()
    response = admin_client.post(
        f"/admin/messaging/message/{row.pk}/settle/{verdict}/?service=orders"
    )

    assert response.status_code == 302
    assert (
        set(
            Message.objects.using("orders")
            .filter(message_id=message_id)
            .values_list("status", flat=True)
        )
        == expected
    )
