"""The web UI every master replica serves at `/` of its HTTP port (docs/ui.md), as Mesos serves its own.

Static files only (HTML, CSS and ES modules from `static/`, no build step and nothing fetched from elsewhere at
run time); the pages read the replica's JSON endpoints (`/master/state`, `/api/v1/events`, `/api/drover/history/...`,
`/api/drover/audit/...`, `/api/drover/why/...`). The files are listed once at start: a request names one of them or
is a 404, so no path from a request reaches the file system. Every answer carries a strict Content-Security-Policy
(scripts, styles and connections from this origin only, no inline script, no framing) and `nosniff`.

The UI's paths are in the read-only realm like any path the security middleware does not know
(drover/security/http.py: `master_realm`), so with credentials the browser asks for them.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/ui/"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


def add_ui_routes(app: web.Application) -> None:
    files = {p.name: (p.read_bytes(), TYPES[p.suffix]) for p in sorted(STATIC.iterdir())
             if p.is_file() and p.suffix in TYPES}

    def send(name: str) -> web.Response:
        body, ctype = files[name]
        return web.Response(body=body, content_type=ctype, charset="utf-8", headers=HEADERS)

    async def index(request: web.Request) -> web.Response:
        return send("index.html")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            return web.Response(status=404, text="404 Not Found", headers=HEADERS)
        return send(name)

    for p in ("/", "/ui", "/ui/"):
        app.router.add_get(p, index)
    app.router.add_get(PREFIX + "{name}", static)
