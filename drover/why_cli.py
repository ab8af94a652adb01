"""`drover why`: why a task ran on its agent, why a framework or a role got no offers; from the log alone.

    drover why task FRAMEWORK TASK         (--store PATH | --master HOST:PORT) [--index N] [--format table|json]
    drover why framework FRAMEWORK [--since T] [--until T] [--role R]   (same options)
    drover why role ROLE [--since T] [--until T]                        (same options)

With --store, read a replica's data dir or events.sqlite directly; with --master, ask a running master
(`GET /api/drover/why/...`, any replica; --credentials or --principal/--secret when it authenticates).
`--index N` answers as of log index N. The answers are built by replay/why.py (docs/why.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sqlite3
import urllib.error
import urllib.parse
import urllib.request

from drover.errors import UsageError


def add_commands(sub: argparse._SubParsersAction) -> None:
    from drover.cli import _addr, client_auth_flags

    p = sub.add_parser("why", help="why a task ran where it ran; why a framework or role got no offers",
                       description="Answers from the event log alone, for any index in history (docs/why.md).")
    wsub = p.add_subparsers(dest="why_kind", required=True)
    task = wsub.add_parser("task", help="why a task ran on its agent: the allocation run that offered it, and after")
    task.add_argument("framework_id", metavar="FRAMEWORK", help="the task's framework id (with or without the "
                                                                "cluster prefix)")
    task.add_argument("task_id", metavar="TASK", help="the task id")
    fw = wsub.add_parser("framework", help="why a framework got no (or few) offers over a time window")
    fw.add_argument("framework_id", metavar="FRAMEWORK", help="the framework id")
    fw.add_argument("--role", metavar="ROLE", help="only this one of its roles")
    role = wsub.add_parser("role", help="why a role's frameworks got no (or few) offers over a time window")
    role.add_argument("role", metavar="ROLE")
    for q in (fw, role):
        q.add_argument("--since", metavar="T", help="window start (ISO 8601 or epoch seconds; default: the start)")
        q.add_argument("--until", metavar="T", help="window end (default: the end of the log, or --index)")
    for q in (task, fw, role):
        q.add_argument("--store", metavar="PATH", help="a replica's data dir or its events.sqlite")
        q.add_argument("--master", type=_addr, metavar="HOST:PORT", help="ask this master over HTTP instead")
        q.add_argument("--index", type=int, metavar="N", help="answer as of this log index (default: the latest)")
        q.add_argument("--format", default="table", choices=("table", "json"), help="table (default) or json")
        client_auth_flags(q, "talk to the master (with --master)")
        q.set_defaults(run=run)


def _params(args: argparse.Namespace) -> dict[str, object]:
    names = {"task": ("framework_id", "task_id"), "framework": ("framework_id", "role", "since", "until"),
             "role": ("role", "since", "until")}[args.why_kind]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) not in (None, "")}


def _local(args: argparse.Namespace) -> str:
    from eventstore.events import UnknownEvent
    from eventstore.store import StoreCorrupt
    from replay import why
    from replay.audit import AuditError
    from replay.reader import ReplayError, resolve_store_path

    params = _params(args)
    if args.index is not None:
        params["at"] = args.index
    try:
        answer = why.ask(resolve_store_path(args.store), args.why_kind, **params)
    except why.WhyError as e:
        flag = {"index": "--index", "since": "--since", "until": "--until", "role": "--role", "task_id": "TASK",
                "framework_id": "FRAMEWORK"}.get(e.param, e.param)
        raise UsageError(f"{flag}: {str(e).partition(': ')[2]}") from None
    except AuditError as e:
        raise UsageError(f"--{e}") from None
    except FileNotFoundError:
        raise UsageError(f"--store: no event store at {args.store}") from None
    except sqlite3.DatabaseError as e:
        raise UsageError(f"--store: {args.store} is not a readable event store ({e})") from None
    except (StoreCorrupt, UnknownEvent, ReplayError) as e:
        raise UsageError(f"--store: {e}") from None
    return json.dumps(answer, indent=2) + "\n" if args.format == "json" else why.render(answer)


def _remote(args: argparse.Namespace) -> str:
    from drover.cli import _client_tls, client_credential

    credential = client_credential(args)
    ssl_context = _client_tls(args)
    query = _params(args)
    if args.index is not None:
        query["index"] = args.index
    query["format"] = args.format
    scheme = "https" if ssl_context is not None else "http"
    url = f"{scheme}://{args.master}/api/drover/why/{args.why_kind}?{urllib.parse.urlencode(query)}"
    req = urllib.request.Request(url, headers={"Authorization": credential.basic_header()} if credential else {})
    try:
        with urllib.request.urlopen(req, timeout=120, context=ssl_context) as resp:
            body = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        text = e.read().decode("utf-8", "replace").strip()
        if e.code == 401:  # the body is only "401 Unauthorized.": say what to pass, as `drover task` does
            raise UsageError(f"{args.master}: not authenticated (401): pass --credentials FILE (a --secure "
                             f"`drover local` writes DATA_DIR/credentials.json) or --principal/--secret") from None
        raise UsageError(f"{args.master}: {e.code}: {text[:500]}") from None
    except (OSError, urllib.error.URLError, http.client.HTTPException) as e:
        raise UsageError(f"cannot reach {args.master}: {getattr(e, 'reason', e)}") from None
    if args.format == "json":
        try:
            return json.dumps(json.loads(body), indent=2) + "\n"
        except ValueError:
            raise UsageError(f"{args.master}: the answer is not JSON: {body[:200]!r}") from None
    return body


def run(args: argparse.Namespace) -> int:
    if bool(args.store) == bool(args.master):
        raise UsageError("give one of --store PATH (a replica's data dir) or --master HOST:PORT")
    from drover.cli import write_out

    write_out(_local(args) if args.store else _remote(args))
    return 0
