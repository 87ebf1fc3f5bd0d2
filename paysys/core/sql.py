"""Statements the ORM does not offer, or offers at a price: a multi-row insert that skips rows
whose unique key exists, in each database's own words, and a plain insert of many rows
(``bulk_create`` runs its insert compiler over every value of every row: on a hot path with
thousands of rows a second that bookkeeping costs more than the statement)."""

from __future__ import annotations

from contextlib import contextmanager

from django.db import OperationalError, connections

_INSERT = "INSERT INTO {table} ({columns}) VALUES {rows}"
_INSERT_NEW = {
    "mysql": "INSERT IGNORE INTO {table} ({columns}) VALUES {rows}",
    "sqlite": "INSERT OR IGNORE INTO {table} ({columns}) VALUES {rows}",
    "postgresql": "INSERT INTO {table} ({columns}) VALUES {rows} ON CONFLICT DO NOTHING",
}
# MySQL: an existing row is "updated" to itself, so the statement takes its exclusive lock
_INSERT_NEW_LOCKING = {
    **_INSERT_NEW,
    "mysql": "INSERT INTO {table} ({columns}) VALUES {rows} ON DUPLICATE KEY UPDATE {pk} = {pk}",
}


def insert_new_rows(
    alias: str, model, columns: list[str], rows: list[tuple], *, lock_existing: bool = False
) -> int:
    """Insert ``rows`` (tuples in ``columns`` order) into ``model``'s table in one statement,
    skipping those whose unique key exists, without failing; returns the rows inserted (with
    ``lock_existing`` on MySQL the count also includes the rows found, so do not rely on it).

    ``lock_existing``: an existing row is locked as if written (MySQL's ON DUPLICATE KEY UPDATE),
    where INSERT IGNORE would leave racing inserters holding shared locks that then deadlock their
    own SELECT ... FOR UPDATE."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    sql = (_INSERT_NEW_LOCKING if lock_existing else _INSERT_NEW)[connection.vendor].format(
        table=quote(model._meta.db_table),
        columns=", ".join(quote(c) for c in columns),
        rows=", ".join([f"({', '.join(['%s'] * len(columns))})"] * len(rows)),
        pk=quote(model._meta.pk.column),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])
        return cursor.rowcount


def insert_rows(
    alias: str, model, columns: list[str], rows: list[tuple], *, template: str = _INSERT
) -> int:
    """Insert ``rows`` (tuples in ``columns`` order, values as the database takes them: ints,
    strings, naive UTC datetimes) into ``model``'s table; returns the count. One ``executemany``:
    MySQL's driver sends it as one multi-row INSERT, SQLite runs it in C, and neither meets a
    limit on placeholders however many rows (bulk loads of 10,000 rows use it too)."""
    if not rows:
        return 0
    connection = connections[alias]
    quote = connection.ops.quote_name
    sql = template.format(
        table=quote(model._meta.db_table),
        columns=", ".join(quote(c) for c in columns),
        rows=f"({', '.join(['%s'] * len(columns))})",
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
        return cursor.rowcount


def insert_objects(alias: str, objs: list, *, ignore_existing: bool = False) -> int:
    """``bulk_create(objs)`` (one model, rows without primary keys) as one plain INSERT: each
    field's value prepared by the field, as Django prepares it, without the insert compiler's
    per-value bookkeeping; the objects get no ids back. ``ignore_existing`` skips rows whose
    unique key exists (``ignore_conflicts``). Returns the rows inserted."""
    if not objs:
        return 0
    model, connection = type(objs[0]), connections[alias]
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    rows = [
        tuple(f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields) for obj in objs
    ]
    template = _INSERT_NEW[connection.vendor] if ignore_existing else _INSERT
    return insert_rows(alias, model, [f.column for f in fields], rows, template=template)


def pk_batches(rows, size: int):
    """``rows`` (a queryset) in lists of primary-key ranges of ``size`` ids, lowest first, with
    the number of ranges: ``(total, iterator of (done, rows in the range))``. Each range is one
    query on the primary key, so memory holds one range at a time however large the table; the
    bounds are read once (rows added later are left for the next run)."""
    from django.db.models import Max, Min

    bounds = rows.model._base_manager.using(rows.db).aggregate(lo=Min("pk"), hi=Max("pk"))
    if bounds["lo"] is None:
        return 0, iter(())
    lo, hi = bounds["lo"] - 1, bounds["hi"]
    total = -(-(hi - lo) // size)

    def ranges():
        for i in range(total):
            start = lo + i * size
            yield i + 1, list(rows.filter(pk__gt=start, pk__lte=min(start + size, hi)))

    return total, ranges()


@contextmanager
def own_connection(alias: str):
    """A long-lived thread's own connection to ``alias``: a stale one is replaced before use, and
    one that failed is closed after (whatever state it is in, the next use starts on a fresh
    one). Yields a callable that marks the use failed without raising. A connection inside an
    atomic block (a test's) is the caller's, and is left alone."""
    connection = connections[alias]
    own = not connection.in_atomic_block
    failed = []
    if own:
        connection.close_if_unusable_or_obsolete()
    try:
        yield lambda: failed.append(True)
    except BaseException:
        failed.append(True)
        raise
    finally:
        if own and failed:
            connection.close()


DEADLOCK = 1213  # MySQL/MariaDB: this statement was the deadlock's victim, rolled back


def is_deadlock(error: BaseException | None) -> bool:
    """True for MySQL/MariaDB's "deadlock found": InnoDB rolled the whole transaction back."""
    return isinstance(error, OperationalError) and error.args[:1] == (DEADLOCK,)


def retry_deadlock_victim(alias: str, statement, *, attempts: int = 3):
    """``statement()`` again when InnoDB rolled it back as a deadlock's victim: for one
    statement that may run twice (it sets values, it does not add to them) in autocommit. Inside
    a transaction the victim is the whole transaction, so the error is the caller's."""
    for attempt in range(1, attempts + 1):
        try:
            return statement()
        except OperationalError as exc:
            if not is_deadlock(exc) or attempt == attempts or connections[alias].in_atomic_block:
                raise
