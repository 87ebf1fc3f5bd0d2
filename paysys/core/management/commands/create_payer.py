import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from paysys.core.errors import DomainError
from paysys.core.management import command_actor, command_error
from paysys.core.services import payer_create_with_agreement

NO_MERCHANT = (
    "pass --merchant ID: the merchant this payer's token will be valid at (its agreement is with one "
    "merchant; `manage.py create_merchant` makes one, `manage.py payer_agreement issue` adds others)"
)


class Command(BaseCommand):
    help = (
        "Create a payer and its agreement with one merchant; prints the agreement's payer token (shown "
        "once), with which that merchant, and no other, may charge the payer's wallet. Without --merchant: "
        "the demo merchant that `make run` prints (where the sandbox is on and it exists), else an error."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--merchant",
            type=int,
            help="the merchant the token is for (default: the demo merchant, see above)",
        )
        parser.add_argument(
            "--per-payment-limit",
            type=int,
            help="the most one payment may take (minor units); default none",
        )
        parser.add_argument(
            "--daily-limit",
            type=int,
            help="the most a day's payments may take together (minor units); default none",
        )
        parser.add_argument("--json", action="store_true", help="print {payer_id, payer_token}")

    def handle(self, *args, **options):
        merchant_id = options["merchant"] or self.demo_merchant_id()
        try:
            payer, agreement, payer_token = payer_create_with_agreement(
                name=options["name"],
                merchant_id=merchant_id,
                issued_by=command_actor(),
                per_payment_limit=options["per_payment_limit"],
                daily_limit=options["daily_limit"],
            )
        except ValidationError as exc:
            raise CommandError(f"payer not created: {'; '.join(exc.messages)}") from exc
        except DomainError as exc:
            raise command_error(exc, prefix="payer not created: ") from exc
        if options["json"]:
            self.stdout.write(json.dumps({"payer_id": payer.pk, "payer_token": payer_token}))
        else:
            self.stdout.write(
                f"payer #{payer.pk} {payer.name}, {agreement} (payer_agreement issue/reissue/revoke)"
            )
            self.stdout.write(
                f"  payer token for merchant #{merchant_id} (shown once): {payer_token}"
            )

    def demo_merchant_id(self) -> int:
        """The dev stack's demo merchant: its file is written by `make run` only where the sandbox is on."""
        if settings.SANDBOX_ENABLED:
            from paysys.demo.management.commands.run_banner import saved_demo_merchant

            saved = saved_demo_merchant()
            if saved and isinstance(saved.get("merchant_id"), int):
                return saved["merchant_id"]
        raise CommandError(f"payer not created: {NO_MERCHANT}")
