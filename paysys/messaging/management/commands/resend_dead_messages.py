from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from paysys.messaging import registry, resend_dead_messages
from paysys.messaging.selectors import dead_messages


class Command(BaseCommand):
    help = (
        "Resend every DEAD message of one queue in one service's outbox, as the admin's "
        "'Resend all dead messages of a queue' does. Never-confirmed messages stay DEAD: confirm or discard them."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--service",
            required=True,
            help=f"whose outbox: a database alias ({', '.join(settings.DATABASES)}) or its service name",
        )
        parser.add_argument(
            "--queue", required=True, choices=settings.SERVICE_QUEUES, help="the consumers' queue"
        )

    def handle(self, *args, service: str, queue: str, **options):
        alias = self._alias(service)
        try:
            resent = resend_dead_messages(alias, queue=queue)
            left = dead_messages(alias, queue=queue).count()
        except DatabaseError as exc:
            raise CommandError(f"the {alias} database is unavailable: {exc}") from exc
        self.stdout.write(f"resent {resent} dead message(s) of queue {queue} in {alias}")
        if left:
            self.stdout.write(
                f"{left} never-confirmed message(s) stay DEAD: confirm or discard them in admin"
            )

    def _alias(self, service: str) -> str:
        if service in settings.DATABASES:
            return service
        try:
            return registry.alias_for_queue(service)
        except LookupError:
            raise CommandError(
                f"unknown service {service!r}: one of {', '.join(settings.DATABASES)}"
            ) from None
