"""Every service's tables live in its own database alias (docs/architecture.md, "Services, databases, queues").

The router is the single place that says which alias owns which model. Code never joins,
locks or writes across aliases in one transaction; a reference across aliases is a plain id.
"""

from __future__ import annotations

from paysys.topology import DATABASES

# app label -> alias; apps not listed (auth, admin, sessions, beat, core, gateway) live in default
APP_ALIASES = {
    database.app: database.alias
    for database in DATABASES
    if database.app and not database.model_prefix
}

# the accounts app holds two services: fund-side models start with "fund", points-side with "points"
ACCOUNTS_PREFIXES = tuple(
    (database.model_prefix, database.alias) for database in DATABASES if database.app == "accounts"
)

# infrastructure apps with one schema and a table in every alias (the outbox/inbox); their rows
# are always read and written with an explicit .using(alias)
SHARED_APPS = {"messaging"}
# TCC: the coordinator's tables live in default only; the barrier table in every alias (next to
# each participant's business rows, read and written with an explicit alias)
TCC_SHARED_MODELS = {"barrier"}


def alias_for(app_label: str, model_name: str | None) -> str | None:
    if app_label in SHARED_APPS:
        return None
    if app_label == "tcc":
        return None if (model_name or "").lower() in TCC_SHARED_MODELS else "default"
    if app_label == "accounts":
        for prefix, alias in ACCOUNTS_PREFIXES:
            if model_name and model_name.lower().startswith(prefix):
                return alias
        raise LookupError(
            f"accounts.{model_name} must start with 'fund' or 'points' to pick its alias"
        )
    return APP_ALIASES.get(app_label, "default")


class ServiceRouter:
    def db_for_read(self, model, **hints):
        return alias_for(model._meta.app_label, model._meta.model_name)

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        return obj1._state.db == obj2._state.db

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if app_label in SHARED_APPS or (
            app_label == "tcc" and (model_name or "").lower() in TCC_SHARED_MODELS
        ):
            return True
        if model_name is None and app_label == "accounts":
            return db in {alias for _, alias in ACCOUNTS_PREFIXES}
        return alias_for(app_label, model_name) == db
