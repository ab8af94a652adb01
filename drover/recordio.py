"""RecordIO framing (`<decimal byte length>\\n<payload>`), as Mesos streams events."""

from __future__ import annotations

import json
from typing import Iterator


class RecordIOError(ValueError):
    pass


class RecordIODecoder:
    """Feed it bytes as they arrive (records may span chunks); iterate the complete JSON records."""

    def __init__(self, max_record: int = 64 * 1024 * 1024):
        self._buf = b""
        self._max = max_record

    def feed(self, data: bytes) -> Iterator[dict]:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > 20:
                    raise RecordIOError(f"no record length in {self._buf[:20]!r}")
                return
            head = self._buf[:nl]
            if not head.isdigit():
                raise RecordIOError(f"bad record length {head[:20]!r}")
            n = int(head)
            if n > self._max:
                raise RecordIOError(f"record of {n} bytes exceeds the {self._max} byte limit")
            if len(self._buf) < nl + 1 + n:
                return
            record, self._buf = self._buf[nl + 1: nl + 1 + n], self._buf[nl + 1 + n:]
            yield json.loads(record)
