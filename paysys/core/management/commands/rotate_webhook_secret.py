import json
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from paysys.core.errors import DomainError
from paysys.core.services import merchant_rotate_webhook_secret, webhook_secret_grace


class Command(BaseCommand):
    help = (
        "Give a merchant a new webhook secret and print it (shown here once). Notifications carry "
        "signatures with both the new and the old secret until the grace period ends."
    )

    def add_arguments(self, parser):
        parser.add_argument("--merchant", type=int, required=True, help="merchant id")
        parser.add_argument(
            "--grace-hours",
            type=float,
            default=None,
            help=f"hours the old secret keeps signing (default NOTIFY_SECRET_GRACE = "
            f"{webhook_secret_grace().total_seconds() / 3600:g}; 0 = stop at once, e.g. after a leak)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="print {merchant_id, webhook_secret, previous_valid_until}",
        )

    def handle(self, *args, **options):
        hours = options["grace_hours"]
        grace = None if hours is None else timedelta(hours=hours)
        try:
            merchant = merchant_rotate_webhook_secret(merchant_id=options["merchant"], grace=grace)
        except DomainError as exc:
            raise CommandError(f"secret not rotated: {exc.message}") from exc
        until = merchant.previous_webhook_secret_until.isoformat()
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "merchant_id": merchant.pk,
                        "webhook_secret": merchant.webhook_secret,
                        "previous_valid_until": until,
                    }
                )
            )
            return
        self.stdout.write(f"merchant #{merchant.pk} {merchant.name}: new webhook secret (keep it):")
        self.stdout.write(f"  {merchant.webhook_secret}")
        self.stdout.write(f"  the previous secret keeps signing too until {until}")
