"""A v1 scheduler speaking the Mesos HTTP API on the wire (for tests): subscribe, read the RecordIO
stream in the background, make calls with the subscription's framework id and stream id."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp

JSON = "application/json"
API = "/api/v1/scheduler"
WAIT = 30.0  # generous upper bound for anything we wait for; never asserted as a duration
_OMIT: Any = object()



@dataclass
class Reply:
    status: int
    text: str
    headers: Any  # case-insensitive multidict

    def __repr__(self) -> str:
        return f"<{self.status} {self.text[:200]!r}>"

    def json(self) -> Any:
        return json.loads(self.text)


async def request(http: aiohttp.ClientSession, addr: str, body: bytes | dict | list | None = None, *,
                  method: str = "POST", path: str = API, content_type: str | None = JSON,
                  headers: dict[str, str] | None = None) -> Reply:
    """One request, redirects not followed. `content_type=None` sends no Content-Type header at all."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    hdrs = dict(headers or {})
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    async with http.request(method, f"http://{addr}{path}", data=body, headers=hdrs, allow_redirects=False,
                            skip_auto_headers=() if content_type else ("Content-Type",)) as r:
        return Reply(r.status, await r.text(), r.headers)




class Scheduler:
    """SUBSCRIBE with `Accept: application/json`, then a background task reads the RecordIO stream
    (`<decimal length>\\n<json>`) into a queue. `expect` takes events off it by type or predicate
    (unmatched ones stay for later, heartbeats are dropped); `call` posts a call carrying this
    subscription's framework id and Mesos-Stream-Id (either can be overridden or omitted)."""

    def __init__(self, http: aiohttp.ClientSession, master: str, **framework_info: Any):
        self.http, self.master = http, master
        # a task runs as its framework's user, which must exist in the task's image (busybox: root, nobody)
        self.info = {"user": "root", "name": "bad-input", **framework_info}
        self.framework_id: str | None = None
        self.stream_id: str | None = None
        self._queue: asyncio.Queue[dict | None] = asyncio.Queue()
        self._kept: list[dict] = []
        self._closed = False
        self._response: aiohttp.ClientResponse | None = None
        self._reader: asyncio.Task | None = None

    async def subscribe(self) -> "Scheduler":
        body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": self.info}}
        self._response = await self.http.post(
            f"http://{self.master}{API}", json=body, headers={"Accept": JSON},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        if self._response.status != 200:
            raise AssertionError(f"SUBSCRIBE answered {self._response.status}: {await self._response.text()}")
        self.stream_id = self._response.headers["Mesos-Stream-Id"]
        self._reader = asyncio.create_task(self._read())
        subscribed = await self.expect("SUBSCRIBED")
        self.framework_id = subscribed["subscribed"]["framework_id"]["value"]
        return self

    async def _read(self) -> None:
        content = self._response.content
        try:
            while line := await content.readline():
                record = await content.readexactly(int(line))
                await self._queue.put(json.loads(record))
        except (aiohttp.ClientError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._queue.put_nowait(None)  # the stream is over

    async def expect(self, what: str | Callable[[dict], bool], timeout: float = WAIT) -> dict:
        """The oldest event matching `what` (an event type or a predicate on the event)."""
        match = what if callable(what) else (lambda e: e.get("type") == what)
        for i, e in enumerate(self._kept):
            if match(e):
                return self._kept.pop(i)
        deadline = time.monotonic() + timeout
        while not self._closed:
            try:
                e = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if e is None:
                self._closed = True
            elif match(e):
                return e
            elif e.get("type") != "HEARTBEAT":
                self._kept.append(e)
        why = "the stream closed" if self._closed else f"{timeout} s passed"
        raise AssertionError(f"{why} before an event matching {what!r}; other events: {self._kept}")

    async def offers(self) -> list[dict]:
        return (await self.expect("OFFERS"))["offers"]["offers"]

    async def update(self, task_id: str, match: Callable[[dict], bool] = lambda s: True) -> dict:
        """The next UPDATE's status for task_id (that satisfies `match`)."""
        event = await self.expect(lambda e: e.get("type") == "UPDATE"
                                  and e["update"]["status"]["task_id"]["value"] == task_id
                                  and match(e["update"]["status"]))
        return event["update"]["status"]

    async def call(self, type_: str, payload: dict | None = None, *, framework_id: Any = _OMIT,
                   stream_id: Any = _OMIT, headers: dict[str, str] | None = None) -> Reply:
        body: dict = {"type": type_}
        fid = self.framework_id if framework_id is _OMIT else framework_id
        if fid is not None:
            body["framework_id"] = {"value": fid}
        if payload is not None:
            body[type_.lower()] = payload
        hdrs = dict(headers or {})
        sid = self.stream_id if stream_id is _OMIT else stream_id
        if sid is not None:
            hdrs["Mesos-Stream-Id"] = sid
        return await request(self.http, self.master, body, headers=hdrs)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._response is not None:
            self._response.close()


# ---- malformed calls: answered before anything is decided ----------------------------------------------



async def acked_update(s: Scheduler, tid: str) -> dict:
    """The task's next status update, acknowledged (the agent sends the next one only then)."""
    st = await s.update(tid)
    if "uuid" in st:
        r = await s.call("ACKNOWLEDGE", {"agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": st["uuid"]})
        assert r.status == 202, r
    return st
