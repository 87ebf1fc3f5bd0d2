import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from paysys.core.netguard import url_refusal
from paysys.core.services import merchant_create


class Command(BaseCommand):
    help = "Create a merchant and print its API key (shown once) and webhook secret."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--notify-url", required=True, help="where paid-order notifications are POSTed"
        )
        parser.add_argument(
            "--fee-rate-bp", type=int, default=60, help="fee in basis points (default 60 = 0.6%%)"
        )
        parser.add_argument(
            "--json", action="store_true", help="print {merchant_id, api_key, webhook_secret}"
        )

    def handle(self, *args, **options):
        try:
            merchant, api_key = merchant_create(
                name=options["name"],
                notify_url=options["notify_url"],
                fee_rate_bp=options["fee_rate_bp"],
            )
        except ValidationError as exc:
            raise CommandError(f"merchant not created: {'; '.join(exc.messages)}") from exc
        refusal = url_refusal(merchant.notify_url)
        if refusal:  # created all the same: NOTIFY_ALLOWED_NETWORKS may be widened later
            self.stderr.write(
                self.style.WARNING(
                    f"warning: notifications to {merchant.notify_url} will be refused at delivery: {refusal}"
                )
            )
        out = {
            "merchant_id": merchant.pk,
            "api_key": api_key,
            "webhook_secret": merchant.webhook_secret,
        }
        if options["json"]:
            self.stdout.write(json.dumps(out))
            return
        self.stdout.write(f"merchant #{merchant.pk} {merchant.name}")
        self.stdout.write(f"  api key (shown once, keep it): {api_key}")
        self.stdout.write(f"  webhook secret: {merchant.webhook_secret}")
