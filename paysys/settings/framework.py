"""How Django, Django REST framework and drf-spectacular are wired: apps, middleware, templates,
locale, the API's classes and the OpenAPI schema. Fixed, but for the bank simulator's app (present
only where the sandbox is enabled) and the proxies the API trusts."""

from __future__ import annotations

from paysys.settings.deployment import SANDBOX_ENABLED
from paysys.settings.security import NUM_PROXIES

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from this origin: offline, and CSP 'self' holds
    "django_celery_beat",
    "paysys.core",
    "paysys.messaging",
    "paysys.tcc",
    "paysys.gateway",
    *(["paysys.sandbox"] if SANDBOX_ENABLED else []),
    "paysys.demo",
    "paysys.reconcile",
    "paysys.ops",
    "paysys.bench",
    "orders",
    "accounts",
    "accounting",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "paysys.api.middleware.ContentSecurityPolicyMiddleware",
    "paysys.api.middleware.PrivateAnswersMiddleware",
    "paysys.api.middleware.PublicRateLimitMiddleware",
    "paysys.api.middleware.BodySizeLimitMiddleware",
    "paysys.api.middleware.ApiJsonErrorsMiddleware",
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

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
# admin shows times to the second (paysys/formats/en/formats.py)
FORMAT_MODULE_PATH = ["paysys.formats"]

# --- API ----------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["paysys.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["paysys.api.authentication.IsMerchant"],
    "DEFAULT_THROTTLE_CLASSES": ["paysys.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["paysys.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "paysys.api.schema.ApiAutoSchema",
    "EXCEPTION_HANDLER": "paysys.api.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "NUM_PROXIES": NUM_PROXIES,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "paysys API",
    "DESCRIPTION": "Payment orders for merchants. Authenticate with `Authorization: Bearer <api_key>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    # a feature that is off is not in the schema (the message API without its token)
    "PREPROCESSING_HOOKS": ["paysys.messaging.api.hide_when_disabled"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "paysys.api.schema.strict_request_bodies",
    ],
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # "status" is a field of orders and of notifications, with different choices
    "ENUM_NAME_OVERRIDES": {"NotificationStatusEnum": "notifications.models.Notification.Status"},
}
