"""The merchant simulator: a merchant's server receiving paysys' notifications, as an outside
party (over HTTP only; nothing in the platform imports it). It verifies every notification with
the ``standardwebhooks`` library, records it, processes each ``webhook-id`` once, and can be told
to misbehave (fail the next N, hang, answer 410, answer slowly) by its control endpoints."""
