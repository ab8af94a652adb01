"""The `drover` command: master, agent, local, execute.

Bad flags get one line on stderr and exit status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from drover import logs


from drover import audit_cli, chaos_cli, replay_cli, task_cli, why_cli
from drover.errors import UsageError


def _addr(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def _registry(value: str) -> str:
    """A registry as an image reference names it: HOST or HOST:PORT (no scheme, no path)."""
    host, sep, port = value.rpartition(":") if ":" in value else (value, "", "")
    if not host or "/" in value or any(ch.isspace() for ch in value) or (sep and not (
            port.isdigit() and 0 < int(port) < 65536)):
        raise argparse.ArgumentTypeError(f"expected HOST or HOST:PORT, got {value!r}")
    return value


def _bytes(value: str) -> int:
    """A size as Mesos's Bytes flags take it: an integer with an optional B, KB, MB, GB or TB (powers of 1024)."""
    v = value.strip().upper()
    for suffix, mult in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024), ("B", 1)):
        if v.endswith(suffix):
            v, m = v[: -len(suffix)].strip(), mult
            break
    else:
        m = 1
    if not v.isdigit():
        raise argparse.ArgumentTypeError(f"expected a size such as 2GB, 512MB or 1048576, got {value!r}")
    return int(v) * m


def _positive(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(v):  # nan and inf would pass the comparison below and stall a loop or a timer
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return v


def client_auth_flags(p: argparse.ArgumentParser, client: str) -> None:
    """A client command's --credentials / --principal / --secret (read by `client_credential`) and its TLS flags."""
    p.add_argument("--credentials", type=Path, default=None, metavar="FILE",
                   help="authenticate as the first principal of this credentials file (or a {principal, secret} "
                        "file; mode 0600)")
    p.add_argument("--principal", default=None, help="authenticate as this principal (with --secret)")
    p.add_argument("--secret", default=None,
                   help="the principal's secret (visible to other local users in the process list: prefer "
                        "--credentials)")
    _tls_flags(p, server=False, client=client)


def write_out(text: str) -> None:
    """Print a command's answer; a reader that stops early (`| head`) is not an error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _tls_flags(p: argparse.ArgumentParser, server: bool, client: str | None) -> None:
    """The TLS flags (docs/tls.md): a server's certificate and key, and the CA a client verifies masters with."""
    if server:
        p.add_argument("--tls-cert", type=Path, default=None, metavar="FILE",
                       help="serve HTTPS with this PEM certificate chain (the server's certificate first); needs "
                            "--tls-key")
        p.add_argument("--tls-key", type=Path, default=None, metavar="FILE",
                       help="the certificate's private key (PEM, unencrypted, not accessible to other users)")
    if client:
        p.add_argument("--tls-ca", type=Path, default=None, metavar="FILE",
                       help=f"{client} over HTTPS, verifying the master's certificate (chain, and the host name or "
                            f"IP it was reached at) against the CA certificate(s) in this PEM file")


def _server_tls(args: argparse.Namespace) -> None:
    """Check --tls-cert/--tls-key before anything starts, so that a bad file is one line and exit status 2."""
    if args.tls_cert is None and args.tls_key is None:
        return
    if args.tls_cert is None or args.tls_key is None:
        raise UsageError("--tls-cert and --tls-key go together")
    from drover.security.tls import server_context

    try:
        server_context(args.tls_cert, args.tls_key)
    except ValueError as e:
        raise UsageError(f"--tls-cert/--tls-key: {e}") from None


def _client_tls(args: argparse.Namespace):
    """The client context --tls-ca asks for (None without it): checked here, once."""
    if args.tls_ca is None:
        return None
    from drover.security.tls import client_context

    try:
        return client_context(args.tls_ca)
    except ValueError as e:
        raise UsageError(f"--tls-ca: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drover", description="An event-sourced datacenter kernel (Mesos v1 API).")
    p.add_argument("--log-level", default=None, help="debug, info, warning, error (default: info)")
    sub = p.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("master", help="run one master replica")
    m.add_argument("--id", required=True, help="replica name, e.g. m1")
    m.add_argument("--http", type=_addr, required=True, help="HOST:PORT for the HTTP API")
    m.add_argument("--raft", type=_addr, required=True, help="HOST:PORT for Raft traffic")
    m.add_argument("--peer", action="append", default=[], metavar="RAFT=HTTP",
                   help="another replica: its Raft and HTTP addresses (repeat per peer)")
    m.add_argument("--data-dir", type=Path, required=True)
    m.add_argument("--leader-address", type=_addr, default=None,
                   help="an address only the current leader listens on (for clients without leader detection)")
    m.add_argument("--raft-fsync", action=argparse.BooleanOptionalAction, default=None,
                   help="flush the Raft journal to disk before acknowledging each entry, and run SQLite with "
                        "synchronous=FULL, so acknowledged events survive power loss of the host (default: on; "
                        "see docs/design.md, Durability)")
    m.add_argument("--raft-secret-file", type=Path, default=None, metavar="PATH",
                   help="file holding the cluster's shared secret (at least 16 bytes, mode 0600, the same on every "
                        "replica): Raft peers without it are refused before anything they send is read. Required "
                        "unless --raft-insecure (docs/design.md, Raft authentication)")
    m.add_argument("--raft-insecure", action="store_true",
                   help="run Raft without authentication: anyone who reaches the Raft port can run code as this "
                        "process's user. Only for a port no one else can reach")
    m.add_argument("--credentials", type=Path, default=None, metavar="FILE",
                   help="principals and secrets that may call this master (Mesos's JSON format, mode 0600): "
                        "every HTTP endpoint but /health, /version and /redirect then requires HTTP Basic "
                        "authentication (docs/security.md). Without it the cluster is open to anyone who reaches it")
    m.add_argument("--acls", type=Path, default=None, metavar="FILE",
                   help="what each principal may do (Mesos's JSON ACL format; docs/security.md)")
    m.add_argument("--allocation-interval", type=_positive, default=1.0, help="seconds between batch allocations")
    m.add_argument("--offer-timeout", type=_positive, default=None, help="rescind offers unanswered this long (s)")
    m.add_argument("--heartbeat-interval", type=_positive, default=15.0, help="stream heartbeat period (s)")
    m.add_argument("--framework-failover-grace", type=float, default=60.0,
                   help="time frameworks get to re-subscribe after a leader change (s)")
    m.add_argument("--agent-ping-timeout", type=_positive, default=15.0,
                   help="agents ping the leader this often; one missing a ping for this long missed one (s)")
    m.add_argument("--max-agent-ping-timeouts", type=int, default=5,
                   help="missed pings (or that many timeouts disconnected) before an agent is marked unreachable")
    m.add_argument("--agent-reregister-timeout", type=_positive, default=600.0,
                   help="after a leader change, time an agent not heard from since gets to re-register before it "
                        "is marked unreachable (s; Mesos: 10 min)")
    _tls_flags(m, server=True, client=None)
    m.add_argument("--pipeline-depth", type=int, default=2, metavar="N",
                   help="Raft entries the leader keeps in flight; decisions staged meanwhile are committed as one")
    m.add_argument("--snapshot-every", type=int, default=10_000,
                   help="events between state snapshots in the store (replay starts from the nearest)")
    m.add_argument("--min-allocatable-resources", default="cpus:0.01|mem:32",
                   help="an offer must hold one of these quantity sets ('|' between sets, ';' within one)")
    m.add_argument("--role-sorter", default="drf", help="drf (weighted DRF) or priority (higher weight first)")
    m.add_argument("--framework-sorter", default="drf", help="drf or priority (a framework's 'priority' label)")
    m.add_argument("--fair-sharing-excluded-resource-names", default="",
                   help="comma-separated resource names left out of DRF shares (e.g. gpus)")

    a = sub.add_parser("agent", help="run an agent")
    a.add_argument("--master", required=True, help="comma-separated HOST:PORT of master replicas")
    a.add_argument("--http", type=_addr, required=True, help="HOST:PORT for the agent's own endpoints")
    a.add_argument("--work-dir", type=Path, required=True)
    a.add_argument("--resources", default="cpus:1;mem:1024;disk:10240;ports:[31000-32000]")
    a.add_argument("--podman-socket", type=Path, default=None, help="default: WORK_DIR/podman.sock")
    a.add_argument("--hostname", default=None)
    a.add_argument("--attributes", default="", help="k:v;k2:v2")
    a.add_argument("--credential", "--agent-credential", dest="credential", type=Path, default=None, metavar="FILE",
                   help="this agent's own principal and secret for the master ({\"principal\": ..., \"secret\": "
                        "...}, or a credentials file whose first entry is used; mode 0600)")
    a.add_argument("--credentials", type=Path, default=None, metavar="FILE",
                   help="principals that may read this agent's HTTP API (Mesos's JSON format; default: anyone)")
    a.add_argument("--acls", type=Path, default=None, metavar="FILE",
                   help="what each principal may do with this agent's API (Mesos's JSON ACL format: view_frameworks, "
                        "view_tasks, view_flags, access_sandboxes, launch_nested_container_sessions; docs/security.md)")
    _tls_flags(a, server=True, client="reach the masters")
    a.add_argument("--task-pids-limit", type=int, default=None, metavar="N",
                   help="processes (and threads) one task's container may have, from 16 to 4194304 "
                        "(default: 4096)")
    a.add_argument("--registry-insecure", action="append", default=[], type=_registry, metavar="HOST[:PORT]",
                   help="an image registry reached over plain HTTP or without verifying its certificate "
                        "(repeatable; every other registry is pulled from over verified TLS)")
    a.add_argument("--image-pull-timeout", type=_positive, default=None, metavar="SECONDS",
                   help="a task whose image is not pulled within this fails (default: 300)")
    a.add_argument("--fetcher-allowed-dir", action="append", default=[], type=Path, metavar="DIR",
                   help="a directory tasks may fetch local files (file:// or absolute-path URIs) from (repeatable; "
                        "default: none, local URIs are refused)")
    a.add_argument("--fetcher-cache-size", type=_bytes, default=None, metavar="BYTES",
                   help="size of the fetcher's cache (WORK_DIR/fetch-cache), e.g. 2GB, 512MB or 1048576 "
                        "(default: 2GB)")
    a.add_argument("--gc-delay", type=_positive, default=None, metavar="SECONDS",
                   help="how long a finished task's sandbox is kept, at most (less as the disk fills; default: a "
                        "week, as Mesos)")
    a.add_argument("--gc-disk-headroom", type=float, default=None, metavar="FRACTION",
                   help="disk fraction kept free: sandboxes go at once when the disk is more than 1 - this full "
                        "(0 to 1; default 0.1)")
    a.add_argument("--disk-watch-interval", type=_positive, default=None, metavar="SECONDS",
                   help="how often the agent sweeps sandboxes, containers and logs (default: 60)")
    a.add_argument("--task-log-max-size", type=_bytes, default=None, metavar="BYTES",
                   help="a task's stdout or stderr beyond this is rotated to stdout.1 / stderr.1 (default: 64MB)")
    a.add_argument("--enforce-container-disk-quota", action=argparse.BooleanOptionalAction, default=False,
                   help="measure each running task's sandbox (as du does) and kill a task holding more than its "
                        "disk resources: TASK_FAILED, REASON_CONTAINER_LIMITATION_DISK (default: off, as Mesos)")
    a.add_argument("--container-disk-watch-interval", type=_positive, default=None, metavar="SECONDS",
                   help="how often sandboxes are measured with --enforce-container-disk-quota (default: 15)")

    l = sub.add_parser("local", help="run 3 master replicas and 2 agents on this machine")
    l.add_argument("--data-dir", type=Path, default=Path("var/local"))
    l.add_argument("--masters", type=int, default=3, choices=(1, 3, 5))
    l.add_argument("--agents", type=int, default=2)
    l.add_argument("--base-port", type=int, default=5050,
                   help="leader endpoint on BASE, replicas on BASE+1.., agents on BASE+11.., Raft on BASE+100.. "
                        "(so a second cluster on this machine needs a BASE at least 110 away: BASE+100 is taken; "
                        "deploy/prometheus/prometheus.yml is written for the default 5050)")
    l.add_argument("--demo", action="store_true", help="run a demo job once the cluster is up, then keep running")
    l.add_argument("--secure", action="store_true",
                   help="authentication and ACLs on every port: credentials in DATA_DIR/credentials.json (the first "
                        "principal is for frameworks and operators), ACLs in DATA_DIR/acls.json (docs/security.md)")
    l.add_argument("--tls", action="store_true",
                   help="HTTPS on every port: a CA and a certificate for 127.0.0.1/localhost are generated into "
                        "DATA_DIR/tls/ (clients: --tls-ca DATA_DIR/tls/ca.pem; docs/tls.md)")

    sm = sub.add_parser("sim", help="run the allocator over scenario files (docs/allocator-scenarios.md)")
    sm.add_argument("scenarios", nargs="+", type=Path, help="scenario JSON files")
    sm.add_argument("--quiet", action="store_true", help="print only failures and the summary")

    replay_cli.add_commands(sub)
    audit_cli.add_commands(sub)
    why_cli.add_commands(sub)
    chaos_cli.add_commands(sub)
    task_cli.add_commands(sub)

    e = sub.add_parser("execute", help="run a command as tasks (like mesos-execute)")
    e.add_argument("--master", required=True, type=_addr)
    e.add_argument("--command", required=True)
    e.add_argument("--image", default=None)
    e.add_argument("--cpus", type=_positive, default=0.1, help="per task (default: 0.1)")
    e.add_argument("--mem", type=_positive, default=32.0, help="MB per task (default: 32)")
    e.add_argument("--instances", type=int, default=1)
    e.add_argument("--name", default="drover-execute")
    e.add_argument("--timeout", type=_positive, default=300.0,
                   help="seconds before giving up: the framework is torn down and tasks still running are killed "
                        "(default: 300; a long job needs a longer one)")
    e.add_argument("--user", default="root", help="the user the tasks run as (the framework's user; '' = the image's)")
    client_auth_flags(e, "talk to the master")
    return p


def _master(args) -> int:
    from master.allocator import AllocatorConfig
    from master.replica import MasterConfig, Peer
    from master.http import run_master

    peers = []
    for spec in args.peer:
        raft, sep, http = spec.partition("=")
        if not sep:
            raise UsageError(f"--peer {spec!r}: expected RAFT_HOST:PORT=HTTP_HOST:PORT")
        peers.append(Peer(raft=_addr(raft), http=_addr(http)))
    try:
        allocator = AllocatorConfig(
            allocation_interval=args.allocation_interval, offer_timeout=args.offer_timeout,
            min_allocatable=AllocatorConfig.parse_min_allocatable(args.min_allocatable_resources),
            fair_sharing_excluded=tuple(n.strip() for n in args.fair_sharing_excluded_resource_names.split(",")
                                        if n.strip()),
            role_sorter=args.role_sorter, framework_sorter=args.framework_sorter)
    except ValueError as e:
        msg = str(e)
        for field, flag in (("role_sorter", "--role-sorter"), ("framework_sorter", "--framework-sorter"),
                            ("min_allocatable_resources:", "--min-allocatable-resources:"),
                            ("allocation_interval", "--allocation-interval"), ("offer_timeout", "--offer-timeout")):
            if msg.startswith(field):
                msg = flag + msg[len(field):]
        raise UsageError(msg) from None
    cfg = MasterConfig(
        id=args.id, http=args.http, raft=args.raft, peers=peers, data_dir=args.data_dir,
        leader_address=args.leader_address, heartbeat_interval=args.heartbeat_interval,
        framework_failover_grace=args.framework_failover_grace, allocator=allocator,
        snapshot_every=args.snapshot_every,
        agent_ping_timeout=args.agent_ping_timeout, max_agent_ping_timeouts=args.max_agent_ping_timeouts,
        agent_reregister_timeout=args.agent_reregister_timeout, pipeline_depth=args.pipeline_depth,
        tls_cert=args.tls_cert, tls_key=args.tls_key,
    )
    if args.raft_fsync is not None:
        cfg.raft_tuning = dataclasses.replace(cfg.raft_tuning, fsync_journal=args.raft_fsync)
    if args.max_agent_ping_timeouts < 1:
        raise UsageError(f"--max-agent-ping-timeouts must be at least 1, got {args.max_agent_ping_timeouts}")
    if not 1 <= args.pipeline_depth <= 64:
        raise UsageError(f"--pipeline-depth must be in 1..64, got {args.pipeline_depth}")
    if args.snapshot_every < 1:
        raise UsageError(f"--snapshot-every must be at least 1, got {args.snapshot_every}")
    _server_tls(args)
    if args.raft_secret_file is not None and args.raft_insecure:
        raise UsageError("--raft-secret-file and --raft-insecure exclude each other")
    if args.raft_secret_file is not None:
        from eventstore.raftlog import read_secret_file

        try:
            secret = read_secret_file(args.raft_secret_file)
        except ValueError as e:
            raise UsageError(f"--raft-secret-file: {e}") from None
        cfg.raft_tuning = dataclasses.replace(cfg.raft_tuning, secret=secret)
    elif not args.raft_insecure:
        raise UsageError("refusing to start without --raft-secret-file PATH: unauthenticated Raft peers could run "
                         "code as this process (pass --raft-insecure to accept that)")
    else:
        import structlog

        structlog.get_logger("drover.master").warning(
            "Raft without authentication (--raft-insecure): anyone reaching the Raft port can run code as this "
            "process", raft=args.raft)
    cfg.credentials, cfg.acls = _security(args.credentials, args.acls, "master", args.http)
    # Everything a replica writes (store, Raft journal, dumps, snapshots) holds every task's command and
    # environment: readable by its owner only, whatever umask it was started with.
    os.umask(0o077)
    asyncio.run(run_master(cfg))
    return 0


def _security(credentials: Path | None, acls: Path | None, what: str, address: str):
    """--credentials and --acls, read and checked once (a bad file is one clear line, exit 2); a warning when the
    server will accept anyone."""
    import structlog

    from drover.security import files
    from drover.security.acls import OPEN, ACLError
    from drover.security.credentials import CredentialsError

    creds = None
    try:
        if credentials is not None:
            creds = files.load_credentials(credentials)
        rules = files.load_acls(acls) if acls is not None else OPEN
    except (CredentialsError, ACLError) as e:
        raise UsageError(f"--{'credentials' if isinstance(e, CredentialsError) else 'acls'}: {e}") from None
    if creds is None:
        structlog.get_logger(f"drover.{what}").warning(
            f"no --credentials: this {what} accepts calls from anyone who reaches {address} (docs/security.md)")
        if acls is not None:
            structlog.get_logger(f"drover.{what}").warning(
                "--acls without --credentials: frameworks are judged by the principal they claim in FrameworkInfo, "
                "which nobody checks (as Mesos does); add --credentials")
    return creds, rules


def _agent(args) -> int:
    from agent import rules
    from agent.agent import AgentConfig, run_agent
    from eventstore.events import Label
    from eventstore.resources import Resources

    try:
        resources = Resources.parse(args.resources)
    except ValueError as e:
        raise UsageError(f"--resources: {e}") from None
    attrs = []
    for part in filter(None, args.attributes.split(";")):
        k, sep, v = part.partition(":")
        if not sep:
            raise UsageError(f"--attributes: expected key:value, got {part!r}")
        attrs.append(Label(k.strip(), v.strip()))
    masters = [_addr(m.strip()) for m in args.master.split(",") if m.strip()]
    _server_tls(args)
    _client_tls(args)
    pids = rules.DEFAULT_TASK_PIDS_LIMIT if args.task_pids_limit is None else args.task_pids_limit
    if not rules.MIN_TASK_PIDS_LIMIT <= pids <= rules.MAX_TASK_PIDS_LIMIT:
        raise UsageError(f"--task-pids-limit must be from {rules.MIN_TASK_PIDS_LIMIT} to "
                         f"{rules.MAX_TASK_PIDS_LIMIT}, got {pids}")
    cfg = AgentConfig(masters=masters, http=args.http, work_dir=args.work_dir, resources=resources,
                      podman_socket=args.podman_socket or args.work_dir / "podman.sock", attributes=attrs,
                      tls_cert=args.tls_cert, tls_key=args.tls_key, tls_ca=args.tls_ca, task_pids_limit=pids,
                      insecure_registries=list(args.registry_insecure),
                      image_pull_timeout=args.image_pull_timeout or rules.DEFAULT_IMAGE_PULL_TIMEOUT,
                      fetcher_allowed_dirs=list(args.fetcher_allowed_dir),
                      enforce_container_disk_quota=args.enforce_container_disk_quota)
    if args.container_disk_watch_interval is not None:
        cfg.container_disk_watch_interval = args.container_disk_watch_interval
    if args.fetcher_cache_size is not None:
        cfg.fetcher_cache_size = args.fetcher_cache_size
    gc = cfg.gc
    if args.gc_delay is not None:
        gc.gc_delay = args.gc_delay
    if args.gc_disk_headroom is not None:
        if not 0.0 <= args.gc_disk_headroom <= 1.0:
            raise UsageError(f"--gc-disk-headroom must be from 0 to 1, got {args.gc_disk_headroom}")
        gc.headroom = args.gc_disk_headroom
    if args.disk_watch_interval is not None:
        gc.interval = args.disk_watch_interval
    if args.task_log_max_size is not None:
        if args.task_log_max_size < 4096:
            raise UsageError(f"--task-log-max-size must be at least 4096 bytes, got {args.task_log_max_size}")
        gc.task_log_max_bytes = args.task_log_max_size
    for d in cfg.fetcher_allowed_dirs:
        if not d.is_absolute() or not d.is_dir():
            raise UsageError(f"--fetcher-allowed-dir {d}: must be an existing directory, given as an absolute path")
    if args.hostname:
        cfg.hostname = args.hostname
    if args.credential is not None:
        from drover.security import files
        from drover.security.credentials import CredentialsError

        try:
            cfg.credential = files.load_credential(args.credential)
        except CredentialsError as e:
            raise UsageError(f"--credential: {e}") from None
    cfg.credentials, cfg.acls = _security(args.credentials, args.acls, "agent", args.http)
    from agent.volumes import VolumeError

    try:
        asyncio.run(run_agent(cfg))
    except VolumeError as e:  # its checkpointed volumes do not fit its flags, or cannot be read: said in one line
        print(f"drover agent: {e}", file=sys.stderr)
        return 1
    return 0


def _local(args) -> int:
    from drover.local import LocalCluster, PortsBusy

    cluster = LocalCluster(data_dir=args.data_dir.resolve(), masters=args.masters, agents=args.agents,
                           base_port=args.base_port, secure=args.secure, tls=args.tls)
    stopping = False
    service = None

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        layout = cluster.start()
    except PortsBusy as e:
        raise UsageError(str(e)) from None
    try:
        try:
            leader = cluster.wait_leader()
            cluster.wait_agents()
        except TimeoutError as e:
            print(f"drover local: {e}", file=sys.stderr, flush=True)
            return 1
        print(f"drover local cluster is up (data in {cluster.data_dir})")
        print(f"  leader endpoint (follows failover): {layout['leader']}")
        if layout.get("tls_ca"):
            print(f"  TLS: every port is HTTPS; clients verify it with the CA in {layout['tls_ca']} "
                  f"(drover execute --tls-ca {layout['tls_ca']})")
        scheme = "https" if cluster.tls else "http"
        for m in layout["masters"]:
            mark = "  <- leader" if m["id"] == leader else ""
            print(f"  master {m['id']}: {scheme} {m['http']}  raft {m['raft']}{mark}")
        for a in layout["agents"]:
            print(f"  agent  {a['id']}: {scheme} {a['http']}  work dir {a['work_dir']}")
        if cluster.secure:
            cred = cluster.client_credential()
            print(f"  secure: every port needs HTTP Basic; principal {cred.principal!r}, secrets in "
                  f"{layout['credentials']} (e.g. drover execute --credentials {layout['credentials']} ...)")
        print(f"  endpoints written to {cluster.data_dir / 'local.json'}; Ctrl-C stops everything")
        sys.stdout.flush()
        if args.demo:
            from drover.execute import execute
            print("demo: 4 tasks, each echoing from its own container ...", flush=True)
            rc = asyncio.run(execute(layout["leader"], "echo hello from $MESOS_TASK_ID in $(hostname); sleep 1",
                                     instances=4, name="demo", credential=cluster.client_credential(),
                                     ssl_context=cluster.client_ssl()))
            print(f"demo finished: {'all tasks finished' if rc == 0 else 'some tasks failed'}", flush=True)
            from drover.demo import DemoService
            print("demo service: a web server (busybox httpd) on an offered port, health-checked over HTTP by its "
                  "agent, launched again if it ends ...", flush=True)
            service = DemoService(layout["leader"], credential=cluster.client_credential(),
                                  ssl_context=cluster.client_ssl())
            service.start()
        reported: set[str] = set()
        while not stopping:
            time.sleep(0.2)
            for name, proc in cluster.procs.items():
                if name not in reported and proc.poll() is not None and not stopping:
                    reported.add(name)
                    print(f"warning: {name} exited with status {proc.returncode}; see "
                          f"{cluster.data_dir / (name + '.log')}", file=sys.stderr)
    finally:
        print("stopping the local cluster ...", flush=True)
        if service is not None:
            service.stop()
        cluster.stop()
    return 0


def _sim(args) -> int:
    from replay.sim import ScenarioError, load_cases, run_case

    failed = total = 0
    for path in args.scenarios:
        try:
            cases = load_cases(path)
            results = [run_case(c) for c in cases]
        except ScenarioError as e:
            raise UsageError(str(e)) from None
        for res in results:
            total += 1
            failed += not res.ok
            if not args.quiet:
                for cp in res.checkpoints:
                    print(json.dumps({"case": res.case_id, "step": cp.index, "ok": cp.ok, "offers": cp.offers}))
            print(f"{'ok  ' if res.ok else 'FAIL'} {res.case_id} ({path.name})")
            for cp in res.checkpoints:
                if not cp.ok:
                    print(f"  checkpoint steps[{cp.index}]" + (f" ({cp.note})" if cp.note else "") + ":")
                    print("\n".join("  " + line for line in cp.diff))
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


def client_credential(args):
    """A client's --credentials FILE or --principal/--secret (None: unauthenticated)."""
    from drover.security import files
    from drover.security.credentials import Credential, CredentialsError

    try:
        if args.credentials is not None:
            if args.principal is not None or args.secret is not None:
                raise UsageError("--credentials and --principal/--secret exclude each other")
            return files.load_credential(args.credentials)
        if (args.principal is None) != (args.secret is None):
            raise UsageError("--principal and --secret go together")
        return Credential(args.principal, args.secret) if args.principal is not None else None
    except CredentialsError as e:
        raise UsageError(f"credentials: {e}") from None


def _execute(args) -> int:
    import aiohttp

    from drover.execute import ExecuteError, execute

    credential = client_credential(args)
    ssl_context = _client_tls(args)
    try:
        return asyncio.run(execute(args.master, args.command, image=args.image, cpus=args.cpus, mem=args.mem,
                                   instances=args.instances, name=args.name, timeout=args.timeout,
                                   user=args.user, credential=credential, ssl_context=ssl_context))
    except ExecuteError as e:
        raise UsageError(str(e)) from None
    except aiohttp.ClientConnectorCertificateError as e:
        raise UsageError(f"the master at {args.master} presented a certificate that does not verify against "
                         f"--tls-ca {args.tls_ca}: {e.certificate_error.verify_message}") from None
    except aiohttp.ClientSSLError as e:
        raise UsageError(f"no TLS connection to the master at {args.master} (does it serve HTTPS?): {e}") from None
    except (OSError, aiohttp.ClientError) as e:
        hint = "" if ssl_context is not None else " (if it serves HTTPS, pass --tls-ca)"
        raise UsageError(f"cannot reach the master at {args.master}: {e or type(e).__name__}{hint}") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level, component=args.cmd)
    try:
        handlers = {"master": _master, "agent": _agent, "local": _local, "execute": _execute, "sim": _sim}
        return handlers[args.cmd](args) if args.cmd in handlers else args.run(args)
    except UsageError as e:
        print(f"drover {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
