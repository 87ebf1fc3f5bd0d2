"""The fault tests' broker, Redis or RabbitMQ (``CELERY_BROKER_URL``): a place of its own on the
machine's server (a Redis database, a RabbitMQ virtual host), and the fault of losing everything
in it, each the way that broker loses it. The server itself is never stopped or flushed."""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import urlsplit, urlunsplit

import redis


def is_amqp(url: str) -> bool:
    return url.startswith(("amqp://", "pyamqp://"))


def is_supported(url: str) -> bool:
    return url.startswith("redis://") or is_amqp(url)


def isolated(url: str, number: int) -> str:
    """``url`` moved to this test run's own place: Redis database ``number``, or the virtual host
    ``paysys-faults-<number>`` (created once, with the URL's user allowed in it)."""
    parts = urlsplit(url)
    if not is_amqp(url):
        return urlunsplit(parts._replace(path=f"/{number}"))
    vhost = f"paysys-faults-{number}"
    if vhost not in _rabbitmqctl("list_vhosts", "--quiet", "--no-table-headers").split():
        _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")
    return urlunsplit(parts._replace(path=f"/{vhost}"))


def lose_everything(url: str) -> None:
    """The broker loses every message it holds: FLUSHDB on Redis; on RabbitMQ every queue of the
    virtual host purged (a message a worker holds unacknowledged is not in a queue: as on a real
    RabbitMQ, it comes back only if that worker's connection drops)."""
    if not is_amqp(url):
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        return
    from kombu import Connection

    vhost = urlsplit(url).path.lstrip("/")
    names = _rabbitmqctl(
        "list_queues", "-p", vhost, "--quiet", "--no-table-headers", "name"
    ).split()
    with Connection(url) as connection:
        channel = connection.channel()
        for name in names:
            channel.queue_purge(name)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (5672 if is_amqp(url) else 6379)


def through_port(url: str, port: int) -> str:
    """``url`` pointed at another port on the same host (a proxy in front of the broker)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(
        parts._replace(netloc=f"{credentials + '@' if credentials else ''}{parts.hostname}:{port}")
    )


def _rabbitmqctl(*args: str) -> str:
    if not shutil.which("rabbitmqctl"):
        raise RuntimeError(
            "the fault tests on RabbitMQ need rabbitmqctl (Debian package rabbitmq-server) to make "
            "their own virtual host; or run them on Redis: CELERY_BROKER_URL=redis://127.0.0.1:6379/0"
        )
    return subprocess.run(
        ["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout
