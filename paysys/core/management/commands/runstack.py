"""``manage.py runstack [NAME ...]``: the whole stack from the Procfile (what ``make run`` starts).

Web, one Celery worker per queue and beat, each restarted if it exits (paysys/core/stack.py);
Ctrl-C stops them all. Refuses to start when another stack runs on the same ``var/`` folder or
when the web port is taken, saying so.

A start that is refused (a settings check, a public bind, another stack, a taken port) leaves
nothing behind that it made: no ``stack.lock``, no ``cache/``, no ``var/`` folder while empty.

``manage.py stack ...`` steers it while it runs (``var/stack.sock``). To let ``stack cut SERVICE``
take a service's database away, each service's database is reachable only through a handle the
stack holds: on SQLite its file (locked on a cut); on MariaDB, with ``--db-proxy`` (or
``PAYSYS_DB_PROXY=1``), a TCP proxy per service that every process of the stack connects through.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from paysys import topology
from paysys.core.faults import SqliteLock, TcpProxy, mysql_url
from paysys.core.serving import public_bind_refusal
from paysys.core.stack import (
    StackControl,
    StackLock,
    StackRunning,
    Supervisor,
    describe,
    port_taken,
    read_procfile,
    remove_if_empty,
    started_at_now,
    venv_path,
)


class Command(BaseCommand):
    help = "Run web, every worker and beat from the Procfile; restart any that exits; Ctrl-C stops all."
    started = False  # the supervisor has started the processes (a start not refused)

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", help="only these Procfile entries (default: all)")
        parser.add_argument("-f", "--procfile", default=str(settings.BASE_DIR / "Procfile"))
        parser.add_argument(
            "--no-banner", action="store_true", help="skip the banner (where to click)"
        )
        parser.add_argument(
            "--migrate",
            action="store_true",
            help="migrate every service's database first (make run), once the stack lock and the "
            "port are known to be free: a second `make run` refuses before touching a database",
        )
        parser.add_argument(
            "--db-proxy",
            action="store_true",
            default=os.environ.get("PAYSYS_DB_PROXY") == "1",
            help="MariaDB: every service's database through a proxy `stack cut` can close "
            "(default from PAYSYS_DB_PROXY=1)",
        )

    def execute(self, *args, **options):
        """Django's system checks run in here, before ``handle``: a start they (or ``handle``)
        refuse removes the folders these settings made for var/ again, while empty."""
        try:
            return super().execute(*args, **options)
        finally:
            if not self.started:
                remove_if_empty(getattr(settings, "VAR_DIRS_MADE", ()))

    def handle(self, *args, **options):
        specs = procfile_entries(Path(options["procfile"]), options["names"])
        port, bind = settings.PORT, os.environ.get("BIND") or "127.0.0.1"
        if refusal := public_bind_refusal(bind):
            raise CommandError(refusal)
        base = settings.PUBLIC_BASE_URL

        lock = StackLock(settings.VAR_DIR)
        try:
            lock.acquire(
                {
                    "pid": os.getpid(),
                    "port": port,
                    "base_url": base,
                    "started_at": started_at_now(),
                    "var_dir": str(settings.VAR_DIR),
                }
            )
        except StackRunning as running:
            holder = running.holder
            demo = (
                "make demo"
                if holder.get("port") in (None, 8000)
                else f"PORT={holder['port']} make demo"
            )
            raise CommandError(
                f"a paysys stack already runs on {settings.VAR_DIR} ({describe(holder)}).\n"
                f"Use it (e.g. `{demo}`), stop it first (Ctrl-C in its terminal, or `kill {holder.get('pid', '<pid>')}`), "
                "or give this one its own folder: PAYSYS_VAR_DIR=/path/to/other/var"
            ) from None
        try:
            if any(s.name == "web" for s in specs) and port_taken(bind, port):
                raise CommandError(
                    f"port {port} on {bind} is taken by another process, so the web server cannot start.\n"
                    f"Stop that process, or run paysys on another port: PORT={port + 1} make run"
                )
            if options["migrate"]:
                call_command("migrate_all", stdout=self.stdout)
            if not options["no_banner"]:
                call_command("run_banner", stdout=self.stdout)
            env = {
                **os.environ,
                "PORT": str(port),
                "BIND": bind,
                "PUBLIC_BASE_URL": base,
                "PATH": venv_path(os.environ.get("PATH", "")),
                "PYTHONUNBUFFERED": "1",
            }
            cuts = self.database_faults(env, proxy=options["db_proxy"])
            connections.close_all()  # this process holds no database: a SqliteLock must be its only handle
            supervisor = Supervisor(specs, env=env, cwd=settings.BASE_DIR, write=self._write)
            control = StackControl(supervisor, settings.VAR_DIR / "stack.sock", cuts)
            control.start()
            self.started = True
            try:
                supervisor.run()
            finally:
                control.close()
        finally:
            lock.release(discard=not self.started)  # a refused start leaves no lock file

    def database_faults(self, env: dict, *, proxy: bool) -> dict:
        """service -> what ``stack cut`` closes: its SQLite file's lock, or (``--db-proxy``) the proxy
        every process reaches its MariaDB database through (written into ``env``)."""
        faults = {}
        for alias, db in settings.DATABASES.items():
            service = settings.SERVICE_ALIASES[alias]
            if db["ENGINE"].endswith("sqlite3"):
                faults[service] = SqliteLock(db["NAME"])
            elif db["ENGINE"].endswith("mysql") and proxy:
                faults[service] = TcpProxy(
                    db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 3306)
                ).open()
                env[f"DATABASE_URL_{service.upper()}"] = mysql_url(
                    {**db, "HOST": "127.0.0.1"}, port=faults[service].port
                )
        return faults

    def _write(self, line: str) -> None:
        try:
            self.stdout.write(line)
            self.stdout.flush()
        except (BrokenPipeError, ValueError):
            sys.stderr.write(line + "\n")


def procfile_entries(procfile: Path, names: list[str]) -> list:
    """The Procfile's entries to run: ``names`` (every one by default), without the bank
    simulator's worker where the sandbox is off (nothing routes to its queue there)."""
    specs = read_procfile(procfile)
    unknown = sorted(set(names) - {s.name for s in specs})
    if unknown:
        raise CommandError(
            f"not in {procfile}: {', '.join(unknown)} (there: {', '.join(s.name for s in specs)})"
        )
    if not settings.SANDBOX_ENABLED:
        simulator = {worker.process for worker in topology.WORKERS if worker.sandbox}
        if asked := sorted(simulator & set(names)):
            raise CommandError(
                f"{', '.join(asked)}: the bank simulator's worker runs only where the sandbox is on "
                "(SANDBOX_ENABLED, on by default with DEBUG)"
            )
        specs = [s for s in specs if s.name not in simulator]
    return [s for s in specs if s.name in names] if names else specs
