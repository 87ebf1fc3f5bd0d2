"""``make demo``'s report reads as aligned steps (the command's printing, with the HTTP faked)."""

from __future__ import annotations

from io import StringIO

from paysys.demo.management.commands.demo import Command, DemoOrder


class Answer:
    def __init__(self, status_code: int, body: dict):
        self.status_code, self.body, self.text = status_code, body, str(body)

    def json(self) -> dict:
        return self.body


def test_the_refund_step_is_set_apart_and_its_lines_are_aligned():
    out = StringIO()
    command = Command(stdout=out, no_color=True)
    answers = iter(
        [
            Answer(201, {"refund_no": "RF1", "status": "PENDING"}),
            Answer(
                200,
                {
                    "refund_no": "RF1",
                    "status": "SUCCEEDED",
                    "order_status": "PARTIALLY_REFUNDED",
                    "refunded_amount": 999,
                },
            ),
        ]
    )
    command.request = lambda method, url, **kwargs: next(answers)
    order = DemoOrder("demo-1", 1999, "CNY", "PS1", "http://bank/pay/t", status="SUCCESS")
    command.stdout.write("merchant balance, payer wallet, points and vouchers agree")

    command.refund_one("http://127.0.0.1:8350", [order], timeout=5)

    lines = out.getvalue().splitlines()
    refund_lines = [line for line in lines if "refund RF1" in line]
    assert [line[:3] for line in refund_lines] == ["  r", "  r"], lines
    assert "PENDING" in refund_lines[0] and "SUCCEEDED" in refund_lines[1]
    assert lines[lines.index(refund_lines[0]) - 1] == "", lines  # apart from the verdict above
