"""``manage.py payer_agreement issue|reissue|revoke|list``: a payer's agreements with merchants."""

import json

from django.core.management.base import BaseCommand, CommandError

from paysys.core.errors import DomainError
from paysys.core.management import command_actor, command_error
from paysys.core.selectors import agreement_in_force, agreement_list
from paysys.core.services import agreement_issue, agreement_reissue, agreement_revoke


class Command(BaseCommand):
    help = (
        "A payer's agreements: which merchant may charge the payer's wallet, within which limits. "
        "issue: a new agreement and its token (shown once); reissue: a new token for an agreement (the "
        "old one stops working); revoke: end an agreement; list: agreements with who and when."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(
            dest="action", required=True, metavar="issue|reissue|revoke|list"
        )
        issue = actions.add_parser("issue", help="a new agreement between a payer and a merchant")
        issue.add_argument("--payer", type=int, required=True, help="payer id")
        issue.add_argument(
            "--merchant",
            type=int,
            required=True,
            help="merchant id: the only one the token is valid at",
        )
        issue.add_argument(
            "--per-payment-limit",
            type=int,
            help="the most one payment may take (minor units); default none",
        )
        issue.add_argument(
            "--daily-limit",
            type=int,
            help="the most a day's payments may take together (minor units); default none",
        )
        issue.add_argument(
            "--currency", help="the limits' currency (default: the first of ORDER_CURRENCIES)"
        )
        issue.add_argument(
            "--replace",
            action="store_true",
            help="revoke the agreement in force between them first (e.g. to change its limits)",
        )
        for name, what in (
            ("reissue", "give an agreement a new token"),
            ("revoke", "end an agreement"),
        ):
            sub = actions.add_parser(name, help=what)
            sub.add_argument(
                "--agreement", type=int, help="agreement id; or name it by --payer and --merchant"
            )
            sub.add_argument(
                "--payer", type=int, help="payer id (with --merchant: their agreement in force)"
            )
            sub.add_argument("--merchant", type=int, help="merchant id")
        listing = actions.add_parser("list", help="agreements, newest first")
        listing.add_argument("--payer", type=int)
        listing.add_argument("--merchant", type=int)
        for sub in actions.choices.values():
            sub.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args, **options):
        try:
            out = getattr(self, options["action"])(options)
        except DomainError as exc:
            raise command_error(exc, prefix=f"{options['action']}: ") from exc
        if options["json"]:
            self.stdout.write(json.dumps(out))

    def issue(self, options) -> dict:
        agreement, token = agreement_issue(
            payer_id=options["payer"],
            merchant_id=options["merchant"],
            issued_by=command_actor(),
            currency=options["currency"],
            per_payment_limit=options["per_payment_limit"],
            daily_limit=options["daily_limit"],
            replace=options["replace"],
        )
        return self.token_out(options, agreement, token)

    def reissue(self, options) -> dict:
        agreement, token = agreement_reissue(
            agreement_id=self.agreement_id(options), issued_by=command_actor()
        )
        return self.token_out(options, agreement, token)

    def revoke(self, options) -> dict:
        agreement = agreement_revoke(
            agreement_id=self.agreement_id(options), revoked_by=command_actor()
        )
        if not options["json"]:
            self.stdout.write(
                f"{agreement}: revoked at {agreement.revoked_at.isoformat()} by {agreement.revoked_by}"
            )
        return _describe(agreement)

    def list(self, options) -> list:
        rows = [
            {**_describe(a), "used_today": a.used_today}
            for a in agreement_list(payer_id=options["payer"], merchant_id=options["merchant"])
        ]
        if not options["json"]:
            for row in rows:
                state = (
                    f"revoked {row['revoked_at']} by {row['revoked_by']}"
                    if row["revoked_at"]
                    else "in force"
                )
                limits = ", ".join(
                    f"{row[key]} {label}"
                    for key, label in (
                        ("per_payment_limit", "per payment"),
                        ("daily_limit", "per day"),
                    )
                    if row[key]
                )
                self.stdout.write(
                    f"#{row['agreement_id']} payer #{row['payer_id']} merchant #{row['merchant_id']}: {state}; "
                    f"limits ({row['currency']}) {limits or 'none'}; used today {row['used_today']}; "
                    f"issued {row['created_at']} by {row['created_by']}"
                )
        return rows

    def agreement_id(self, options) -> int:
        if options["agreement"] is not None:
            return options["agreement"]
        if options["payer"] is None or options["merchant"] is None:
            raise CommandError(
                f"{options['action']}: name the agreement: --agreement ID, or --payer ID --merchant ID"
            )
        agreement = agreement_in_force(payer_id=options["payer"], merchant_id=options["merchant"])
        if agreement is None:
            raise CommandError(
                f"{options['action']}: payer #{options['payer']} has no agreement in force with "
                f"merchant #{options['merchant']}"
            )
        return agreement.pk

    def token_out(self, options, agreement, token: str) -> dict:
        if not options["json"]:
            self.stdout.write(
                f"{agreement}: payer token for merchant #{agreement.merchant_id} (shown once): {token}"
            )
        return {**_describe(agreement), "payer_token": token}


def _describe(agreement) -> dict:
    return {
        "agreement_id": agreement.pk,
        "payer_id": agreement.payer_id,
        "merchant_id": agreement.merchant_id,
        "currency": agreement.currency,
        "per_payment_limit": agreement.per_payment_limit,
        "daily_limit": agreement.daily_limit,
        "created_at": agreement.created_at.isoformat(),
        "created_by": agreement.created_by,
        "token_issued_at": agreement.token_issued_at.isoformat(),
        "token_issued_by": agreement.token_issued_by,
        "revoked_at": agreement.revoked_at.isoformat() if agreement.revoked_at else None,
        "revoked_by": agreement.revoked_by,
    }
