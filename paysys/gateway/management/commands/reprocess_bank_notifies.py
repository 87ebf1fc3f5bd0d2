from django.core.management.base import BaseCommand

from paysys.gateway.models import BankNotifyReceipt
from paysys.gateway.selectors import bank_notify_receipts_to_reprocess
from paysys.gateway.services import bank_notify_reprocess


class Command(BaseCommand):
    help = (
        "Read stored bank notify receipts again after a fix, as the admin action does: the given ids, "
        "or every REJECTED receipt and every RECEIVED one a dead process left behind."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "ids", nargs="*", type=int, help="receipt ids (default: all rejected or stranded)"
        )

    def handle(self, *args, ids: list[int], **options):
        ids = ids or list(bank_notify_receipts_to_reprocess().values_list("pk", flat=True))
        counts = {state: 0 for state in BankNotifyReceipt.State.values}
        for pk in ids:
            try:
                receipt = bank_notify_reprocess(pk)
            except BankNotifyReceipt.DoesNotExist:
                self.stdout.write(f"receipt {pk}: no such receipt")
                continue
            counts[receipt.state] += 1
            if receipt.state == BankNotifyReceipt.State.REJECTED:
                self.stdout.write(f"receipt {pk} still rejected: {receipt.error.splitlines()[0]}")
        self.stdout.write(
            f"{len(ids)} receipt(s): {counts['PROCESSED']} processed, {counts['REJECTED']} rejected"
        )
