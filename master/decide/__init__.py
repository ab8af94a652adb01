"""The decide layer: pure functions from (state, call, now, config) to a Decision.

One function per scheduler call, agent call, operator write and leader timer. A decider validates the call
against the folded state (Mesos's rules, Drover's limits) and returns the events it causes plus the reply;
it never does IO, reads no clock (time comes in as `now`) and draws no randomness (new ids derive from the
state). The HTTP handlers only parse, decide, commit and respond:

    request --parse (wire codec)--> call --decide(state, call, now, config)--> Decision
        Decision.refusal  -> 4xx, nothing committed
        Decision.events   -> one commit (the gate: eventstore.events.encode_event refuses any event the fold
                             would not accept) -> folded on every replica -> effects
        Decision.messages -> sent once the events are folded (reconciliation answers, acks to an agent)

Because deciders are pure, every rule is unit-tested without a cluster, and a property test drives random
and hostile calls through deciders and fold (tests/test_decide_property.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eventstore import events as ev
from master.effects import Effect
from drover.security.acls import ACLs, OPEN
from master.limits import Limits


@dataclass(frozen=True)
class Refused:
    """The call is refused as a whole: answered with `status` (4xx) and `message`; nothing is committed."""

    status: int
    message: str

    def __post_init__(self) -> None:
        assert 400 <= self.status < 500, "a refusal is a 4xx"


@dataclass(frozen=True)
class Decision:
    events: list[ev.Event] = field(default_factory=list)
    refusal: Refused | None = None
    # Sent after the events are folded (or at once when there are none): answers that are not history.
    messages: list[Effect] = field(default_factory=list)
    # A call-specific result for the handler (e.g. the framework id a SUBSCRIBE got); None if nothing.
    reply: object = None

    @staticmethod
    def refuse(status: int, message: str) -> "Decision":
        return Decision(refusal=Refused(status, message))


@dataclass(frozen=True)
class DecideConfig:
    """What deciders need from the master's configuration (built from MasterConfig at the edge)."""

    allocation_interval: float = 1.0
    framework_failover_grace: float = 60.0
    agent_unreachable_after: float = 75.0
    agent_reregister_timeout: float = 600.0
    limits: Limits = field(default_factory=Limits)
    # Authorization (drover/security/acls.py): Mesos's ACLs, judged with the principal a call was authenticated
    # as (or, for a framework's calls, the principal it registered with). `authenticate`: every call carries an
    # authenticated principal, so a framework's FrameworkInfo.principal must be it.
    acls: ACLs = OPEN
    authenticate: bool = False
