"""`drover replay`: look at a replica's history offline (docs/replay.md).

    drover replay state  --store PATH [--at INDEX | --at-time ISO8601] [--json]
    drover replay diff   --store PATH [--store-b PATH2] A B [--json]
    drover replay bisect --store PATH --store-b PATH2 [--json]
    drover replay verify --store PATH [--json]

`--store` is a replica's data dir (live or copied) or its events.sqlite; it is opened read-only.
Exit status: 0 fine; 1 a finding (verify failed, the stores diverge, the store is damaged where it
was read); 2 a usage error (bad flag, no such store, index out of range, bad time), one line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import sys
from pathlib import Path

import msgspec

from drover.errors import UsageError


class _Finding(Exception):
    """Something wrong in a store, found while reading it: one line on stderr, exit status 1."""


def _one_line_errors(parser: argparse.ArgumentParser, prog: str) -> None:
    """argparse errors as one line (no usage block) and exit status 2, like every drover usage error."""

    def error(message: str):
        print(_printable(f"{prog}: error: {message}"), file=sys.stderr)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]


def _index(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a log index (a whole number), got {value!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"a log index is >= 0, got {value}")
    return v


def _index_or_last(value: str) -> int | str:
    return "last" if value.lower() in ("last", "end") else _index(value)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="rebuild, compare and verify a replica's history (state, diff, bisect, verify)",
                       description="Rebuild, compare and verify a master replica's event store (docs/replay.md). "
                                   "--store is a replica's data dir or its events.sqlite; it is opened read-only.")
    _one_line_errors(p, "drover replay")
    rs = p.add_subparsers(dest="replay_cmd", required=True, metavar="{state,diff,bisect,verify}")

    s = rs.add_parser("state", help="the state at an index (or a time): a summary, or every field as JSON")
    s.add_argument("--store", required=True, help="replica data dir or events.sqlite")
    at = s.add_mutually_exclusive_group()
    at.add_argument("--at", type=_index, default=None, metavar="INDEX",
                    help="the state after folding events 1..INDEX (default: the last event)")
    at.add_argument("--at-time", default=None, metavar="ISO8601",
                    help="the state after the last event with leader time <= this (no offset: UTC)")
    s.add_argument("--json", action="store_true", help="every State field as JSON, plus state_hash")
    s.add_argument("--limit", type=_index, default=50, help="lines per list in the summary (0: no limit)")
    s.add_argument("--no-snapshots", action="store_true", help="fold from index 0 instead of the nearest snapshot")
    _one_line_errors(s, "drover replay state")

    d = rs.add_parser("diff", help="what changed between the state at A and at B (B possibly in another store)")
    d.add_argument("--store", required=True, help="the store holding index A")
    d.add_argument("--store-b", default=None, help="the store holding index B (default: --store)")
    d.add_argument("a", type=_index_or_last, metavar="A", help="index in --store ('last' for its last event)")
    d.add_argument("b", type=_index_or_last, metavar="B", help="index in --store-b ('last' for its last event)")
    d.add_argument("--json", action="store_true")
    d.add_argument("--limit", type=_index, default=50, help="lines per list in the text (0: no limit)")
    _one_line_errors(d, "drover replay diff")

    b = rs.add_parser("bisect", help="the first index where two stores' histories differ")
    b.add_argument("--store", required=True, help="store A")
    b.add_argument("--store-b", required=True, help="store B")
    b.add_argument("--json", action="store_true")
    _one_line_errors(b, "drover replay bisect")

    v = rs.add_parser("verify", help="replay from 0 checking snapshots, re-run decisions, gaps and payloads")
    v.add_argument("--store", required=True, help="replica data dir or events.sqlite")
    v.add_argument("--json", action="store_true")
    _one_line_errors(v, "drover replay verify")

    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    handlers = {"state": _state, "diff": _diff, "bisect": _bisect, "verify": _verify}
    try:
        return handlers[args.replay_cmd](args)
    except _Finding as e:
        print(_printable(f"drover replay {args.replay_cmd}: error: {e}"), file=sys.stderr)
        return 1
    except BrokenPipeError:  # `... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


# ---- helpers ------------------------------------------------------------------------------------------


def _open(path: str):
    from replay.reader import StoreError, open_store

    try:
        return open_store(path)
    except StoreError as e:
        raise UsageError(str(e)) from None


def _check_index(store, idx: int, last: int, flag: str) -> None:
    if idx > last:
        raise UsageError(f"{flag} {idx}: out of range: {store.path} holds indexes 1..{last}"
                         if last else f"{flag} {idx}: out of range: {store.path} holds no events")


def parse_time(text: str) -> float:
    """ISO 8601 (`2026-11-25T10:46:27.5Z`, `2026-11-25 10:46:27+01:00`, ...) to epoch seconds; no offset = UTC."""
    t = text.strip()
    try:
        when = dt.datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    except ValueError:
        raise UsageError(f"--at-time {text!r}: not an ISO 8601 time (e.g. 2026-11-25T10:46:27Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


@contextlib.contextmanager
def _fold_errors():
    """Problems found in the store while reading or folding it: one line, exit status 1."""
    from replay.reader import ReplayError

    try:
        yield
    except ReplayError as e:
        raise _Finding(str(e)) from None


# JSON escapes C0 controls itself; DEL, C1 (CSI) and the bidirectional controls it may carry raw, so they are
# written as \u escapes (the same JSON value), never to the terminal.
_JSON_RAW_CONTROLS = re.compile(r"[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _print_json(obj) -> None:
    text = msgspec.json.format(msgspec.json.encode(obj), indent=2).decode()
    sys.stdout.write(_JSON_RAW_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text))
    sys.stdout.write("\n")
    sys.stdout.flush()


def _printable(text: str) -> str:
    from replay.state_view import printable_lines

    return printable_lines(text)


def _print_text(text: str) -> None:
    """Text output: names, messages and payloads come from frameworks and agents, so control characters are
    shown escaped (replay.state_view.printable), never written to the terminal."""
    print(_printable(text))


# ---- commands ---------------------------------------------------------------------------------------------


def _state(args) -> int:
    from replay.reader import state_at
    from replay.state_view import fmt_time, state_json, summary

    store = _open(args.store)
    try:
        last = store.last_index()
        if args.at_time is not None:
            ts = parse_time(args.at_time)
            idx = store.index_at_time(ts)
            if idx is None:
                first = store.row(store.first_index())
                when = f" (the first event, index {first[0]}, is at {fmt_time(first[2])})" if first else \
                    " (the store holds no events)"
                raise UsageError(f"--at-time {args.at_time}: no event at or before {fmt_time(ts)}{when}")
        else:
            idx = last if args.at is None else args.at
            _check_index(store, idx, last, "--at")
        with _fold_errors():
            state = state_at(store, idx, use_snapshots=not args.no_snapshots, check_snapshot=True)
        if args.json:
            out = state_json(state)
            out["store"] = str(store.path)
            out["last_index"] = last
            _print_json(out)
        else:
            _print_text(summary(state, source=str(store.path), last_index=last, limit=args.limit or None))
        return 0
    finally:
        store.close()


def _diff(args) -> int:
    from replay.diff import diff_states, render
    from replay.reader import state_at

    store_a = _open(args.store)
    same = args.store_b is None or Path(args.store_b).resolve() == Path(args.store).resolve()
    store_b = store_a if same else _open(args.store_b)
    try:
        states = []
        for store, idx, flag in ((store_a, args.a, "A"), (store_b, args.b, "B")):
            last = store.last_index()
            idx = last if idx == "last" else idx
            _check_index(store, idx, last, f"index {flag} =")
            with _fold_errors():
                states.append(state_at(store, idx, check_snapshot=True))
        d = diff_states(*states)
        d["a"]["store"], d["b"]["store"] = str(store_a.path), str(store_b.path)
        if args.json:
            _print_json(d)
        else:
            la = f"A {store_a.path}" if not same else "A"
            lb = f"B {store_b.path}" if not same else "B"
            _print_text(render(d, label_a=la, label_b=lb, cluster_id=states[0].cluster_id or states[1].cluster_id,
                               limit=args.limit or None))
        return 0
    finally:
        store_a.close()
        if store_b is not store_a:
            store_b.close()


def _bisect(args) -> int:
    from replay.bisect import bisect, render

    a = _open(args.store)
    b = _open(args.store_b)
    try:
        with _fold_errors():
            res = bisect(a, b)
        if args.json:
            _print_json(res.to_json())
        else:
            _print_text(render(res))
        return 0 if res.identical else 1
    finally:
        a.close()
        b.close()


def _verify(args) -> int:
    from replay.reader import StoreError, open_store, resolve_store_path
    from replay.verify import Finding, VerifyResult, render, verify

    try:
        resolve_store_path(args.store)  # no such path: a usage error (2)
    except StoreError as e:
        raise UsageError(str(e)) from None
    try:
        store = open_store(args.store)
    except StoreError as e:  # a file that is not an event store: a finding (1)
        res = VerifyResult(path=str(args.store), finding=Finding(None, "store", str(e)))
    else:
        try:
            res = verify(store)
        finally:
            store.close()
    if args.json:
        _print_json(res.to_json())
    else:
        _print_text(render(res))
    return 0 if res.ok else 1
