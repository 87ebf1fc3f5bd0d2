"""paysys settings, read from the environment.

Two modes share one code path:

* embedded default (nothing set): every database alias is its own SQLite file under ``var/``
  and Celery uses kombu's ``filesystem://`` transport, so ``make run`` needs no server;
* full stack: ``DATABASE_URL=mysql://root@127.0.0.1:3306/paysys`` gives every service its own
  schema ``paysys_<service>`` and ``CELERY_BROKER_URL=redis://...`` a real broker.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PAYSYS_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise RuntimeError("SECRET_KEY must be set when DEBUG is off: export SECRET_KEY=<50+ random chars>")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-0123456789abcdef"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver" if DEBUG else "")
PORT = int(os.environ.get("PORT", "8000"))
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", f"http://127.0.0.1:{PORT}").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "paysys.core",
    "paysys.messaging",
    "paysys.gateway",
    "paysys.sandbox",
    "paysys.demo",
    "orders",
    "accounts",
    "accounting",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "paysys.api.middleware.BodySizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "paysys.urls"
WSGI_APPLICATION = "paysys.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- databases: one alias per service (DESIGN.md "Services, databases, queues") -------------

# alias -> service name used in DATABASE_URL_<SERVICE> and in the schema name paysys_<service>
SERVICE_ALIASES = {
    "default": "core",
    "orders": "orders",
    "funds": "funds",
    "points": "points",
    "accounting": "accounting",
    "notifications": "notifications",
    "sandbox": "sandbox",
}


def _sqlite_database(path: Path) -> dict:
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


def _service_database(service: str) -> dict:
    override = os.environ.get(f"DATABASE_URL_{service.upper()}")
    if override:
        return _configure(dj_database_url.parse(override, conn_max_age=60, conn_health_checks=True))
    base = os.environ.get("DATABASE_URL")
    if not base:
        return _sqlite_database(VAR_DIR / f"{service}.sqlite3")
    if base.startswith("sqlite"):
        return _sqlite_database(VAR_DIR / f"{service}.sqlite3")
    parts = urlsplit(base)
    prefix = parts.path.lstrip("/") or "paysys"
    url = urlunsplit(parts._replace(path=f"/{prefix}_{service}"))
    return _configure(dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True))


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
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache: API throttling, and pending relay kicks (one pass for many commits) -------------
# Redis in full stack, a file cache shared by processes otherwise

CACHE_URL = os.environ.get("CACHE_URL", "")
_broker_env = os.environ.get("CELERY_BROKER_URL", "")
if not CACHE_URL and _broker_env.startswith("redis"):
    CACHE_URL = _broker_env
if CACHE_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Refuse oversized request bodies before they are parsed (a notify or an order is < 4 KB).
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200

# --- security: on whenever DEBUG is off ---------------------------------------------------

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = 31_536_000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", PUBLIC_BASE_URL if DEBUG else "")

# --- API ----------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["paysys.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["paysys.api.authentication.IsMerchant"],
    "DEFAULT_THROTTLE_CLASSES": ["paysys.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "paysys.api.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT", "1200/min")  # per API key
ORDER_CURRENCIES = env_list("ORDER_CURRENCIES", "CNY")
ORDER_EXPIRY_SECONDS = int(os.environ.get("ORDER_EXPIRY_SECONDS", str(30 * 60)))
# order polling: a notify may be lost, so orders asks the bank itself; seconds between asks
# while no notify came, then every ORDER_POLL_LATE_INTERVAL until the order expires
ORDER_POLL_SCHEDULE = [int(x) for x in env_list("ORDER_POLL_SCHEDULE", "2,3,5,10,20,30")]
ORDER_POLL_LATE_INTERVAL = int(os.environ.get("ORDER_POLL_LATE_INTERVAL", "180"))
# an expired order is closed once the bank says it was not paid; if the bank cannot be asked,
# it is closed anyway this long after expiry (a payment arriving later is flagged for a human)
ORDER_CLOSE_GRACE_SECONDS = int(os.environ.get("ORDER_CLOSE_GRACE_SECONDS", "600"))

SPECTACULAR_SETTINGS = {
    "TITLE": "paysys API",
    "DESCRIPTION": "Payment orders for merchants. Authenticate with `Authorization: Bearer <api_key>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- bank simulator and gateway -----------------------------------------------------------

BANK_SHARED_SECRET = os.environ.get("BANK_SHARED_SECRET", "")
if not BANK_SHARED_SECRET:
    if not DEBUG:
        raise RuntimeError("BANK_SHARED_SECRET must be set when DEBUG is off")
    BANK_SHARED_SECRET = "dev-bank-shared-secret"
BANK_NOTIFY_URL = os.environ.get("BANK_NOTIFY_URL", f"{PUBLIC_BASE_URL}/gateway/bank/notify")
BANK_QUERY_URL = os.environ.get("BANK_QUERY_URL", f"{PUBLIC_BASE_URL}/sandbox/bank/payments/")
# the bank's own resend schedule for unacknowledged notifies (seconds after the payment)
BANK_NOTIFY_SCHEDULE = [0, 2, 5, 15, 30, 60, 120, 300, 600, 1800]

# --- outbound requests (paysys/core/netguard.py) ------------------------------------------

# private networks the platform may send to (merchant notify and check-back URLs); anything
# loopback, private, link-local, multicast or reserved is refused unless listed here. With DEBUG
# on (local development) loopback is allowed so a merchant server on the same machine works.
NOTIFY_ALLOWED_NETWORKS = env_list("NOTIFY_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128" if DEBUG else "")

# --- reliable messages (paysys/messaging) --------------------------------------------------

# when each send happens: the 1st at once (0), the next ones 60, 120, 300 and 900 s after the
# previous send; a message still not consumed 900 s after its 5th send goes DEAD (admin resends)
MESSAGE_RESEND_SCHEDULE = [int(x) for x in env_list("MESSAGE_RESEND_SCHEDULE", "0,60,120,300,900")]
MESSAGE_CHECK_BACK_DELAY = int(os.environ.get("MESSAGE_CHECK_BACK_DELAY", "60"))  # a PREPARED message this old is checked
MESSAGE_CHECK_BACK_INTERVAL = int(os.environ.get("MESSAGE_CHECK_BACK_INTERVAL", "60"))
MESSAGE_CHECK_BACK_MAX = int(os.environ.get("MESSAGE_CHECK_BACK_MAX", "15"))  # undecided this often -> DEAD
MESSAGE_CHECK_BACK_BUDGET = 20  # seconds one recovery pass may spend asking producers
MESSAGE_BROKER_RETRY_SECONDS = 5  # a message the broker refused is tried again this soon
MESSAGE_KICK_TTL = 5  # seconds a pending relay kick suppresses further kicks
# the two-phase HTTP API (/api/v1/messages) is off until a token is set, and open only to the
# topics listed: an outside producer must never be able to announce e.g. a bank payment
MESSAGING_SERVICE_TOKEN = os.environ.get("MESSAGING_SERVICE_TOKEN", "")
MESSAGING_HTTP_TOPICS = env_list("MESSAGING_HTTP_TOPICS", "")

# --- Celery: one queue per service; settings that never lose a task -----------------------

SERVICE_QUEUES = ["core", "orders", "funds", "points", "accounting", "notifications", "sandbox"]
CELERY_BROKER_URL = _broker_env or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
    # prefork workers poll a non-async transport about once per second per task; the solo pool
    # consumes back to back (it cannot enforce time limits: an embedded-mode trade-off)
    CELERY_WORKER_POOL = "solo"
else:
    # longer than any countdown paysys uses (CELERY_MAX_COUNTDOWN), so no early redelivery
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_MAX_COUNTDOWN = 600
CELERY_TASK_QUEUES = [Queue(name, routing_key=name) for name in SERVICE_QUEUES]
CELERY_TASK_DEFAULT_QUEUE = "core"
CELERY_TASK_ROUTES = {f"{name}.*": {"queue": name, "routing_key": name} for name in SERVICE_QUEUES}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 60
CELERY_TASK_TIME_LIMIT = 90
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "paysys.core.schedules:Scheduler"
# Beat schedules live here, in code; paysys.core.schedules syncs them into django-celery-beat
# after every migrate and when beat starts (entries removed here are removed there too).
CELERY_BEAT_SCHEDULE = {
    "orders.close_expired_orders": {"task": "orders.close_expired_orders", "schedule": 30.0},
    "sandbox.resend_bank_notifies": {"task": "sandbox.resend_bank_notifies", "schedule": 5.0},
    "messaging.recover_messages": {"task": "messaging.recover_messages", "schedule": 5.0},
    "orders.poll_bank": {"task": "orders.poll_bank", "schedule": 1.0},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
