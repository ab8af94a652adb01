"""The HTTP edge of the trust boundary: an aiohttp middleware that authenticates every request of a server
with credentials (HTTP Basic, drover/security/credentials.py) and refuses browser-made cross-site posts.

A path's *realm* says who may call it (Mesos's realms: a 401 names it in `WWW-Authenticate`); a path with no
realm (`/health`, `/version`, `/redirect`) is open, as in Mesos. The authenticated principal is
`request["principal"]` (None when the server runs without credentials: then every request is anonymous and
only ACL rules for ANY principal apply).
"""

from __future__ import annotations

from typing import Callable

import structlog
from aiohttp import web

from drover.security.credentials import AuthFailure, Credentials, authenticate

log = structlog.get_logger("drover.security")

PRINCIPAL = web.RequestKey("principal", str)  # request[PRINCIPAL]: str, or None when unauthenticated
# Content types a POST may carry. A browser can send text/plain, application/x-www-form-urlencoded or
# multipart/form-data cross-site without asking the server first (a "simple request"); a JSON content type
# needs a CORS preflight, which no Drover server grants. So: a POST must say JSON (or protobuf).
POST_TYPES = ("application/json", "application/x-protobuf")


def unauthorized(realm: str, reason: str) -> web.Response:
    # The reason is ours (never what the client sent); Mesos answers this exact body.
    return web.Response(status=401, text="401 Unauthorized.",
                        headers={"WWW-Authenticate": f'Basic realm="{realm}"', "Drover-Auth-Error": reason})


def forbidden(message: str = "403 Forbidden.") -> web.Response:
    return web.Response(status=403, text=message)


def principal_of(request: web.Request) -> str | None:
    return request.get(PRINCIPAL)


def middleware(credentials: Credentials | None, realm_of: Callable[[str], str | None]):
    """Authenticate every request whose path has a realm (when `credentials` is set); refuse a POST that does not
    carry a JSON or protobuf content type (always: it is how a web page would post across sites)."""

    @web.middleware
    async def auth(request: web.Request, handler):
        if request.method == "POST":
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype and ctype not in POST_TYPES:
                return web.Response(status=415, text=f"Expecting 'Content-Type' of {' or '.join(POST_TYPES)}")
        request[PRINCIPAL] = None
        realm = realm_of(request.path)
        if credentials is None or realm is None:
            return await handler(request)
        who = authenticate(credentials, request.headers.get("Authorization"))
        if isinstance(who, AuthFailure):
            log.info("request not authenticated", path=request.path[:128], peer=request.remote, why=who.reason)
            return unauthorized(realm, who.reason)
        request[PRINCIPAL] = who
        return await handler(request)

    return auth


# The master's realms, by path (Mesos's names where Mesos has the endpoint).
SCHEDULER = "mesos-master-scheduler"
READONLY = "mesos-master-readonly"
READWRITE = "mesos-master-readwrite"
AGENT_LINK = "drover-master-agent"
OPEN_PATHS = {"/health", "/master/health", "/version", "/master/version", "/redirect", "/master/redirect"}


def master_realm(path: str) -> str | None:
    if path in OPEN_PATHS or path.startswith(("/redirect/", "/master/redirect/")):
        return None
    if path in ("/api/v1/scheduler", "/master/api/v1/scheduler"):
        return SCHEDULER
    if path in ("/api/v1", "/master/api/v1"):
        return READWRITE
    if path == "/api/drover/agent":
        return AGENT_LINK
    return READONLY  # state, events, audit, status, and any path not known yet: never open by omission


def agent_realm(path: str) -> str | None:
    if path == "/health":
        return None
    if path in ("/api/v1", "/slave(1)/api/v1"):
        return "mesos-agent-readwrite"
    return "mesos-agent-readonly"
