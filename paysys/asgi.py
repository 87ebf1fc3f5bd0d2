"""The web process's application, served by uvicorn (``manage.py serve``, the Procfile's ``web``).

Django's WSGI application behind paysys.core.serving.BufferedWSGI: requests are read by the event
loop and answered on a fixed pool of threads (why: that module's docstring).
"""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from paysys.core.serving import BufferedWSGI

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paysys.settings")

application = BufferedWSGI(
    get_wsgi_application(),
    threads=settings.WEB_THREADS,
    queue_seconds=settings.WEB_QUEUE_SECONDS,
    read_timeout=settings.WEB_READ_TIMEOUT,
    max_body=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
)
