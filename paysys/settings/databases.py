"""Databases, one alias per service (docs/architecture.md, "Services, databases, queues"), and the
cache: SQLite files under ``var/`` in the embedded default, a schema ``paysys_<service>`` each on
the server of ``DATABASE_URL`` otherwise."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from paysys import topology
from paysys.settings.deployment import VAR_DIR
from paysys.settings.environment import env_int

# alias -> service name used in DATABASE_URL_<SERVICE> and in the schema name paysys_<service>
SERVICE_ALIASES = {database.alias: database.service for database in topology.DATABASES}


# SQLite creates a file but not its folder: a fresh clone's `manage.py migrate` needs var/.
# paysys.settings makes the folders (make_sqlite_folders) once every settings module has had its
# say, so a process whose settings refuse to start leaves none behind.
_sqlite_folders: set[Path] = set()


def _sqlite_database(path: Path) -> dict:
    _sqlite_folders.add(path.parent)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            # WAL lets workers read while another process writes; IMMEDIATE takes the write lock
            # at BEGIN so two writers queue on the busy timeout instead of failing to upgrade.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        },
        "TEST": {"NAME": str(path.with_name("test_" + path.name))},
    }


# Persistent connections pay off in long-lived threads (Celery workers, a WSGI server's pool).
# runserver starts a thread per request, and closes that thread's connections as the request ends
# (django.core.servers.basehttp.ThreadedWSGIServer.close_request), so none outlives its thread.
DB_CONN_MAX_AGE = env_int("DB_CONN_MAX_AGE", 60)


def _service_database(service: str) -> dict:
    override = os.environ.get(f"DATABASE_URL_{service.upper()}")
    if override:
        return _configure(
            dj_database_url.parse(override, conn_max_age=DB_CONN_MAX_AGE, conn_health_checks=True)
        )
    base = os.environ.get("DATABASE_URL")
    if not base:
        return _sqlite_database(VAR_DIR / f"{service}.sqlite3")
    if base.startswith("sqlite"):
        return _sqlite_database(VAR_DIR / f"{service}.sqlite3")
    parts = urlsplit(base)
    prefix = parts.path.lstrip("/") or "paysys"
    url = urlunsplit(parts._replace(path=f"/{prefix}_{service}"))
    return _configure(
        dj_database_url.parse(url, conn_max_age=DB_CONN_MAX_AGE, conn_health_checks=True)
    )


def _configure(db: dict) -> dict:
    if db["ENGINE"] == "django.db.backends.mysql":
        options = db.setdefault("OPTIONS", {})
        options.setdefault("charset", "utf8mb4")
        options.setdefault("isolation_level", "read committed")
        options.setdefault("connect_timeout", 5)
        # identifiers (merchant_order_no, trade numbers, voucher sources) compare exactly, as on
        # SQLite: "abc" and "ABC" are two orders, never a replay of each other
        db.setdefault("TEST", {}).setdefault("CHARSET", "utf8mb4")
        db["TEST"].setdefault("COLLATION", "utf8mb4_bin")
    return db


DATABASES = {alias: _service_database(service) for alias, service in SERVICE_ALIASES.items()}
DATABASE_ROUTERS = ["paysys.routers.ServiceRouter"]


def make_sqlite_folders() -> tuple[Path, ...]:
    """Make the embedded databases' folder (VAR_DIR) and any missing parent; return the folders
    made, outermost first (``manage.py runstack`` removes them again, empty, when it refuses)."""
    made = []
    for folder in sorted(_sqlite_folders):
        missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = "a file is there" if folder.is_file() else exc.strerror
            raise ImproperlyConfigured(
                f"PAYSYS_VAR_DIR: cannot make {folder} for the embedded databases ({why}). "
                "Point PAYSYS_VAR_DIR at a folder this user may write (default: var/ in the checkout)."
            ) from None
        made += [p for p in missing if p not in made]
    return tuple(made)


# --- cache: API throttling, and pending relay kicks (one pass for many commits) -------------
# Redis in full stack (CACHE_URL, else a Redis broker's URL), a file cache shared by processes
# otherwise

CACHE_URL = os.environ.get("CACHE_URL", "")
if not CACHE_URL and os.environ.get("CELERY_BROKER_URL", "").startswith("redis"):
    CACHE_URL = os.environ["CELERY_BROKER_URL"]
if CACHE_URL and not CACHE_URL.startswith("file://"):
    # values as JSON, never pickle: a write to this Redis must not become code run here (paysys/core/cache.py)
    CACHES = {
        "default": {
            "BACKEND": "paysys.core.cache.RedisCache",  # Django's, one client per pool
            "LOCATION": CACHE_URL,
            "OPTIONS": {"serializer": "paysys.core.cache.JsonSerializer"},
        }
    }
else:  # CACHE_URL=file:///path/to/folder, or var/cache (a RabbitMQ broker has no cache of its own)
    CACHES = {
        "default": {
            # Django's, its folder made by the first write (not by the system checks)
            "BACKEND": "paysys.core.cache.FileBasedCache",
            "LOCATION": CACHE_URL.removeprefix("file://") or str(VAR_DIR / "cache"),
        }
    }
