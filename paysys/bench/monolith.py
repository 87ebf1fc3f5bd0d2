"""The monolith baseline of ``bench_payments``: what one payment costs in one local transaction.

The same rows a payment writes across paysys' services (the order locked and marked paid, the
payment record, the merchant's balance and its entry on one hot row, the payer's points and their
entry, the voucher and its three lines, the notify record), written by one transaction on one
database, with no messages, barriers or coordinator. Scratch tables (``bench_monolith_*``) in the
orders database are created, used and dropped; nothing of paysys' own is touched. Measured on one
connection and on four (threads), on the same server as the stack under test.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from django.db import connections

ALIAS = "orders"
TABLES = {
    "order": "id INTEGER PRIMARY KEY, status VARCHAR(16) NOT NULL, amount BIGINT NOT NULL, paid_at DOUBLE",
    "payment": "id INTEGER PRIMARY KEY {auto}, order_id INTEGER NOT NULL UNIQUE, bank_trade_no VARCHAR(64) NOT NULL, amount BIGINT NOT NULL",
    "account": "id INTEGER PRIMARY KEY, balance BIGINT NOT NULL",
    "fund_entry": "id INTEGER PRIMARY KEY {auto}, account_id INTEGER NOT NULL, amount BIGINT NOT NULL, balance_after BIGINT NOT NULL",
    "points": "id INTEGER PRIMARY KEY, balance BIGINT NOT NULL",
    "points_entry": "id INTEGER PRIMARY KEY {auto}, points_id INTEGER NOT NULL, points BIGINT NOT NULL",
    "voucher": "id INTEGER PRIMARY KEY {auto}, source VARCHAR(128) NOT NULL UNIQUE",
    "voucher_line": "id INTEGER PRIMARY KEY {auto}, voucher_id INTEGER NOT NULL, account VARCHAR(16) NOT NULL, debit BIGINT NOT NULL, credit BIGINT NOT NULL",
    "notify": "id INTEGER PRIMARY KEY {auto}, order_id INTEGER NOT NULL UNIQUE, status VARCHAR(16) NOT NULL",
}
PAYERS = 8


def monolith_baseline(*, payments: int) -> dict[str, float]:
    """Payments/s of the monolith on 1 and 4 connections: {"1 connection": x, "4 connections": y}."""
    db = Scratch()
    try:
        result = {}
        for threads in (1, 4):
            db.reset(payments)
            started = time.perf_counter()
            errors: list[BaseException] = []
            workers = [
                threading.Thread(target=db.pay_range, args=(range(i, payments, threads), errors))
                for i in range(threads)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            if errors:  # a baseline with a dead connection would be a number of nothing
                raise RuntimeError(f"the monolith baseline failed: {errors[0]!r}") from errors[0]
            result[f"{threads} connection{'s' if threads > 1 else ''}"] = round(
                payments / (time.perf_counter() - started)
            )
        return result
    finally:
        db.drop()


class Scratch:
    def __init__(self):
        self.settings = connections[ALIAS].settings_dict
        self.mysql = connections[ALIAS].vendor == "mysql"
        self.params = connections[ALIAS].get_connection_params()
        self.mark = "%s" if self.mysql else "?"

    def connect(self):
        if self.mysql:
            import MySQLdb

            connection = MySQLdb.connect(**self.params)
            connection.autocommit(True)
            return connection
        return sqlite3.connect(
            self.params["database"], timeout=30, isolation_level=None, check_same_thread=False
        )

    def sql(self, text: str) -> str:
        return text.replace("?", self.mark)

    def reset(self, payments: int) -> None:
        auto = "AUTO_INCREMENT" if self.mysql else "AUTOINCREMENT"
        connection = self.connect()
        cursor = connection.cursor()
        for name, columns in TABLES.items():
            cursor.execute(f"DROP TABLE IF EXISTS bench_monolith_{name}")
            cursor.execute(f"CREATE TABLE bench_monolith_{name} ({columns.format(auto=auto)})")
        rows = [(i, "CREATED", 1000 + i % 9000) for i in range(payments)]
        cursor.execute("BEGIN")
        cursor.executemany(
            self.sql("INSERT INTO bench_monolith_order (id, status, amount) VALUES (?, ?, ?)"), rows
        )
        cursor.execute("INSERT INTO bench_monolith_account (id, balance) VALUES (1, 0)")
        cursor.executemany(
            self.sql("INSERT INTO bench_monolith_points (id, balance) VALUES (?, 0)"),
            [(i,) for i in range(PAYERS)],
        )
        cursor.execute("COMMIT")
        connection.close()

    def pay_range(self, ids, errors: list) -> None:
        try:
            self._pay(ids)
        except Exception as exc:  # noqa: BLE001 - reported by monolith_baseline
            errors.append(exc)

    def _pay(self, ids) -> None:
        connection = self.connect()
        cursor = connection.cursor()
        lock = " FOR UPDATE" if self.mysql else ""
        # SQLite: take the write lock at BEGIN (a reader cannot become a writer while another writes)
        begin = "BEGIN" if self.mysql else "BEGIN IMMEDIATE"
        for order_id in ids:
            cursor.execute(begin)
            cursor.execute(
                self.sql(f"SELECT status, amount FROM bench_monolith_order WHERE id = ?{lock}"),
                (order_id,),
            )
            _, amount = cursor.fetchone()
            fee = (amount * 60 + 5000) // 10000
            cursor.execute(
                self.sql(
                    "UPDATE bench_monolith_order SET status = 'SUCCESS', paid_at = ? WHERE id = ?"
                ),
                (time.time(), order_id),
            )
            cursor.execute(
                self.sql(
                    "INSERT INTO bench_monolith_payment (order_id, bank_trade_no, amount) VALUES (?, ?, ?)"
                ),
                (order_id, f"BT{order_id}", amount),
            )
            cursor.execute(
                self.sql("UPDATE bench_monolith_account SET balance = balance + ? WHERE id = 1"),
                (amount - fee,),
            )
            cursor.execute(
                self.sql(
                    "INSERT INTO bench_monolith_fund_entry (account_id, amount, balance_after) "
                    "SELECT 1, ?, balance FROM bench_monolith_account WHERE id = 1"
                ),
                (amount - fee,),
            )
            cursor.execute(
                self.sql("UPDATE bench_monolith_points SET balance = balance + ? WHERE id = ?"),
                (amount // 100, order_id % PAYERS),
            )
            cursor.execute(
                self.sql(
                    "INSERT INTO bench_monolith_points_entry (points_id, points) VALUES (?, ?)"
                ),
                (order_id % PAYERS, amount // 100),
            )
            cursor.execute(
                self.sql("INSERT INTO bench_monolith_voucher (source) VALUES (?)"),
                (f"order.paid:{order_id}",),
            )
            voucher_id = cursor.lastrowid
            cursor.execute(
                self.sql(
                    "INSERT INTO bench_monolith_voucher_line (voucher_id, account, debit, credit) "
                    "VALUES (?, '1002', ?, 0), (?, '2202', 0, ?), (?, '6051', 0, ?)"
                ),
                (voucher_id, amount, voucher_id, amount - fee, voucher_id, fee),
            )
            cursor.execute(
                self.sql(
                    "INSERT INTO bench_monolith_notify (order_id, status) VALUES (?, 'PENDING')"
                ),
                (order_id,),
            )
            cursor.execute("COMMIT")
        connection.close()

    def drop(self) -> None:
        connection = self.connect()
        cursor = connection.cursor()
        for name in TABLES:
            cursor.execute(f"DROP TABLE IF EXISTS bench_monolith_{name}")
        connection.close()
