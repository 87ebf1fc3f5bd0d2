"""The one gate of the simulators' control endpoints (set-up, misbehaviour switches, what was
received): every control view is wrapped by :func:`sandbox_control`, so an access check for
controls (e.g. a sandbox token) belongs here and nowhere else. The simulated parties' own
endpoints (pay page, notify receivers) are not controls: paysys reaches them as it would a
real bank or merchant."""

from __future__ import annotations

from functools import wraps

from django.views.decorators.csrf import csrf_exempt


def sandbox_control(view):
    """Mark ``view`` as a control endpoint (a program's JSON call, so no CSRF token)."""

    @wraps(view)
    def control(request, *args, **kwargs):
        return view(request, *args, **kwargs)

    control.sandbox_control = True  # tests check every control carries it
    return csrf_exempt(control)
