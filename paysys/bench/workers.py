"""The Celery workers a benchmark starts for itself."""

from __future__ import annotations

import subprocess
import sys

from django.conf import settings


def start_worker(
    queues: str,
    *,
    name: str,
    concurrency: int,
    loglevel: str = "WARNING",
    pool: str | None = None,
    **popen,
) -> subprocess.Popen:
    """A worker of this checkout consuming ``queues`` (comma-separated) as node ``name@host``, in a
    session of its own, so ``os.killpg(worker.pid, ...)`` stops it with its pool processes.
    ``pool``: the worker pool, when not the settings' (the embedded default's is solo);
    ``popen``: more ``subprocess.Popen`` arguments (its environment, where its output goes)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "paysys",
            "worker",
            "-Q",
            queues,
            f"--concurrency={concurrency}",
            *([f"--pool={pool}"] if pool else []),
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            f"--loglevel={loglevel}",
        ],
        cwd=settings.BASE_DIR,
        start_new_session=True,
        **popen,
    )
