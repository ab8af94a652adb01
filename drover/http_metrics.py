"""HTTP request metrics for the aiohttp servers of masters and agents (master/metrics.py, agent/metrics.py)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

# The classic text format every Prometheus (and promtool) reads; our names need none of 1.0.0's escaping.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def request_counter(counter):
    """An aiohttp middleware counting answers in `counter` (labels route, method, code). The route is the matched
    resource's template (`/redirect/{tail}`), never the raw path: a client cannot mint label values (an unmatched
    path is `unmatched`, an unusual method `other`)."""

    @web.middleware
    async def count(request: web.Request, handler):
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as e:
            code = e.status
            raise
        except asyncio.CancelledError:
            code = 499  # the client went away before an answer (nginx's code for it)
            raise
        finally:
            counter.labels(route, method, str(code)).inc()

    return count
