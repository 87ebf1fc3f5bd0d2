import os

from django.core.wsgi import get_wsgi_application

from paysys.core.checks import refuse_on_errors

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paysys.settings")
application = get_wsgi_application()
# a WSGI server runs no system checks: it refuses to serve on a settings Error (paysys/core/checks.py)
refuse_on_errors()
