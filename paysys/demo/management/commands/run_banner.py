"""``manage.py run_banner``: what ``make run`` prints before it starts the stack.

Where to click (admin, API docs), the mode (embedded or full stack) and a demo merchant's API
key. The key is shown once by design (only its hash is stored), so the merchant is created once
and ``create_merchant --json``'s output is kept in ``var/demo-merchant.json`` for later runs.
"""

from __future__ import annotations

import json
import os
import secrets
from io import StringIO
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from paysys.core.models import Payer
from paysys.core.services import merchant_by_api_key, payer_create

DEMO_MERCHANT_NAME = "Demo Merchant"
DEMO_PAYER_NAME = "Demo Payer"
ADMIN_USERNAME = "admin"
# the password every earlier checkout gave the dev superuser: found on a running stack, replaced
PUBLISHED_ADMIN_PASSWORD = "admin"


def demo_merchant_file() -> Path:
    return settings.VAR_DIR / "demo-merchant.json"


def merchant_notify_url() -> str:
    """Where demo merchants take their paid-order notifications: the sandbox merchant simulator."""
    return f"{settings.PUBLIC_BASE_URL}/sandbox/merchant/notify"


def demo_command() -> str:
    """The exact ``make demo`` that reaches this stack (plain ``make demo`` targets port 8000)."""
    if settings.PUBLIC_BASE_URL != f"http://127.0.0.1:{settings.PORT}":
        return f"PUBLIC_BASE_URL={settings.PUBLIC_BASE_URL} make demo"
    return "make demo" if settings.PORT == 8000 else f"PORT={settings.PORT} make demo"


def is_embedded() -> bool:
    """True in the embedded default (SQLite files under var/), the only mode with a dev superuser."""
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"


def _write_private(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds a secret
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def saved_demo_merchant() -> dict | None:
    """What ``var/demo-merchant.json`` holds, if its merchant's key still works in this database."""
    try:
        saved = json.loads(demo_merchant_file().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or merchant_by_api_key(str(saved.get("api_key", ""))) is None:
        return None
    return saved


def ensure_demo_merchant() -> tuple[dict, bool]:
    """The saved demo merchant if its key still works in this database, else a new one; (data, created)."""
    path = demo_merchant_file()
    saved = saved_demo_merchant()
    if saved:
        payer_id = saved.get("payer_id")
        if payer_id and Payer.objects.filter(pk=payer_id).exists():
            return saved, False
        saved["payer_id"] = payer_create(name=DEMO_PAYER_NAME).pk
        _write_private(path, saved)
        return saved, False
    out = StringIO()
    call_command(
        "create_merchant",
        "--name",
        DEMO_MERCHANT_NAME,
        "--notify-url",
        merchant_notify_url(),
        "--json",
        stdout=out,
    )
    data = json.loads(out.getvalue())
    data["payer_id"] = payer_create(name=DEMO_PAYER_NAME).pk  # so the curl example works as printed
    _write_private(path, data)
    return data, True


def dev_admin_file() -> Path:
    return settings.VAR_DIR / "dev-admin.json"


def ensure_dev_superuser() -> tuple[str, str | None]:
    """The dev superuser ``admin`` with a random password, kept in ``var/dev-admin.json``.

    Returns ``(state, password)``: ("created", pw) the first time, or ("reset", pw) when an existing
    ``admin`` still has the published password ``admin``; the password is then shown once. Else
    ("existing", None): its password is in the file (or was changed by its owner).
    """
    User = get_user_model()
    user = User.objects.filter(username=ADMIN_USERNAME).first()
    if user is not None and not user.check_password(PUBLISHED_ADMIN_PASSWORD):
        return "existing", None
    password = secrets.token_urlsafe(12)
    if user is None:
        User.objects.create_superuser(ADMIN_USERNAME, email="", password=password)
    else:
        user.set_password(password)
        user.save(update_fields=["password"])
    _write_private(dev_admin_file(), {"username": ADMIN_USERNAME, "password": password})
    return ("created" if user is None else "reset"), password


class Command(BaseCommand):
    help = "Print where to click (admin, API docs) and a demo merchant's API key; what `make run` shows first."

    def handle(self, *args, **options):
        base = settings.PUBLIC_BASE_URL
        bold = self.style.MIGRATE_HEADING
        lines = ["", bold("paysys is starting"), ""]
        if is_embedded():
            mode = (
                f"embedded default: SQLite files and a filesystem broker under {settings.VAR_DIR}"
            )
        else:
            mode = "full stack: DATABASE_URL / CELERY_BROKER_URL from the environment"
        lines.append(f"  mode       {mode}")
        lines.append(
            f"  web        {base}/   (web, one Celery worker per queue, and beat; Ctrl-C stops all)"
        )
        if is_embedded() and settings.DEBUG:
            state, password = ensure_dev_superuser()
            if password is not None:  # shown this once; kept in the file for later
                lines.append(
                    f"  admin      {base}/admin/   user {ADMIN_USERNAME} / password {password} ({state} now)"
                )
            else:
                lines.append(
                    f"  admin      {base}/admin/   user {ADMIN_USERNAME}, password in {dev_admin_file()}"
                )
            lines.append(
                f"             (a random password, kept in {dev_admin_file()}; this dev superuser exists in the embedded mode only)"
            )
        else:
            lines.append(
                f"  admin      {base}/admin/   (create a user: .venv/bin/python manage.py createsuperuser)"
            )
        lines.append(f"  API docs   {base}/api/docs/")
        if not settings.SANDBOX_ENABLED:
            # production settings: no demo merchant (its key would sit in the log and in var/)
            lines.append(
                "  merchants  .venv/bin/python manage.py create_merchant --name N --notify-url U --json"
            )
            lines.append("")
            self.stdout.write("\n".join(lines))
            return
        merchant, merchant_created = ensure_demo_merchant()
        lines.append(
            f"  merchant   #{merchant['merchant_id']} {DEMO_MERCHANT_NAME}: API key {merchant['api_key']}"
        )
        saved = "saved" if merchant_created else "kept"
        lines.append(
            f"             ({saved} in {demo_merchant_file()}; the key is shown once by design)"
        )
        lines.append(f"  payer      #{merchant['payer_id']} {DEMO_PAYER_NAME}")
        lines.append(
            f"  sandbox    control token {settings.SANDBOX_TOKEN} (the simulators' control endpoints)"
        )
        lines.append("")
        lines.append("  try it:")
        lines.append(
            f"    curl -s -X POST {base}/api/v1/orders -H 'Authorization: Bearer {merchant['api_key']}' "
            "-H 'Content-Type: application/json' \\"
        )
        lines.append(
            f'      -d \'{{"merchant_order_no": "try-1", "amount": 1999, "currency": "CNY", '
            f'"subject": "Tea", "payer_id": {merchant["payer_id"]}}}\''
        )
        lines.append(
            f"    curl -s {base}/api/v1/orders/try-1 -H 'Authorization: Bearer {merchant['api_key']}'"
        )
        lines.append(f"  or, in another terminal: {demo_command()}")
        lines.append("")
        self.stdout.write("\n".join(lines))
