import json

from django.core.management.base import BaseCommand

from accounts.services import wallet_credit
from paysys.core.errors import DomainError
from paysys.core.management import command_actor, command_error


class Command(BaseCommand):
    help = "Credit a payer's wallet by hand: records who and why, and tells accounting (wallet.credited)."

    def add_arguments(self, parser):
        parser.add_argument("--payer", type=int, required=True, help="payer id")
        parser.add_argument(
            "--amount", type=int, required=True, help="minor units (fen): 1000 = 10.00"
        )
        parser.add_argument(
            "--reason", required=True, help="why; kept in the entry and the voucher"
        )
        parser.add_argument("--currency", help="default: the first of ORDER_CURRENCIES")
        parser.add_argument(
            "--request-key",
            help="idempotency key: running the command again with it credits once (e.g. a ticket id)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="print {entry_id, payer_id, amount, currency, balance}",
        )

    def handle(self, *args, **options):
        try:
            entry = wallet_credit(
                payer_id=options["payer"],
                amount=options["amount"],
                currency=options["currency"],
                reason=options["reason"],
                credited_by=command_actor(),
                request_key=options["request_key"],
            )
        except DomainError as exc:
            raise command_error(exc) from exc
        currency = entry.account.currency
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "entry_id": entry.pk,
                        "payer_id": options["payer"],
                        "amount": entry.amount,
                        "currency": currency,
                        "balance": entry.balance_after,
                    }
                )
            )
        else:
            self.stdout.write(
                f"payer #{options['payer']}: credited {entry.amount} {currency}, balance {entry.balance_after}"
            )
