"""The benchmarks: ``manage.py bench_messaging``, ``bench_tcc``, ``bench_notify``,
``bench_payments``, ``bench_history``, ``bench_reconcile`` and ``bench_polling``
(docs/benchmarks.md).

They sit above everything else: a benchmark may drive any service, framework or the gateway, and
no production module imports one (``.importlinter``). Django finds the commands by their file
names; a command's module, and the helpers beside it (``client``, ``generate``, ``monolith``,
``receiver``), load only when that command runs. What every process loads is
``consumers``: the message ``bench_messaging`` measures and its consumer, registered like every
app's (the workers that command starts, and the message API's tests, need it).
"""
