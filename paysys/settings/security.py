"""Security: the secret key, HTTPS (from the environment, safe defaults whenever DEBUG is off), the
Content-Security-Policy, rate limits, the metrics token and where outbound requests may go.

A missing or short secret stops start-up here, in every process that loads settings (``manage.py
shell`` and scripts too, which run no system checks), with a message saying what to set.
"""

from __future__ import annotations

import os

from paysys.settings.deployment import DEBUG, PUBLIC_BASE_URL, dev_secrets_allowed
from paysys.settings.environment import env_bool, env_int, env_list, env_secret

# 50: the length below which `check --deploy` warns (security.W009)
SECRET_KEY = env_secret(
    "SECRET_KEY",
    min_length=50,
    dev_default=(
        "dev-only-insecure-key-do-not-use-in-production-0123456789abcdef"
        if dev_secrets_allowed
        else None
    ),
)

# --- HTTPS ------------------------------------------------------------------------------------

SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# only behind a proxy that sets it (and strips it from clients): "HTTP_X_FORWARDED_PROTO,https".
# Trusting the header without such a proxy lets any client claim HTTPS, so it is off unless set.
# Any other shape than two values is refused by a system check (paysys.E005).
SECURE_PROXY_SSL_HEADER = tuple(env_list("SECURE_PROXY_SSL_HEADER", "")) or None
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
# preloading asks browsers' lists to never accept plain HTTP for the domain, hard to undo: opt in
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", PUBLIC_BASE_URL if DEBUG else "")
# Content-Security-Policy of every response (paysys.api.middleware.ContentSecurityPolicyMiddleware):
# everything from this origin only; Swagger UI's assets are served locally (drf-spectacular-sidecar)
CONTENT_SECURITY_POLICY = os.environ.get(
    "CONTENT_SECURITY_POLICY",
    # scripts only from files of this origin; inline styles allowed (the admin's and Swagger UI's
    # style attributes), which cannot run code
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'",
)

# --- who is asking, and how often -----------------------------------------------------------

# client addresses: REMOTE_ADDR, unless this many trusted proxies append X-Forwarded-For
NUM_PROXIES = env_int("NUM_PROXIES", 0)
# requests per client address on the public endpoints (paysys.api.middleware.PublicRateLimitMiddleware)
PUBLIC_RATE_LIMITS = {
    # per bank address: at least the payment rate
    "gateway": os.environ.get("GATEWAY_RATE_LIMIT", "60000/min"),
    # the platform polls its query API
    "sandbox": os.environ.get("SANDBOX_RATE_LIMIT", "12000/min"),
    "admin_login": os.environ.get("ADMIN_LOGIN_RATE_LIMIT", "20/min"),
}
API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT", "1200/min")  # per API key
# /metrics answers only "Authorization: Bearer <METRICS_TOKEN>" (Prometheus' bearer_token); off unset
METRICS_TOKEN = env_secret("METRICS_TOKEN", required=False)

# --- outbound requests (paysys/core/netguard.py) ------------------------------------------

# private networks the platform may send to (merchant notify and check-back URLs); anything
# loopback, private, link-local, multicast or reserved is refused unless listed here. With DEBUG
# on (local development) loopback is allowed so a merchant server on the same machine works.
NOTIFY_ALLOWED_NETWORKS = env_list(
    "NOTIFY_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128" if DEBUG else ""
)
