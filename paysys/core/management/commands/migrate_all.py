from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError, connections


def ensure_database(alias: str) -> bool:
    """Create the alias's MySQL/MariaDB schema if it is missing; True if it was created.

    SQLite files are created by connecting; other engines are left to their operator.
    """
    db = settings.DATABASES[alias]
    if db["ENGINE"] != "django.db.backends.mysql":
        if db["ENGINE"] == "django.db.backends.sqlite3":
            settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        return False
    import MySQLdb

    kwargs = {
        "host": db.get("HOST") or "127.0.0.1",
        "user": db.get("USER") or "root",
        "connect_timeout": 5,
    }
    if db.get("PORT"):
        kwargs["port"] = int(db["PORT"])
    if db.get("PASSWORD"):
        kwargs["password"] = db["PASSWORD"]
    try:
        server = MySQLdb.connect(**kwargs)
    except MySQLdb.OperationalError as exc:
        raise CommandError(
            f"cannot reach the database server for alias {alias!r} at {kwargs['host']}:{kwargs.get('port', 3306)} "
            f"({exc.args[-1]}). Start MariaDB/MySQL or fix DATABASE_URL."
        ) from exc
    try:
        cursor = server.cursor()
        created = cursor.execute("SHOW DATABASES LIKE %s", [db["NAME"]]) == 0
        if created:
            cursor.execute(
                f"CREATE DATABASE IF NOT EXISTS `{db['NAME']}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
        return created
    finally:
        server.close()


class Command(BaseCommand):
    help = "Create every service's database if missing and migrate each alias (what `make run` does first)."

    def handle(self, *args, **options):
        for alias in settings.DATABASES:
            if ensure_database(alias):
                self.stdout.write(
                    f"created database {settings.DATABASES[alias]['NAME']} for alias {alias}"
                )
            self.stdout.write(f"migrating {alias} ...")
            try:
                call_command("migrate", database=alias, interactive=False, verbosity=0)
            except OperationalError as exc:
                raise CommandError(
                    f"migrating alias {alias!r} failed: {exc}. Is its database reachable?"
                ) from exc
        connections.close_all()
        self.stdout.write(self.style.SUCCESS("all service databases are migrated"))
