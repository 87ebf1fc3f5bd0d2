from django.core.management.base import BaseCommand

from paysys.messaging import recover_messages


class Command(BaseCommand):
    help = "One pass of message recovery and check-back (what beat runs): resend due, resolve stale prepared."

    def handle(self, *args, **options):
        totals = recover_messages()
        self.stdout.write(
            f"resent {totals['resent']} message(s); checked back {totals['checked']} prepared message(s)"
        )
