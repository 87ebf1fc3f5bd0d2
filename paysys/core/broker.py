"""The embedded broker: kombu's filesystem transport, made safe for many processes.

kombu 5.5's ``filesystem`` transport creates a message file and then writes it, while a consumer
moves away any ``*.msg`` file it lists and reads it. A consumer that lists the file between the
producer's ``open`` and ``write`` reads an empty file and its worker dies (``JSONDecodeError`` is
an unrecoverable error for Celery), and the producer's bytes land in a file already taken: the
message is lost (kombu issue #1551). Exchange tables have the same race: the first bind truncates
the file before it writes it.

Here every write is atomic: a message is written in a staging folder (which no consumer lists)
and renamed into the queue folder, an exchange table is rewritten under a lock and renamed over
the old one. A consumer claims a message by renaming it (only one rename of a file succeeds), and a
file that cannot be decoded is moved to the failed folder with an error logged, never a crash.
Selected in settings with ``CELERY_BROKER_TRANSPORT`` when the broker URL is ``filesystem://``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

logger = logging.getLogger(__name__)


def _write_atomically(data: bytes, staging_folder: str, target: str) -> None:
    """Write under a name in ``staging_folder`` (same filesystem), then rename to ``target``."""
    staged = os.path.join(staging_folder, f"{uuid.uuid4()}.tmp")
    with open(staged, "wb") as f:
        f.write(data)
    os.rename(staged, target)


class Channel(filesystem.Channel):
    @cached_property
    def staging_folder(self) -> str:
        return self._folder("staging_folder", "staging")

    @cached_property
    def claimed_folder(self) -> str:
        # on the queue's filesystem, so claiming is a rename (kombu would use the shared /tmp)
        if self.store_processed:
            return self.processed_folder
        return self._folder("claimed_folder", "claimed")

    @cached_property
    def failed_folder(self) -> str:
        return self._folder("failed_folder", "failed")

    def _folder(self, option: str, default_name: str) -> str:
        folder = self.transport_options.get(option) or os.path.join(
            os.path.dirname(self.data_folder_in), default_name
        )
        os.makedirs(folder, exist_ok=True)
        return folder

    def _put(self, queue, payload, **kwargs):
        # the millisecond prefix keeps kombu's ordering (consumers take names in sorted order)
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        _write_atomically(
            str_to_bytes(dumps(payload)),
            self.staging_folder,
            os.path.join(self.data_folder_out, name),
        )

    def _get(self, queue):
        suffix = f".{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if not name.endswith(suffix):
                continue
            claimed = os.path.join(self.claimed_folder, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except FileNotFoundError:
                continue  # another consumer claimed it first
            try:
                with open(claimed, "rb") as f:
                    payload = loads(bytes_to_str(f.read()))
                if not isinstance(payload, dict):
                    raise ValueError(f"a message is a JSON object, not {type(payload).__name__}")
            except (ValueError, UnicodeDecodeError) as exc:
                aside = os.path.join(self.failed_folder, name)
                os.replace(claimed, aside)
                logger.error(
                    "embedded broker: message %s on queue %s cannot be decoded (%s); moved to %s",
                    name,
                    queue,
                    exc,
                    aside,
                )
                continue
            if not self.store_processed:
                os.remove(claimed)
            return payload
        raise Empty()

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        self.control_folder.mkdir(parents=True, exist_ok=True)
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        table = self.control_folder / f"{exchange}.exchange"
        with open(self.control_folder / f"{exchange}.lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
            queues = self.get_table(exchange)
            if entry not in queues:
                queues.insert(0, entry)
                _write_atomically(str_to_bytes(dumps(queues)), self.staging_folder, str(table))

    def get_table(self, exchange):
        # tables are replaced by rename, never rewritten in place: a plain read sees a whole one
        try:
            text = (Path(self.control_folder) / f"{exchange}.exchange").read_bytes()
        except FileNotFoundError:
            return []
        return [filesystem.exchange_queue_t(*q) for q in loads(bytes_to_str(text))]


class Transport(filesystem.Transport):
    Channel = Channel

    @property
    def default_connection_params(self):
        # no host: kombu would warn "No hostname was supplied" at every connection
        return {"port": self.default_port}
