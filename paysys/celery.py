import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paysys.settings")

app = Celery("paysys")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

import paysys.core.heartbeats  # noqa: E402,F401  every worker and beat records its heartbeat (signals)


def _ensure_broker_folders() -> None:
    """kombu's filesystem transport (the embedded broker) expects its folders to exist."""
    from django.conf import settings

    for key in (
        "data_folder_in",
        "data_folder_out",
        "control_folder",
        "processed_folder",
        "staging_folder",
        "claimed_folder",
        "failed_folder",
    ):
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(key)
        if folder:
            os.makedirs(folder, exist_ok=True)


@app.on_after_configure.connect
def _prepare_broker(sender, **kwargs) -> None:
    _ensure_broker_folders()


@signals.worker_init.connect
@signals.beat_init.connect
def _check_settings(sender, **kwargs) -> None:
    """Celery's own start-up runs Django's checks but ignores what they find: a worker or beat
    refuses to start on a settings Error, as every manage.py command does."""
    from paysys.core.checks import refuse_on_errors

    refuse_on_errors()
