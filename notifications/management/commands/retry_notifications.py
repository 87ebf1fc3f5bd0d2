import json

from django.core.management.base import BaseCommand

from notifications.delivery import deliver_due


class Command(BaseCommand):
    help = (
        "One delivery pass (what beat runs every second): send every due notification, record the "
        "attempts, schedule the retries. Safe to run on several machines at once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the pass's counts as JSON")

    def handle(self, *args, **options):
        result = deliver_due()
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
            return
        self.stdout.write(
            f"sent {result.claimed} notification(s): {result.succeeded} delivered, {result.failed} failed "
            f"({result.exhausted} now FAILED for a human) in {result.seconds:.1f} s"
        )
