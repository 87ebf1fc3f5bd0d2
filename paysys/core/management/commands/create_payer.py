import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from paysys.core.services import payer_create_with_token


class Command(BaseCommand):
    help = "Create a payer."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--json", action="store_true", help="print {payer_id, payer_token}")

    def handle(self, *args, **options):
        try:
            payer, payer_token = payer_create_with_token(name=options["name"])
        except ValidationError as exc:
            raise CommandError(f"payer not created: {'; '.join(exc.messages)}") from exc
        if options["json"]:
            self.stdout.write(json.dumps({"payer_id": payer.pk, "payer_token": payer_token}))
        else:
            self.stdout.write(f"payer #{payer.pk} {payer.name}, payer token (shown once): {payer_token}")
