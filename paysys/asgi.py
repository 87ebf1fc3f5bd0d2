"""The web process's application, served by uvicorn (``manage.py serve``, the Procfile's ``web``).

Django's WSGI application behind paysys.core.serving.BufferedWSGI: requests are read by the event
loop and answered on a fixed pool of threads (why: that module's docstring).
"""

import multiprocessing
import os
import signal
import sys

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from paysys.core.checks import refuse_on_errors
from paysys.core.serving import BufferedWSGI

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paysys.settings")


def _die_with_the_supervisor() -> None:
    """In a worker process of ``manage.py serve`` (uvicorn's supervisor spawned it): have Linux
    send it SIGTERM when the supervisor dies. A supervisor killed with SIGKILL (the OOM killer, a
    supervisor of our own killing only its child) would otherwise leave its workers running,
    holding the port, and the restarted web process could not bind it."""
    if sys.platform != "linux" or multiprocessing.parent_process() is None:
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if multiprocessing.parent_process().pid != os.getppid():  # it died before this line ran
        os.kill(os.getpid(), signal.SIGTERM)


_die_with_the_supervisor()

django_application = get_wsgi_application()
# an ASGI server runs no system checks (``manage.py serve`` has run them in its supervisor; uvicorn
# started alone has not): refuse to serve on a settings Error (paysys/core/checks.py)
refuse_on_errors()
application = BufferedWSGI(
    django_application,
    threads=settings.WEB_THREADS,
    queue_seconds=settings.WEB_QUEUE_SECONDS,
    read_timeout=settings.WEB_READ_TIMEOUT,
    max_body=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
)
