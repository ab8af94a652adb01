"""`drover audit`: who got which resources, when, and why, read from a replica's event store.

    drover audit offers|allocations|tasks|frameworks|reservations|volumes --store PATH
        [--framework ID] [--role R] [--agent ID] [--since T] [--until T] [--volume ID] [--format table|json|csv]

PATH is a replica's data dir or its events.sqlite; T is ISO 8601 (no zone = UTC) or epoch seconds.
The queries are in `replay/audit.py`; docs/audit.md explains what each answers.
"""

from __future__ import annotations

import argparse
import sqlite3

from drover.errors import UsageError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit", help="query a replica's event store: offers, allocations, tasks, frameworks, reservations, volumes",
        description="Who got which resources, when, and why: read from a master replica's event store "
                    "(docs/audit.md).")
    # Validated in run(), so a mistake gets one line (argparse would print the usage too).
    p.add_argument("query", nargs="?", metavar="{offers,allocations,tasks,frameworks,reservations,volumes}",
                   help="what to list")
    p.add_argument("--store", metavar="PATH", help="a replica's data dir or its events.sqlite (required)")
    p.add_argument("--framework", metavar="ID", help="only this framework (the id with or without the cluster prefix)")
    p.add_argument("--role", metavar="ROLE", help="only this role")
    p.add_argument("--agent", metavar="ID", help="only this agent (with or without the cluster prefix)")
    p.add_argument("--since", metavar="T", help="only what was live at or after T (ISO 8601 or epoch seconds)")
    p.add_argument("--until", metavar="T", help="only what was live at or before T")
    p.add_argument("--volume", metavar="ID", help="only this persistent volume (its persistence id; reservations "
                                                  "and volumes only)")
    p.add_argument("--format", default="table", metavar="FMT", help="table (default), json or csv")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from eventstore.events import UnknownEvent
    from eventstore.store import StoreCorrupt
    from replay import audit
    from replay.reader import ReplayError

    if not args.query:
        raise UsageError(f"name a query: {', '.join(audit.QUERIES)}")
    if args.query not in audit.QUERIES:
        raise UsageError(f"unknown query {args.query!r} (expected one of {', '.join(audit.QUERIES)})")
    if args.format not in audit.FORMATS:
        raise UsageError(f"--format: unknown format {args.format!r} (expected one of {', '.join(audit.FORMATS)})")
    if not args.store:
        raise UsageError("--store PATH is required (a replica's data dir or its events.sqlite)")
    try:
        filters = audit.Filters.parse(framework=args.framework, role=args.role, agent=args.agent,
                                      since=args.since, until=args.until, volume=args.volume)
        audit.check(args.query, filters)
    except audit.AuditError as e:
        raise UsageError(f"--{e}") from None
    try:
        records, cluster = audit.run_query(args.store, args.query, filters)
    except FileNotFoundError:
        raise UsageError(f"--store: no event store at {args.store}") from None
    except sqlite3.DatabaseError as e:
        raise UsageError(f"--store: {args.store} is not a readable event store ({e})") from None
    except (StoreCorrupt, UnknownEvent, ReplayError) as e:  # a gap, an undecodable payload, a fold error
        raise UsageError(f"--store: {e}") from None
    from drover.cli import write_out

    write_out(audit.render(args.query, records, args.format, cluster))
    return 0
