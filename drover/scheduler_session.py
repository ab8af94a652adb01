"""A framework's connection to the master through the public Mesos v1 scheduler API, for Drover's own small
frameworks (`drover execute`, the `drover local --demo` service): SUBSCRIBE following redirects to the leader,
the RecordIO event stream, and calls carrying the framework id and stream id. It knows nothing of Drover's internals.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, AsyncIterator

import aiohttp

from drover.recordio import RecordIODecoder
from drover.security.credentials import Credential

API = "/api/v1/scheduler"


class SchedulerError(Exception):
    """The master refused the subscription or a call, or closed the stream."""


class SchedulerSession:
    def __init__(self, master: str, framework_info: dict, *, credential: Credential | None = None,
                 ssl_context: ssl.SSLContext | None = None):
        self.master = master
        self.target = master  # the leader, once SUBSCRIBE was answered
        self.framework_info = framework_info
        self.framework_id: str | None = None
        self.stream_id: str | None = None
        self._scheme = "https" if ssl_context is not None else "http"
        self._ssl = ssl_context
        # With a credential every call carries HTTP Basic; the master then sets FrameworkInfo.principal to it.
        self._headers = {"Authorization": credential.basic_header()} if credential is not None else {}
        self._session: aiohttp.ClientSession | None = None
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> "SchedulerSession":
        connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def subscribe(self) -> None:
        """SUBSCRIBE, following 307s to the leader and waiting out 503s (no leader yet). The SUBSCRIBED event is
        the first one `events()` yields; `framework_id` is set when it arrives."""
        assert self._session is not None, "use 'async with'"
        body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": self.framework_info}}
        resp = None
        for _ in range(20):
            resp = await self._session.post(f"{self._scheme}://{self.target}{API}", json=body,
                                            allow_redirects=False, headers={"Accept": "application/json"},
                                            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))
            if resp.status == 307:
                self.target = resp.headers["Location"].lstrip("/").split("/", 1)[0]
                resp.release()
                continue
            if resp.status == 503:
                resp.release()
                await asyncio.sleep(0.5)
                continue
            break
        assert resp is not None
        if resp.status == 401:
            resp.release()
            raise SchedulerError(f"SUBSCRIBE to {self.target} failed: HTTP 401, not authenticated "
                                 f"({resp.headers.get('Drover-Auth-Error', 'credentials required')}; "
                                 f"see --credentials)")
        if resp.status != 200:
            text = await resp.text()
            raise SchedulerError(f"SUBSCRIBE to {self.target} failed: HTTP {resp.status} {text}")
        self.stream_id = resp.headers["Mesos-Stream-Id"]
        self._resp = resp

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The subscription's events, in order (heartbeats included); an ERROR event raises SchedulerError."""
        assert self._resp is not None, "subscribe() first"
        decoder = RecordIODecoder()
        async for chunk in self._resp.content.iter_any():
            for record in decoder.feed(chunk):
                if record.get("type") == "SUBSCRIBED":
                    self.framework_id = record["subscribed"]["framework_id"]["value"]
                elif record.get("type") == "ERROR":
                    raise SchedulerError(record.get("error", {}).get("message", "error from the master"))
                yield record
        raise SchedulerError("the master closed the event stream")

    async def call(self, payload: dict) -> None:
        assert self._session is not None and self.stream_id is not None
        payload = {**payload, "framework_id": {"value": self.framework_id}}
        async with self._session.post(f"{self._scheme}://{self.target}{API}", json=payload,
                                      headers={"Mesos-Stream-Id": self.stream_id}) as r:
            if r.status >= 300:
                raise SchedulerError(f"{payload['type']} failed: HTTP {r.status} {await r.text()}")

    async def acknowledge(self, status: dict) -> None:
        """ACKNOWLEDGE an update that asks for it (one with a uuid)."""
        if "uuid" in status:
            await self.call({"type": "ACKNOWLEDGE", "acknowledge": {
                "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": status["uuid"]}})

    async def teardown(self) -> None:
        """TEARDOWN (its tasks are killed, its offers go back); errors are ignored: the framework is leaving."""
        if self.framework_id is not None:
            try:
                await self.call({"type": "TEARDOWN"})
            except (SchedulerError, aiohttp.ClientError, asyncio.TimeoutError):
                pass


def scalar(offer: dict, name: str) -> float:
    return sum(r.get("scalar", {}).get("value", 0.0) for r in offer.get("resources", [])
               if r.get("name") == name and r.get("type") == "SCALAR")


def port_ranges(offer: dict) -> list[tuple[int, int]]:
    return [(r["begin"], r["end"]) for res in offer.get("resources", []) if res.get("name") == "ports"
            for r in res.get("ranges", {}).get("range", [])]
