"""Fixtures shared by the test modules that run tasks as services on a module's real cluster (test_services,
test_health, test_task_groups_live): an HTTP session, and `subscribe`, which opens v1 schedulers on the module's
`cluster` and tears them down afterwards. A module names its frameworks with `FRAMEWORK_NAME`. Registered in
tests/conftest.py; a module's own fixture of the same name wins."""

from __future__ import annotations

from typing import Any, AsyncIterator

import aiohttp
import pytest

from tests.cluster import Cluster
from tests.v1client import Scheduler


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def subscribe(request: pytest.FixtureRequest, cluster: Cluster, http: aiohttp.ClientSession):
    opened: list[Scheduler] = []
    name = getattr(request.module, "FRAMEWORK_NAME", "services")

    async def _subscribe(**framework_info: Any) -> Scheduler:
        s = Scheduler(http, cluster.leader_endpoint(), **{"name": name, **framework_info})
        opened.append(s)
        return await s.subscribe()

    yield _subscribe
    for s in opened:
        await s.call("TEARDOWN")  # its tasks are killed, its offers go back
        await s.close()
