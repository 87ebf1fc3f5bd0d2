"""``manage.py stack status|stop NAME|start NAME|kill NAME|cut SERVICE|restore SERVICE``: steer
the stack that runs on this ``var/`` folder (``make run``, over ``var/stack.sock``).

``stop`` keeps a process down until ``start``; ``kill`` SIGKILLs it as a crash would (the stack
restarts it); ``cut`` takes a service's database away from every process of the stack (its
SQLite file locked, or the proxy in front of MariaDB closed) until ``restore``. A service is down,
as the course means it, when its worker is stopped and its database cut:
``stack stop funds && stack cut funds``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from paysys.core.stack import control_request

OPS = ("status", "stop", "start", "kill", "cut", "restore")


def stack_request(op: str, name: str | None = None) -> dict:
    """One request to the running stack; CommandError when none runs or it refuses."""
    path = settings.VAR_DIR / "stack.sock"
    try:
        answer = control_request(path, op, name)
    except OSError as exc:
        raise CommandError(
            f"no running stack answers on {path} ({exc.strerror or exc}); start one with `make run`"
        ) from None
    if not answer.get("ok"):
        raise CommandError(answer.get("error") or "the stack refused")
    return answer


class Command(BaseCommand):
    help = "Steer the running stack: status, stop/start/kill a process, cut/restore a service's database."

    def add_arguments(self, parser):
        parser.add_argument("op", choices=OPS)
        parser.add_argument(
            "name",
            nargs="?",
            help="a Procfile process (stop, start, kill) or a service (cut, restore)",
        )

    def handle(self, *args, op, name, **options):
        if op != "status" and not name:
            raise CommandError(
                f"`stack {op}` needs a name: a Procfile process for stop/start/kill, a service for cut/restore"
            )
        answer = stack_request(op, name)
        if op != "status":
            self.stdout.write(answer["message"])
            return
        width = max(len(p["name"]) for p in answer["processes"])
        for p in answer["processes"]:
            detail = f"pid {p['pid']}, up {p['up_seconds']} s" if p["pid"] else ""
            self.stdout.write(f"{p['name']:<{width}}  {p['state']:<10}  {detail}".rstrip())
        for s in answer["services"]:
            self.stdout.write(
                f"database {s['service']:<13}  {'CUT' if s['cut'] else 'reachable':<10}  {s['database']}"
            )
        if not answer["services"]:
            self.stdout.write(
                "databases: not cuttable (MariaDB without proxies: run the stack with PAYSYS_DB_PROXY=1)"
            )
