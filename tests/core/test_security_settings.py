"""Safe defaults (issue 6): dev secrets only in the embedded default, refused short secrets, the
sandbox mounted only where enabled, HTTPS settings from the environment, check --deploy clean.

Settings are evaluated fresh (the paysys.settings package imported anew) under a controlled
environment; what needs the whole Django start-up (URLs, check --deploy, the WSGI and ASGI
applications) runs in a subprocess with production settings.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import subprocess
import sys
import textwrap

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

import paysys.settings

# every variable the settings read that decides what is tested here
CONTROLLED = {
    "DEBUG",
    "DATABASE_URL",
    "SECRET_KEY",
    "BANK_SHARED_SECRET",
    "SANDBOX_ENABLED",
    "SANDBOX_ALLOW_IN_PRODUCTION",
    "SANDBOX_BANK_SECRET",
    "SANDBOX_TOKEN",
    "BANK_PAY_URL",
    "BANK_QUERY_URL",
    "METRICS_TOKEN",
    "MESSAGING_SERVICE_TOKEN",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_PRELOAD",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_SECONDS",
    "ALLOWED_HOSTS",
}
# the dev constants the embedded default has always published
PUBLISHED_DEV_BANK_SECRETS = [
    "dev-bank-shared-secret",
    "dev-bank-shared-secret-embedded-default-only",
]


def secret() -> str:
    return secrets.token_urlsafe(48)


def production_env(**extra: str) -> dict[str, str]:
    """What an operator sets for production (docs/operations.md, SECURITY.md)."""
    env = {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "BANK_SHARED_SECRET": secret(),
        "ALLOWED_HOSTS": "pay.example.com,testserver",
        "PUBLIC_BASE_URL": "https://pay.example.com",
        "BANK_PAY_URL": "https://bank.example.com/pay/",
        "BANK_QUERY_URL": "https://bank.example.com/payments/",
        "SECURE_HSTS_PRELOAD": "true",
    }
    env.update(extra)
    return env


def load_settings(monkeypatch, **env: str) -> dict:
    """The settings paysys.settings makes of ``env``: the package and its modules imported anew
    (the loaded ones are put back afterwards)."""
    for name in CONTROLLED:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for module in [
        m for m in sys.modules if m == "paysys.settings" or m.startswith("paysys.settings.")
    ]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(paysys, "settings", paysys.settings)
    return vars(importlib.import_module("paysys.settings"))


FULL_STACK = "mysql://root@127.0.0.1:3306/paysys"


# --- secrets ---------------------------------------------------------------------------------


def test_embedded_default_runs_on_dev_secrets(monkeypatch):
    loaded = load_settings(monkeypatch)

    assert loaded["SECRET_KEY"].startswith("dev-only") and loaded["BANK_SHARED_SECRET"].startswith(
        "dev-"
    )
    assert loaded["SANDBOX_ENABLED"] is True


@pytest.mark.parametrize("missing", ["SECRET_KEY", "BANK_SHARED_SECRET"])
def test_full_stack_without_a_secret_refuses_to_start_naming_it(monkeypatch, missing):
    env = {"DATABASE_URL": FULL_STACK, "SECRET_KEY": secret(), "BANK_SHARED_SECRET": secret()}
    del env[missing]

    with pytest.raises(ImproperlyConfigured, match=f"{missing} is not set.*export {missing}="):
        load_settings(monkeypatch, **env)  # DEBUG on (the default) gives no dev secret here


@pytest.mark.parametrize("missing", ["SECRET_KEY", "BANK_SHARED_SECRET"])
def test_debug_off_without_a_secret_refuses_to_start_even_embedded(monkeypatch, missing):
    env = production_env()
    del env[missing]

    with pytest.raises(ImproperlyConfigured, match=f"{missing} is not set"):
        load_settings(monkeypatch, **env)


@pytest.mark.parametrize(
    "name",
    [
        "SECRET_KEY",
        "BANK_SHARED_SECRET",
        "METRICS_TOKEN",
        "MESSAGING_SERVICE_TOKEN",
        "SANDBOX_TOKEN",
    ],
)
def test_secrets_shorter_than_32_characters_are_refused(monkeypatch, name):
    env = {
        "DATABASE_URL": FULL_STACK,
        "SECRET_KEY": secret(),
        "BANK_SHARED_SECRET": secret(),
        name: "x" * 31,
    }

    with pytest.raises(ImproperlyConfigured, match=f"{name} is 31 characters long"):
        load_settings(monkeypatch, **env)


def test_a_secret_key_shorter_than_django_deploy_check_asks_is_refused(monkeypatch):
    # security round 3, item 9: a 48-character SECRET_KEY passed, and `check --deploy` then warned W009
    env = {
        "DATABASE_URL": FULL_STACK,
        "SECRET_KEY": secrets.token_urlsafe(36),
        "BANK_SHARED_SECRET": secret(),
    }

    with pytest.raises(
        ImproperlyConfigured, match="SECRET_KEY is 48 characters long; use at least 50"
    ):
        load_settings(monkeypatch, **env)


def test_full_stack_with_secrets_set_uses_them(monkeypatch):
    key, bank = secret(), secret()

    loaded = load_settings(
        monkeypatch, DATABASE_URL=FULL_STACK, SECRET_KEY=key, BANK_SHARED_SECRET=bank
    )

    assert (loaded["SECRET_KEY"], loaded["BANK_SHARED_SECRET"]) == (key, bank)


# --- the sandbox -----------------------------------------------------------------------------


def test_production_settings_leave_the_sandbox_out(monkeypatch):
    loaded = load_settings(monkeypatch, **production_env())

    assert loaded["SANDBOX_ENABLED"] is False
    assert "paysys.sandbox" not in loaded["INSTALLED_APPS"]  # no models, admin, tasks
    assert "sandbox" not in loaded["SERVICE_QUEUES"]
    assert not any(
        entry["task"].startswith("sandbox.") for entry in loaded["CELERY_BEAT_SCHEDULE"].values()
    )
    assert "SANDBOX_BANK_SECRET" not in loaded and "SANDBOX_TOKEN" not in loaded


def test_sandbox_with_debug_off_is_refused_unless_explicitly_allowed(monkeypatch):
    with pytest.raises(ImproperlyConfigured, match="SANDBOX_ALLOW_IN_PRODUCTION"):
        load_settings(monkeypatch, **production_env(SANDBOX_ENABLED="true"))


def test_allowed_sandbox_with_debug_off_needs_its_own_secret_and_token(monkeypatch):
    env = production_env(SANDBOX_ENABLED="true", SANDBOX_ALLOW_IN_PRODUCTION="true")
    with pytest.raises(ImproperlyConfigured, match="SANDBOX_BANK_SECRET is not set"):
        load_settings(monkeypatch, **env)

    bank_secret, token = secret(), secret()
    loaded = load_settings(monkeypatch, **env, SANDBOX_BANK_SECRET=bank_secret, SANDBOX_TOKEN=token)

    assert (loaded["SANDBOX_BANK_SECRET"], loaded["SANDBOX_TOKEN"]) == (bank_secret, token)
    assert "paysys.sandbox" in loaded["INSTALLED_APPS"]


def test_without_the_sandbox_the_real_banks_addresses_are_unset(monkeypatch):
    env = production_env()
    del env["BANK_QUERY_URL"]

    loaded = load_settings(monkeypatch, **env)  # a system check refuses it (paysys.E004, below)

    assert loaded["BANK_QUERY_URL"] == ""


# --- HTTPS -----------------------------------------------------------------------------------


def test_https_defaults_with_debug_off(monkeypatch):
    loaded = load_settings(monkeypatch, **production_env())

    assert (
        loaded["SECURE_PROXY_SSL_HEADER"] is None
    )  # trusting it without a proxy lets clients claim HTTPS
    assert (
        loaded["SECURE_SSL_REDIRECT"]
        and loaded["SESSION_COOKIE_SECURE"]
        and loaded["CSRF_COOKIE_SECURE"]
    )
    assert loaded["SECURE_HSTS_SECONDS"] >= 31_536_000 and loaded["SECURE_HSTS_INCLUDE_SUBDOMAINS"]


def test_https_settings_come_from_the_environment(monkeypatch):
    loaded = load_settings(
        monkeypatch,
        **production_env(
            SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
            SECURE_HSTS_PRELOAD="false",
            SECURE_HSTS_INCLUDE_SUBDOMAINS="false",
            SECURE_SSL_REDIRECT="false",
            SECURE_HSTS_SECONDS="60",
        ),
    )

    assert loaded["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    assert not (
        loaded["SECURE_HSTS_PRELOAD"]
        or loaded["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
        or loaded["SECURE_SSL_REDIRECT"]
    )
    assert loaded["SECURE_HSTS_SECONDS"] == 60


# --- with production settings, for real -----------------------------------------------------


def run_with(env: dict[str, str], *args: str, tmp_path) -> subprocess.CompletedProcess:
    full = {
        k: v
        for k, v in os.environ.items()
        if k not in CONTROLLED and not k.startswith("DATABASE_URL")
    }
    full.update(env, DJANGO_SETTINGS_MODULE="paysys.settings", PAYSYS_VAR_DIR=str(tmp_path / "var"))
    return subprocess.run(
        [sys.executable, *args],
        cwd=settings.BASE_DIR,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


FORGERY = textwrap.dedent(
    """
    import hashlib, hmac, json, sys
    import django
    django.setup()
    from django.test import Client

    client, seen = Client(), {}
    seen["query"] = client.get("/sandbox/bank/payments/PS1", secure=True).status_code
    seen["pay"] = client.post("/sandbox/bank/pay/anything", secure=True).status_code
    seen["release"] = client.post("/sandbox/bank/release", secure=True).status_code
    seen["admin"] = client.get("/admin/sandbox/bankpayment/", secure=True).status_code
    body = json.dumps({"bank_trade_no": "B1", "out_trade_no": "PS1", "amount": 100, "currency": "CNY",
                       "status": "SUCCESS", "paid_at": "2026-11-27T10:00:00+00:00"}).encode()
    seen["forged"] = [
        client.post("/gateway/bank/notify", body, content_type="application/json", secure=True,
                    headers={"X-Bank-Signature": hmac.new(key.encode(), body, hashlib.sha256).hexdigest()}).status_code
        for key in json.loads(sys.argv[1])
    ]
    print(json.dumps(seen))
    """
)


def test_with_production_settings_the_sandbox_is_404_and_a_forged_notify_fails(tmp_path):
    result = run_with(
        production_env(), "-c", FORGERY, json.dumps(PUBLISHED_DEV_BANK_SECRETS), tmp_path=tmp_path
    )

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # no pay link to pay, no signed query answer to replay, no release, no admin page
    assert (seen["query"], seen["pay"], seen["release"]) == (404, 404, 404)
    assert seen["admin"] in (
        302,
        404,
    )  # the admin asks for a login; the sandbox's page is not there either
    assert seen["forged"] == [
        401,
        401,
    ]  # the published dev secrets sign nothing the platform trusts


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = run_with(
        production_env(),
        "manage.py",
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        tmp_path=tmp_path,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_secret_key_and_says_what_to_set(tmp_path):
    env = production_env()
    del env["SECRET_KEY"]

    result = run_with(env, "manage.py", "check", tmp_path=tmp_path)

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr and "export SECRET_KEY=" in result.stderr


@pytest.mark.parametrize("entry_point", ["manage.py check", "paysys.wsgi", "paysys.asgi"])
def test_without_the_sandbox_nothing_starts_without_the_real_banks_addresses(tmp_path, entry_point):
    env = production_env()
    del env["BANK_QUERY_URL"]
    # a WSGI or ASGI server runs no system checks: the application refuses as it is imported
    args = (
        entry_point.split()
        if entry_point.startswith("manage.py")
        else ["-c", f"import {entry_point}"]
    )

    result = run_with(env, *args, tmp_path=tmp_path)

    assert result.returncode != 0
    assert "paysys.E004" in result.stderr and "set BANK_PAY_URL" in result.stderr
