from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from paysys.core import retention


class Command(BaseCommand):
    help = (
        "Delete history older than an age, in small batches, as beat does every minute: consumed messages "
        "with their inbox rows, notification attempts, processed bank-notify receipts. Messages that may "
        "still be sent (PREPARED, SENDING, DEAD), and receipts not processed, always stay."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            default=f"{settings.RETENTION_DAYS}d",
            help="an age in days or hours, e.g. 30d or 36h (at least 1d; default RETENTION_DAYS)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
        )

    def handle(self, *args, older_than: str, dry_run: bool, **options):
        try:
            age = retention.parse_age(older_than)
            if age < retention.MIN_AGE:
                raise ValueError(
                    f"{older_than} is younger than the minimum of 1d (24h): a copy of a consumed "
                    "message may still be on its way, and its inbox row must be there to stop it"
                )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        verb = "would go" if dry_run else "deleted"
        self.stdout.write(
            f"{'counting' if dry_run else 'deleting'} history older than {older_than}"
        )
        live = self.stdout.isatty()

        def progress(table: str, counts: dict[str, int], done: bool) -> None:
            if done or live:  # a terminal sees each table count up; a log gets one line per table
                line = f"  {table}: {counts[table]:,} {verb}" + "".join(
                    f", {label}: {n:,}" for label, n in counts.items() if label != table
                )
                self.stdout.write(line, ending="\n" if done else "\r")

        result = retention.purge_history(older_than=age, dry_run=dry_run, progress=progress)
        self.stdout.write(f"{sum(result.counts.values()):,} row(s) {verb} in all")
        if result.skipped:
            raise CommandError(
                f"skipped, database unavailable: {', '.join(result.skipped)}; run it again once it answers"
            )
