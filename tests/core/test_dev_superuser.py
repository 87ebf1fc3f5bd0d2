"""The embedded default's dev superuser (issue 6): a random password, shown once, kept in var/."""

import json
import stat

import pytest
from django.contrib.auth import get_user_model

from paysys.demo.management.commands.run_banner import dev_admin_file, ensure_dev_superuser

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


def test_first_run_creates_admin_with_a_random_password_kept_privately():
    state, password = ensure_dev_superuser()

    user = get_user_model().objects.get(username="admin")
    assert state == "created" and user.is_superuser
    assert password and len(password) >= 16 and password != "admin"
    assert user.check_password(password) and not user.check_password("admin")
    assert json.loads(dev_admin_file().read_text()) == {"username": "admin", "password": password}
    assert stat.S_IMODE(dev_admin_file().stat().st_mode) == 0o600


def test_later_runs_show_no_password_and_keep_it():
    _, password = ensure_dev_superuser()

    assert ensure_dev_superuser() == ("existing", None)
    assert get_user_model().objects.get(username="admin").check_password(password)


def test_an_admin_left_with_the_published_password_gets_a_random_one():
    get_user_model().objects.create_superuser("admin", email="", password="admin")

    state, password = ensure_dev_superuser()

    assert state == "reset" and password != "admin"
    assert not get_user_model().objects.get(username="admin").check_password("admin")


def test_two_checkouts_get_different_passwords(settings, tmp_path):
    _, first = ensure_dev_superuser()
    get_user_model().objects.filter(username="admin").delete()

    _, second = ensure_dev_superuser()

    assert first != second


def test_production_settings_create_no_demo_merchant_and_print_no_key(settings, db):
    from io import StringIO

    from django.core.management import call_command

    from paysys.core.models import Merchant

    settings.SANDBOX_ENABLED = False
    out = StringIO()

    call_command("run_banner", stdout=out)

    assert not Merchant.objects.exists()
    assert "psk_" not in out.getvalue() and "create_merchant" in out.getvalue()
