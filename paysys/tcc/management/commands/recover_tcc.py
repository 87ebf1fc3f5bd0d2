from django.core.management.base import BaseCommand

from paysys.tcc.recovery import recover_tcc


class Command(BaseCommand):
    help = "One pass of TCC recovery (what beat runs): cancel expired tries, resend unfinished phase two, flag exhausted."

    def handle(self, *args, **options):
        totals = recover_tcc()
        self.stdout.write(
            f"cancelled {totals['cancelled']} expired transaction(s); resent {totals['resent']}; "
            f"finished {totals['finished']}; flagged {totals['flagged']} for a human"
        )
