"""Operations: what an operator looks at. ``/healthz/detail`` (JSON), the admin overview and one
payment's trace (``paysys.ops.views``).

Like ``paysys.reconcile``, an operations tool that reads every service, through their selectors
(never their tables directly) and each in its own database alias; nothing imports it.
"""
