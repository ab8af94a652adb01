"""Idle streams cost nothing (issue 10): no polling, one heartbeat timer for every stream.

RecordStream (framework subscriptions, agent links) and LiveStream (event streams) over a real aiohttp server:
heartbeats while idle and none while records flow, a client that goes away heard from its connection (with a
heartbeat interval of an hour, so nothing but the connection can tell), overflow, close with a final record,
`wake()` for an idle check. HeartbeatWheel alone: one wakeup per due slot however many streams. No assertion
on wall-clock time: waits have generous timeouts that only stop a broken test from hanging.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from drover.local import free_port
from master import streams
from master.streams import HeartbeatWheel, LiveStream, RecordStream, StreamOver, heartbeat_wheel

LONG = 3600.0  # a heartbeat interval no test lives to see
WAIT = 10.0  # safety timeout for what must happen at once


async def read_record(resp: aiohttp.ClientResponse) -> dict | None:
    line = await asyncio.wait_for(resp.content.readline(), WAIT)
    if not line:
        return None
    return json.loads(await asyncio.wait_for(resp.content.readexactly(int(line)), WAIT))


class Served:
    """One streaming handler on a test server; `done` is set with what the handler saw when it ended."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.result: dict = {}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Callable[[web.Request, web.StreamResponse, Served], Awaitable]],
                                            Awaitable[tuple[aiohttp.ClientResponse, Served]]]]:
    """Served as `drover master` serves: an AppRunner with aiohttp's defaults, so handlers are not cancelled when
    their client goes away (aiohttp's TestServer turns handler cancellation on)."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(body):
        served = Served()

        async def handler(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            try:
                await body(request, response, served)
            finally:
                served.done.set()
            return response

        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        http = aiohttp.ClientSession()
        sessions.append(http)
        resp = await http.get(f"http://127.0.0.1:{port}/")
        assert resp.status == 200
        return resp, served

    yield start
    for s in sessions:
        await s.close()
    for runner in runners:
        await runner.cleanup()


# ---- RecordStream ----------------------------------------------------------------------------------------


async def test_record_stream_heartbeats_while_idle(serve):
    wheel = heartbeat_wheel()
    before = wheel.wakeups

    async def body(request, response, served):
        stream = RecordStream(request, response, 0.05, "test")
        stream.send({"type": "SUBSCRIBED"})
        served.result["stream"] = stream
        await stream.run()

    resp, served = await serve(body)
    assert (await read_record(resp)) == {"type": "SUBSCRIBED"}
    for _ in range(3):
        assert (await read_record(resp))["type"] == "HEARTBEAT"
    served.result["stream"].close("test over")
    wakeups = wheel.wakeups - before
    beats = 3
    while (r := await read_record(resp)) is not None:  # until the end of the chunked body
        assert r["type"] == "HEARTBEAT"
        beats += 1
    await asyncio.wait_for(served.done.wait(), WAIT)
    # Each wakeup of the timer sent a heartbeat that was due (this stream is the only one beating).
    assert wakeups == beats


async def test_record_stream_notices_a_client_that_went_away_without_polling(serve):
    wheel = heartbeat_wheel()
    before = wheel.wakeups

    async def body(request, response, served):
        stream = RecordStream(request, response, LONG, "test")
        stream.send({"type": "SUBSCRIBED"})
        served.result["stream"] = stream
        await stream.run()

    resp, served = await serve(body)
    assert (await read_record(resp)) == {"type": "SUBSCRIBED"}
    resp.close()  # the client goes away; the stream's writer is blocked on an empty queue
    await asyncio.wait_for(served.done.wait(), WAIT)
    stream = served.result["stream"]
    assert stream.closed.is_set() and stream.client_gone
    assert stream.close_reason is None  # the handler treats it as a disconnection
    assert wheel.wakeups == before  # the heartbeat timer never fired: the connection told us


async def test_record_stream_close_sends_the_final_record(serve):
    async def body(request, response, served):
        stream = RecordStream(request, response, LONG, "test")
        stream.close("refused", {"type": "ERROR", "error": {"message": "no"}})
        await stream.run()
        served.result["reason"] = stream.close_reason

    resp, served = await serve(body)
    assert (await read_record(resp)) == {"type": "ERROR", "error": {"message": "no"}}
    assert await read_record(resp) is None
    await asyncio.wait_for(served.done.wait(), WAIT)
    assert served.result["reason"] == "refused"


async def test_record_stream_overflow_is_a_client_gone(serve):
    async def body(request, response, served):
        stream = RecordStream(request, response, LONG, "test", max_queue=3)
        for i in range(5):
            stream.send({"type": "UPDATE", "n": i})
        await stream.run()
        served.result.update(reason=stream.close_reason, overflowed=stream.overflowed)

    resp, served = await serve(body)
    assert await read_record(resp) is None  # what was queued was dropped
    await asyncio.wait_for(served.done.wait(), WAIT)
    assert served.result == {"reason": None, "overflowed": True}


# ---- LiveStream ------------------------------------------------------------------------------------------


async def test_live_stream_heartbeats_only_while_idle(serve):
    async def body(request, response, served):
        queue: asyncio.Queue = asyncio.Queue(16)
        served.result["queue"] = queue
        stream = LiveStream(request, response, 0.05)
        await stream.send({"type": "SUBSCRIBED"})
        while (batch := await stream.next_batch(queue)) is not None:
            await stream.send({"type": "EVENT", "n": batch})

    resp, served = await serve(body)
    assert (await read_record(resp)) == {"type": "SUBSCRIBED"}
    for _ in range(2):
        assert (await read_record(resp))["type"] == "HEARTBEAT"
    queue = served.result["queue"]
    queue.put_nowait(1)
    while (r := await read_record(resp))["type"] == "HEARTBEAT":
        pass
    assert r == {"type": "EVENT", "n": 1}
    queue.put_nowait(None)
    await asyncio.wait_for(served.done.wait(), WAIT)


async def test_live_stream_sends_no_heartbeat_while_records_flow(serve):
    wheel = heartbeat_wheel()
    before = wheel.wakeups

    async def body(request, response, served):
        queue: asyncio.Queue = asyncio.Queue(16)
        stream = LiveStream(request, response, LONG)
        await stream.send({"type": "SUBSCRIBED"})
        for i in range(50):
            queue.put_nowait(i)
            await stream.send({"type": "EVENT", "n": await stream.next_batch(queue)})
            await asyncio.sleep(0)

    resp, served = await serve(body)
    records = []
    while (r := await read_record(resp)) is not None:
        records.append(r)
    assert [r["type"] for r in records] == ["SUBSCRIBED"] + ["EVENT"] * 50
    assert wheel.wakeups == before


async def test_live_stream_first_wait_sends_a_heartbeat_at_once(serve):
    """As before: a stream that has written nothing yet starts with a HEARTBEAT (the events API relies on it)."""
    async def body(request, response, served):
        queue: asyncio.Queue = asyncio.Queue(16)
        served.result["queue"] = queue
        stream = LiveStream(request, response, LONG)
        await stream.next_batch(queue)

    resp, served = await serve(body)
    assert (await read_record(resp))["type"] == "HEARTBEAT"
    served.result["queue"].put_nowait(None)
    await asyncio.wait_for(served.done.wait(), WAIT)


async def test_live_stream_notices_a_client_that_went_away_without_polling(serve):
    wheel = heartbeat_wheel()

    async def body(request, response, served):
        queue: asyncio.Queue = asyncio.Queue(16)
        stream = LiveStream(request, response, LONG)
        await stream.send({"type": "SUBSCRIBED"})
        served.result["wakeups"] = wheel.wakeups
        try:
            await stream.next_batch(queue)
        except StreamOver as e:
            served.result["over"] = str(e)
        served.result["gone"] = stream.client_gone()

    resp, served = await serve(body)
    assert (await read_record(resp)) == {"type": "SUBSCRIBED"}
    resp.close()
    await asyncio.wait_for(served.done.wait(), WAIT)
    assert served.result["over"] == "client went away"
    assert served.result["gone"] is True
    assert wheel.wakeups == served.result["wakeups"]


async def test_live_stream_wake_asks_the_idle_check(serve):
    async def body(request, response, served):
        queue: asyncio.Queue = asyncio.Queue(16)
        stream = LiveStream(request, response, LONG)
        await stream.send({"type": "SUBSCRIBED"})
        served.result["stream"] = stream
        reason: list[str | None] = [None]
        served.result["reason"] = reason
        try:
            await stream.next_batch(queue, lambda: reason[0])
        except StreamOver as e:
            served.result["over"] = str(e)

    resp, served = await serve(body)
    assert (await read_record(resp)) == {"type": "SUBSCRIBED"}
    stream = served.result["stream"]
    stream.wake()  # nothing to report yet: the stream goes on waiting
    await asyncio.sleep(0.01)
    assert not served.done.is_set()
    served.result["reason"][0] = "this master stopped leading"
    stream.wake()
    await asyncio.wait_for(served.done.wait(), WAIT)
    assert served.result["over"] == "this master stopped leading"


# ---- the wheel -------------------------------------------------------------------------------------------


class Beater:
    def __init__(self, wheel: HeartbeatWheel, interval: float, rounds: int, done: asyncio.Event, left: list[int]):
        self.wheel, self.interval, self.rounds, self.done, self.left = wheel, interval, rounds, done, left
        self.beats = 0

    def _beat(self, now: float) -> None:
        self.beats += 1
        if self.beats < self.rounds:
            self.wheel.schedule(self, now + self.interval)
        else:
            self.left[0] -= 1
            if self.left[0] == 0:
                self.done.set()


async def test_wheel_wakes_once_per_due_slot_for_many_streams():
    wheel = HeartbeatWheel(tick=0.02)
    done, n, rounds = asyncio.Event(), 1000, 3
    left = [n]
    beaters = [Beater(wheel, 0.05, rounds, done, left) for _ in range(n)]
    when = asyncio.get_running_loop().time() + 0.05
    for b in beaters:
        wheel.schedule(b, when)
    await asyncio.wait_for(done.wait(), WAIT)
    assert all(b.beats == rounds for b in beaters)
    assert wheel.wakeups == rounds  # 3000 heartbeats, 3 wakeups
    assert wheel.pending() == 0


async def test_wheel_runs_the_earliest_first_and_never_early():
    wheel = HeartbeatWheel(tick=0.01)
    loop = asyncio.get_running_loop()
    order: list[tuple[str, float, float]] = []
    done = asyncio.Event()

    class One:
        def __init__(self, name: str, when: float):
            self.name, self.when = name, when

        def _beat(self, now: float) -> None:
            order.append((self.name, self.when, now))
            if len(order) == 3:
                done.set()

    t = loop.time()
    for name, dt in (("c", 0.09), ("a", 0.03), ("b", 0.06)):
        wheel.schedule(One(name, t + dt), t + dt)
    await asyncio.wait_for(done.wait(), WAIT)
    assert [o[0] for o in order] == ["a", "b", "c"]
    # Never before its time (asyncio may run a timer up to its clock resolution early).
    assert all(now >= when - 0.001 for _, when, now in order)


def test_no_polling_left():
    """The old design's 0.5 s poll: no timeout in the streams' waits."""
    import inspect
    src = inspect.getsource(streams)
    assert "wait_for" not in src and "sleep" not in src
