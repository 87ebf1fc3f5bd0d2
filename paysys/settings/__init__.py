"""paysys settings (``DJANGO_SETTINGS_MODULE=paysys.settings``), read from the environment.

Two modes share one code path:

* embedded default (nothing set): every database alias is its own SQLite file under ``var/``
  and Celery uses kombu's ``filesystem://`` transport, so ``make run`` needs no server;
* full stack: ``DATABASE_URL=mysql://root@127.0.0.1:3306/paysys`` gives every service its own
  schema ``paysys_<service>`` and ``CELERY_BROKER_URL=redis://...`` a real broker.

One module per concern, composed here; each imports by name what it reads from another, so none
depends on the order below. Every environment variable is read in the module of its concern
(numbers, flags, lists and secrets through the helpers of ``environment``): ``deployment``
(DEBUG, the embedded default, the public address, the bank simulator), ``security``,
``databases`` (and the cache), ``web``, ``payments`` (orders, the bank), ``messaging``,
``notifications``, ``tcc``, ``queues`` (Celery) and ``operations`` (health, retention, logging).
``constants`` holds paysys's own fixed values, ``framework`` the fixed wiring of Django, DRF and
the OpenAPI schema.

Two kinds of refusal:

* missing or short secrets, and the bank simulator with DEBUG off, stop start-up here
  (ImproperlyConfigured) in every process that loads settings, ``manage.py shell`` and scripts
  included, which run no system checks;
* settings that must agree with each other, or have a shape, are system checks (tag
  ``settings``, paysys/core/checks.py): every manage.py command stops on them, and the WSGI and
  ASGI applications and Celery workers and beat run them at start-up and refuse to start.
"""

from paysys.settings.constants import *  # noqa: F403
from paysys.settings.databases import *  # noqa: F403
from paysys.settings.databases import make_sqlite_folders
from paysys.settings.deployment import *  # noqa: F403
from paysys.settings.environment import *  # noqa: F403
from paysys.settings.framework import *  # noqa: F403
from paysys.settings.messaging import *  # noqa: F403
from paysys.settings.notifications import *  # noqa: F403
from paysys.settings.operations import *  # noqa: F403
from paysys.settings.payments import *  # noqa: F403
from paysys.settings.queues import *  # noqa: F403
from paysys.settings.security import *  # noqa: F403
from paysys.settings.tcc import *  # noqa: F403
from paysys.settings.web import *  # noqa: F403

# The embedded databases' folder is made here, once every module above has had its say: a process
# whose settings refuse (ImproperlyConfigured) leaves no folder behind. The folders this process
# made, outermost first: `manage.py runstack` removes them again, while empty, when it refuses.
VAR_DIRS_MADE = make_sqlite_folders()
