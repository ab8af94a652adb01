"""The last check a decider makes: would the commit gate take these events?

`eventstore.events.encode_event` refuses an event that breaks a value rule of its type or a rule the fold
relies on; the events are encoded and decoded back exactly as a replica will. Deciders validate their calls
field by field first (with messages a client can act on); this check makes sure a rule they do not spell out
still turns into a clear refusal instead of a failed commit (a 500) or, worse, a committed poison pill.
"""

from __future__ import annotations

from typing import Iterable

import msgspec

from eventstore import events as ev


def event_problem(event: ev.Event) -> str | None:
    """Why `event` cannot be committed, or None if the gate takes it."""
    try:
        ev.encode_event(event)  # the gate itself: encodes, and decodes back with every rule
    except (ValueError, msgspec.MsgspecError, ev.UnknownEvent) as e:  # InvalidEvent is a ValueError
        return str(e)
    return None


def events_problem(events: Iterable[ev.Event]) -> str | None:
    for e in events:
        problem = event_problem(e)
        if problem is not None:
            return problem
    return None
