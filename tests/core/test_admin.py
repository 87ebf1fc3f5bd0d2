"""Staff permissions in admin (issue 14, item 7), over every registered ModelAdmin.

A staff user holding only view permissions may look, never act: no admin action is offered to
them and a forged action POST runs nothing; every tool page that changes state refuses them
(403). A user holding the permissions (not a superuser) still can. Webhook secrets are on no
page, for anyone; a rotation shows the new one once, to the user who rotated it.

The enumerations are the point: a new action, or a new admin URL, that does not declare who may
use it makes these tests fail.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import Client, RequestFactory
from django.urls import reverse

from paysys.core.models import Merchant
from paysys.core.services import merchant_rotate_webhook_secret
from paysys.sandbox.merchant.models import MerchantEndpoint
from tests.notifications.factories import make_attempt, make_notification

pytestmark = pytest.mark.django_db(databases="__all__")

site = admin.site
STANDARD_VIEWS = {"changelist", "add", "history", "delete", "change"}
# admin pages of our own that only read: a view-only user sees them, a user without the model's
# view permission does not. Every other page of our own changes state and needs more.
READ_ONLY_PAGES = {"messaging_message_dashboard", "accounting_voucher_trial_balance"}
# values for the custom URLs' parameters (a new parameter needs a sample here)
SAMPLE_KWARGS = {"object_id": "1", "id": "1", "verdict": "confirm"}


def model_admins():
    return [
        pytest.param(model_admin, id=model._meta.label)
        for model, model_admin in site._registry.items()
    ]


def declared_actions(model_admin) -> list[tuple[str, object]]:
    """Every action the admin has before any permission filter: its own and the site's
    (``delete_selected``)."""
    return [(name, func) for func, name, _ in model_admin._get_base_actions()]


def staff(django_user_model, username: str, permissions) -> Client:
    user = django_user_model.objects.create_user(
        username, is_staff=True
    )  # no password: no slow hashing
    user.user_permissions.add(*permissions)
    client = Client()
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def viewer(django_user_model) -> Client:
    """Staff holding every view permission and nothing else."""
    return staff(
        django_user_model, "viewer", Permission.objects.filter(codename__startswith="view_")
    )


@pytest.fixture
def operator(django_user_model) -> Client:
    """Staff holding every permission, without being a superuser: permissions are enough to act."""
    return staff(django_user_model, "operator", Permission.objects.all())


@pytest.fixture
def nobody(django_user_model) -> Client:
    """Staff holding no permission at all."""
    return staff(django_user_model, "nobody", [])


def request_of(client: Client):
    request = RequestFactory().get("/admin/")
    request.user = client.user
    return request


def changelist_url(model_admin) -> str:
    return reverse(f"admin:{model_admin.opts.app_label}_{model_admin.opts.model_name}_changelist")


def custom_pages(model_admin) -> list[tuple[str, str]]:
    """(url name, URL) of every admin page the ModelAdmin adds to Django's own."""
    prefix = f"{model_admin.opts.app_label}_{model_admin.opts.model_name}_"
    pages = []
    for pattern in model_admin.get_urls():
        if pattern.name is None or pattern.name.removeprefix(prefix) in STANDARD_VIEWS:
            continue
        kwargs = {name: SAMPLE_KWARGS[name] for name in pattern.pattern.converters}
        pages.append((pattern.name, reverse(f"admin:{pattern.name}", kwargs=kwargs)))
    return pages


@pytest.fixture
def spy(monkeypatch):
    """Replace an admin action by one that records who ran it, keeping its declared permissions."""

    def replace(model_admin, name: str) -> list[str]:
        calls: list[str] = []
        original, _, description = model_admin.get_action(name)

        def recorded(modeladmin, request, queryset):
            calls.append(request.user.get_username())

        recorded.allowed_permissions = getattr(original, "allowed_permissions", ())
        recorded.short_description = description
        if hasattr(type(model_admin), name):
            monkeypatch.setattr(type(model_admin), name, recorded)
        else:  # a site-wide action
            monkeypatch.setitem(site._actions, name, recorded)
            monkeypatch.setitem(site._global_actions, name, recorded)
        return calls

    return replace


# --- actions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model_admin", model_admins())
def test_every_action_declares_the_permission_it_needs(model_admin):
    for name, func in declared_actions(model_admin):
        permissions = getattr(func, "allowed_permissions", ())
        assert permissions, (
            f"{model_admin}: action {name!r} declares no permission: anyone who may view the list may run it "
            "(@admin.action(permissions=[...]))"
        )
        for permission in permissions:
            assert callable(getattr(model_admin, f"has_{permission}_permission", None)), (
                model_admin,
                name,
                permission,
            )


@pytest.mark.parametrize("model_admin", model_admins())
def test_a_view_only_user_is_offered_no_action(model_admin, viewer):
    # every action here changes state; one that only reads would declare permissions=["view"]
    assert model_admin.get_actions(request_of(viewer)) == {}


@pytest.mark.parametrize("model_admin", model_admins())
def test_a_user_with_the_permissions_is_offered_every_action(model_admin, operator, admin_user):
    offered = set(model_admin.get_actions(request_of(operator)))
    superuser = RequestFactory().get("/admin/")
    superuser.user = admin_user

    assert set(model_admin.actions or []) <= offered
    assert offered == set(model_admin.get_actions(superuser))


@pytest.mark.parametrize("model_admin", model_admins())
def test_a_forged_action_post_by_a_view_only_user_runs_nothing(model_admin, viewer, operator, spy):
    offered_to_operator = set(model_admin.get_actions(request_of(operator)))
    for name, _ in declared_actions(model_admin):
        calls = spy(model_admin, name)
        body = {"action": name, "_selected_action": ["1"], "index": "0"}

        refused = viewer.post(changelist_url(model_admin), body)
        assert refused.status_code in (200, 302) and calls == [], (name, refused.status_code, calls)

        operator.post(changelist_url(model_admin), body)
        assert calls == (["operator"] if name in offered_to_operator else []), name


# --- pages of our own ------------------------------------------------------------------------


def all_custom_pages():
    return [
        pytest.param(model_admin, name, url, id=name)
        for model_admin in site._registry.values()
        for name, url in custom_pages(model_admin)
    ]


def test_the_tool_pages_are_all_found():
    names = {name for _, name, _ in (p.values for p in all_custom_pages())}
    assert {
        "messaging_message_resend_dead",
        "messaging_message_resend",
        "messaging_message_settle",
        "accounts_fundaccount_credit_wallet",
        "notifications_notification_recover",
        *READ_ONLY_PAGES,
    } <= names


@pytest.mark.parametrize("model_admin, name, url", all_custom_pages())
def test_every_page_of_our_own_needs_its_permission(
    model_admin, name, url, viewer, operator, nobody
):
    if name in READ_ONLY_PAGES:
        assert viewer.get(url).status_code == 200
        assert nobody.get(url).status_code == 403
        return
    # a page that changes state: refused to a view-only user, whatever the method
    assert viewer.post(url).status_code == 403
    assert viewer.get(url).status_code in (403, 405)
    # allowed (with nothing filled in, the pages answer their form, or redirect, or say the
    # sample object is not there: nothing is changed)
    assert operator.get(url).status_code in (200, 302, 404, 405)
    assert operator.post(url).status_code in (200, 302, 404)


# --- secrets ---------------------------------------------------------------------------------


@pytest.fixture
def secrets_everywhere(make_merchant) -> list[str]:
    """A merchant with a current and a previous webhook secret, the merchant simulator's copy of
    it, and a notification with an attempt: every place a secret could leak onto a page."""
    merchant, _ = make_merchant()
    previous = merchant.webhook_secret
    merchant = merchant_rotate_webhook_secret(merchant_id=merchant.pk)
    MerchantEndpoint.objects.create(merchant_id=merchant.pk, webhook_secret=merchant.webhook_secret)
    make_attempt(make_notification(merchant))
    return [previous, merchant.webhook_secret]


def crawl(client: Client) -> dict[str, str]:
    """Every changelist and read-only page, and the change page of every row listed (HTML by URL)."""
    pages = {}
    for model_admin in site._registry.values():
        url = changelist_url(model_admin)
        response = client.get(url)
        assert response.status_code == 200, url
        pages[url] = response.content.decode()
        info = f"admin:{model_admin.opts.app_label}_{model_admin.opts.model_name}"
        for obj in list(response.context["cl"].result_list)[:5]:
            for view in ("change", "history"):
                url = reverse(f"{info}_{view}", args=[obj.pk])
                response = client.get(url)
                assert response.status_code == 200, url
                pages[url] = response.content.decode()
        pages.update(
            {
                url: client.get(url).content.decode()
                for name, url in custom_pages(model_admin)
                if name in READ_ONLY_PAGES
            }
        )
    return pages


@pytest.mark.parametrize("who", ["viewer", "operator"])
def test_no_admin_page_shows_a_webhook_secret(request, who, secrets_everywhere):
    pages = crawl(request.getfixturevalue(who))

    merchant_id = Merchant.objects.latest("pk").pk
    assert (
        reverse("admin:core_merchant_change", args=[merchant_id]) in pages
    )  # the crawl reached it
    assert (
        reverse("admin:sandbox_merchantendpoint_change", args=[MerchantEndpoint.objects.get().pk])
        in pages
    )
    leaks = [
        url for url, html in pages.items() if any(secret in html for secret in secrets_everywhere)
    ]
    assert leaks == []


def test_a_view_only_user_cannot_rotate_a_webhook_secret(viewer, merchant):
    before = merchant.webhook_secret

    response = viewer.post(
        changelist_url(site._registry[Merchant]),
        {"action": "rotate_webhook_secret", "_selected_action": [merchant.pk], "index": "0"},
    )

    merchant.refresh_from_db()
    assert merchant.webhook_secret == before and merchant.webhook_secret_rotated_at is None
    assert before not in response.content.decode()


def test_a_rotated_secret_is_shown_once_to_the_user_who_rotated_it(
    django_user_model, merchant, viewer
):
    changer = staff(
        django_user_model,
        "changer",
        Permission.objects.filter(codename__in=["view_merchant", "change_merchant"]),
    )
    before = merchant.webhook_secret

    response = changer.post(
        changelist_url(site._registry[Merchant]),
        {"action": "rotate_webhook_secret", "_selected_action": [merchant.pk], "index": "0"},
    )

    merchant.refresh_from_db()
    assert merchant.webhook_secret != before and merchant.previous_webhook_secret == before
    assert response.status_code == 200 and merchant.webhook_secret in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    # in this response only: not in a cookie (the messages), and on no page afterwards
    assert all(merchant.webhook_secret not in morsel.value for morsel in response.cookies.values())
    for client in (changer, viewer):
        for url in (
            changelist_url(site._registry[Merchant]),
            reverse("admin:core_merchant_change", args=[merchant.pk]),
        ):
            assert merchant.webhook_secret not in client.get(url).content.decode(), url
    assert (
        "Rotated the webhook secret"
        in changer.get(reverse("admin:core_merchant_history", args=[merchant.pk])).content.decode()
    )
