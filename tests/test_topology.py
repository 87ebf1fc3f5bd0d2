"""The service topology is declared once (paysys/topology.py): the Procfile and the Makefile
agree with it, and the router puts every service's models in its alias."""

import re

from django.conf import settings

from paysys import routers, topology
from paysys.core.stack import read_procfile


def test_the_procfile_runs_every_process_of_the_topology_as_declared():
    procfile = {spec.name: spec.command for spec in read_procfile(settings.BASE_DIR / "Procfile")}

    assert procfile == topology.procfile()


def test_the_makefile_knows_every_worker_queue():
    makefile = (settings.BASE_DIR / "Makefile").read_text()
    queues = re.search(r"^QUEUES\s*:=(.*)$", makefile, re.M).group(1).split()

    assert sorted(queues) == sorted(worker.queue for worker in topology.WORKERS)


def test_each_service_database_holds_its_own_models():
    assert settings.SERVICE_ALIASES == {db.alias: db.service for db in topology.DATABASES}
    assert routers.alias_for("orders", "order") == "orders"
    assert routers.alias_for("accounts", "fundaccount") == "funds"
    assert routers.alias_for("accounts", "pointsaccount") == "points"
    assert routers.alias_for("gateway", "banknotify") == "default"


def test_every_worker_starts_without_celerys_banner():
    """``celery -q`` (a global option: before the subcommand): ``make run`` starts a dozen workers,
    and each would print a screen of ASCII art and configuration; their "ready." log line stays."""
    for worker in topology.WORKERS:
        assert worker.command.startswith("celery -A paysys -q worker "), worker.command
