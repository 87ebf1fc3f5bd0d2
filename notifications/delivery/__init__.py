"""The delivery engine: claim due records, send them concurrently, record every attempt.

Concurrency model. One pass runs in the delivery worker (queue ``notify_delivery``): its main
thread does all database work, synchronously; HTTP runs on an asyncio event loop in one
background thread of the same process. A request in flight is a coroutine and a socket, not a
thread, so a hanging merchant costs almost nothing while it waits out its 15 s, and thousands
can wait at once. Limits: ``NOTIFY_MAX_IN_FLIGHT`` requests per process, and
``NOTIFY_MAX_IN_FLIGHT_PER_ENDPOINT`` per host (name and port: the URLs ``?i=1`` … ``?i=N`` of
one slow server share one limit); the endpoints of a host at its limit are left out of the next
claim, so its backlog waits for it alone while every other merchant is served.

A pass loops: record the attempts that finished (a few statements per batch), then claim as many
due records as there is room for (a plain read of the due index, then ``SELECT … FOR UPDATE SKIP
LOCKED`` of exactly those: several machines never claim the same record) and push each one's due
time a lease ahead (a worker killed mid-delivery loses nothing: when the lease expires another
pass sends it, with the same webhook-id), sign, and hand them to the loop. Between scans it
sleeps until the next claimable record is due (at most ``NOTIFY_POLL_INTERVAL``) or an attempt
finishes, then ``NOTIFY_COLLECT_SECONDS`` more: under load each turn records and claims several
records for one set of statements instead of one each (the statements, not the requests, are
what a delivery costs), for a few milliseconds of latency; it ends when nothing is in flight and
nothing comes due within ``NOTIFY_LINGER_SECONDS``, or after ``NOTIFY_PASS_SECONDS``. The
requests in flight belong to the process (``flight.Flight``), not to the pass: the worker's pass
ends without waiting out a hanging merchant, and the next pass in the process records what it
left running.

One module per job:

    passes.py    the pass loop: claim, sign, hand to the loop, wait, record (``deliver_due``)
    flight.py    the event loop thread and its in-flight counters (``Flight``, ``host_key``)
    outcomes.py  what an answer means: delivered, failed, refused; when to try again
                 (``classify``, ``next_wait``)
    attempts.py  the writer: a batch of attempts and what they change, in a few statements
                 (``record_attempts``)

Every module logs as ``notifications.delivery``, the one name operators filter on.
"""

from notifications.delivery.passes import PassResult, deliver_due

__all__ = ["PassResult", "deliver_due"]
