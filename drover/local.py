"""`drover local`: a whole cluster on this machine (master replicas, agents, a Podman service).

Each component is its own process, started exactly as an operator would start
it (`drover master`, `drover agent`), so killing one (kill -9 of the leader) is
a real failure. Endpoints go to DATA_DIR/local.json; Ctrl-C or SIGTERM stops
everything and removes the cluster's containers. The replicas authenticate each
other with a secret generated for the cluster in DATA_DIR/raft.secret (0600).
With `tls` (drover local --tls) every HTTP port is HTTPS: a new CA and a certificate
for the cluster's addresses go to DATA_DIR/tls/ at each start, agents and this
module's own checks verify the masters against that CA, and local.json names it
(`tls_ca`; docs/tls.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from agent.images import podman_env
from drover.security.acls import ACTIONS

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    # SO_REUSEADDR as the servers bind (aiohttp's reuse_address, pysyncobj's listener): without it a port whose
    # connections are in TIME_WAIT (a cluster just stopped with Ctrl-C) reads as taken for a minute, although
    # the servers could bind it; a port something listens on is still refused.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


# A cluster with --base-port B uses B .. B+PORT_SPAN-1 (see LocalCluster.plan).
PORT_SPAN = 110


def free_port_block(span: int = PORT_SPAN, low: int = 20000, high: int = 32768) -> int:
    """A base port B with B .. B+span-1 all free, below Linux's ephemeral range (32768+) so that no outgoing
    connection of another process takes one of them between this check and the cluster's bind."""
    import random

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - span)
        if all(port_free(base + i) for i in range(span)):
            return base
    raise RuntimeError(f"no block of {span} free ports in {low}..{high}")


class PortsBusy(RuntimeError):
    pass


@dataclass
class LocalCluster:
    data_dir: Path
    masters: int = 3
    agents: int = 2
    base_port: int | None = None  # None: pick free ports
    agent_resources: str = "cpus:2;mem:2048;disk:8192;ports:[31000-32000]"
    master_args: list[str] = field(default_factory=list)
    agent_args: list[str] = field(default_factory=list)
    # Agents kill a task whose sandbox holds more than its `disk` (--enforce-container-disk-quota; off by default in
    # `drover agent`, as Mesos), measuring every this many seconds (None: the agent's default, 15 s).
    enforce_container_disk_quota: bool = True
    container_disk_watch_interval: float | None = None
    tls: bool = False  # HTTPS on every port, with a PKI generated into DATA_DIR/tls/ (docs/tls.md)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    layout: dict = field(default_factory=dict)
    # --secure: every port authenticated (DATA_DIR/credentials.json, Mesos's format; its first principal is for
    # frameworks and operators, each agent has its own after it) and ACLs that keep the roles apart
    # (DATA_DIR/acls.json). docs/security.md.
    secure: bool = False
    extra_principals: tuple[str, ...] = ()  # more principals in the credentials file (after the agents')
    acl_rules: dict = field(default_factory=dict)  # action -> rules put before the generated ones
    _client_ssl: ssl.SSLContext | None = field(default=None, init=False, repr=False)

    def _port(self, offset: int) -> int:
        if self.base_port is not None:
            return self.base_port + offset
        # The kernel may hand out a just-released port again: never give two components the same one.
        taken = self.__dict__.setdefault("_taken_ports", set())
        while True:
            port = free_port()
            if port not in taken:
                taken.add(port)
                return port

    def plan(self) -> dict:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        masters = []
        for i in range(self.masters):
            masters.append({"id": f"m{i + 1}", "http": f"{HOST}:{self._port(1 + i)}",
                            "raft": f"{HOST}:{self._port(100 + i)}", "data_dir": str(self.data_dir / f"m{i + 1}")})
        agents = []
        for i in range(self.agents):
            agents.append({"id": f"a{i + 1}", "http": f"{HOST}:{self._port(11 + i)}",
                           "work_dir": str(self.data_dir / f"a{i + 1}")})
        self.layout = {"leader": f"{HOST}:{self._port(0)}", "masters": masters, "agents": agents,
                       "podman_socket": str(self.data_dir / "podman.sock")}
        return self.layout

    CLIENT_PRINCIPAL = "drover"

    def _agent_principal(self, aid: str) -> str:
        return f"agent-{aid}"

    def _write_security(self) -> Path:
        """The cluster's credentials and ACLs, made on first use and kept for the life of the data dir."""
        import secrets

        from drover.security import files
        from drover.security.credentials import Credential

        path = self.data_dir / "credentials.json"
        wanted = [self.CLIENT_PRINCIPAL] + [self._agent_principal(a["id"]) for a in self.layout["agents"]] + \
            list(self.extra_principals)
        have = {c.principal: c for c in files.load_credentials(path).entries} if path.exists() else {}
        entries = [have.get(p) or Credential(p, secrets.token_urlsafe(24)) for p in wanted]
        files.write_credentials(path, entries)
        for a, cred in zip(self.layout["agents"], entries[1:1 + len(self.layout["agents"])], strict=True):
            files.write_credentials(self.data_dir / f"{a['id']}.credential.json", [cred])
        agents = {"values": wanted[1:1 + len(self.layout["agents"])]}
        none = {"type": "NONE"}
        # Agents may register agents and nothing else; nobody else may register an agent.
        acls = {"permissive": True,
                "register_agents": [{"principals": agents, "agents": {"type": "ANY"}},
                                    {"principals": {"type": "ANY"}, "agents": none}]}
        # Every other action is denied to them: taken from the ACL vocabulary, so an action added later is denied
        # too (a list here once missed create_volumes and destroy_volumes: an agent could delete volumes).
        for action, keys in sorted(ACTIONS.items()):
            if action != "register_agents":
                acls[action] = [{"principals": agents, keys[-1]: none}]
        for action, rules in self.acl_rules.items():
            acls[action] = list(rules) + acls.get(action, [])
        fd = os.open(self.data_dir / "acls.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(acls, f, indent=2)
        return path

    def client_credential(self):
        """The framework/operator principal of a --secure cluster (None when it is open)."""
        if not self.secure:
            return None
        if "_client_credential" not in self.__dict__:
            from drover.security import files

            self.__dict__["_client_credential"] = files.load_credentials(self.data_dir / "credentials.json").entries[0]
        return self.__dict__["_client_credential"]

    def auth_headers(self) -> dict[str, str]:
        cred = self.client_credential()
        return {"Authorization": cred.basic_header()} if cred is not None else {}

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "drover.cli", *args]

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        logf = open(self.data_dir / f"{name}.log", "ab")
        env = {**os.environ, **podman_env(), "DROVER_LOG_LEVEL": os.environ.get("DROVER_LOG_LEVEL", "info")}
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs[name] = proc
        return proc

    @property
    def raft_secret_file(self) -> Path:
        """The cluster's Raft secret (DATA_DIR/raft.secret, mode 0600), made on first use and kept for the life of
        the data dir. Replicas get its path, never its contents: a command line is visible to every local user."""
        from eventstore.raftlog import ensure_secret_file

        return ensure_secret_file(self.data_dir / "raft.secret")

    # ---- TLS ------------------------------------------------------------------------------------------------
    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    def tls_hosts(self) -> list[str]:
        """What the cluster's certificate names: every host of the layout, and localhost."""
        addrs = [self.layout.get("leader")] + [m["http"] for m in self.layout["masters"]] + \
            [a["http"] for a in self.layout["agents"]]
        hosts = {a.rpartition(":")[0] for a in addrs if a}
        return sorted(hosts) + (["localhost"] if "localhost" not in hosts else [])

    def make_pki(self) -> None:
        """A new CA and server certificate (drover.security.tls.generate_test_pki) in DATA_DIR/tls/; the CA goes
        to the layout as `tls_ca`. Every master and agent serves the one certificate."""
        from drover.security.tls import client_context, generate_test_pki

        pki = generate_test_pki(self.tls_dir, hosts=tuple(self.tls_hosts()))
        self.layout["tls_ca"] = str(pki.ca)
        self._client_ssl = client_context(pki.ca)

    def client_ssl(self) -> ssl.SSLContext | None:
        """The client context for this cluster's ports (None without TLS)."""
        if self._client_ssl is None and self.layout.get("tls_ca"):
            from drover.security.tls import client_context

            self._client_ssl = client_context(self.layout["tls_ca"])
        return self._client_ssl

    def _tls_server_args(self) -> list[str]:
        if not self.tls:
            return []
        return ["--tls-cert", str(self.tls_dir / "cert.pem"), "--tls-key", str(self.tls_dir / "key.pem")]

    def url(self, addr: str, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://{addr}{path}"

    def get_json(self, addr: str, path: str, timeout: float = 5.0) -> dict:
        """GET a JSON document from one of the cluster's ports (HTTPS verified against the cluster's CA with
        TLS). Redirects are followed; they keep the scheme. OSError when it cannot be had."""
        req = urllib.request.Request(self.url(addr, path), headers=self.auth_headers())
        with urllib.request.urlopen(req, timeout=timeout, context=self.client_ssl()) as r:
            return json.load(r)

    def master_argv(self, m: dict) -> list[str]:
        argv = self._cmd("master", "--id", m["id"], "--http", m["http"], "--raft", m["raft"],
                         "--data-dir", m["data_dir"], "--raft-secret-file", str(self.raft_secret_file))
        argv += self._tls_server_args()
        if self.layout.get("leader"):
            argv += ["--leader-address", self.layout["leader"]]
        for other in self.layout["masters"]:
            if other is not m:
                argv += ["--peer", f"{other['raft']}={other['http']}"]
        if self.secure:
            argv += ["--credentials", str(self.data_dir / "credentials.json"),
                     "--acls", str(self.data_dir / "acls.json")]
        return argv + self.master_args

    def agent_argv(self, a: dict) -> list[str]:
        masters = ",".join(m["http"] for m in self.layout["masters"])
        tls = self._tls_server_args() + (["--tls-ca", str(self.tls_dir / "ca.pem")] if self.tls else [])
        return self._cmd("agent", "--master", masters, "--http", a["http"], "--work-dir", a["work_dir"],
                         "--resources", self.agent_resources, "--podman-socket", self.layout["podman_socket"],
                         "--hostname", a["http"].rpartition(":")[0], *tls,
                         *(["--enforce-container-disk-quota"] if self.enforce_container_disk_quota else []),
                         *(["--container-disk-watch-interval", f"{self.container_disk_watch_interval:g}"]
                           if self.container_disk_watch_interval is not None else []),
                         *(["--credential", str(self.data_dir / f"{a['id']}.credential.json"),
                            "--credentials", str(self.data_dir / "credentials.json"),
                            "--acls", str(self.data_dir / "acls.json")] if self.secure else []),
                         *self.agent_args)

    def planned_ports(self) -> list[int]:
        """The ports the layout takes on this machine's HOST (none for a layout in network namespaces, whose
        addresses are the namespaces' own and which has no leader address)."""
        addrs = [self.layout["leader"]] + [m[k] for m in self.layout["masters"] for k in ("http", "raft")]
        addrs += [a["http"] for a in self.layout["agents"]]
        return [int(port) for host, _, port in (a.rpartition(":") for a in addrs if a) if host == HOST]

    def start(self) -> dict:
        if not self.layout:
            self.plan()
        if self.secure and "credentials" not in self.layout:
            self.layout["credentials"] = str(self._write_security())
        # With --base-port the ports are fixed: one already taken would make a replica or an agent exit at once,
        # and the cluster would wait a minute for it.
        busy = [p for p in self.planned_ports() if not port_free(p)] if self.base_port is not None else []
        if busy:
            raise PortsBusy(f"port(s) {', '.join(map(str, busy))} on {HOST} are in use; choose another --base-port")
        if self.tls:
            self.make_pki()
        self.start_podman(wait=False)
        for m in self.layout["masters"]:
            self.start_master(m["id"])
        self._wait_podman(Path(self.layout["podman_socket"]))
        for a in self.layout["agents"]:
            self.start_agent(a["id"])
        (self.data_dir / "local.json").write_text(json.dumps(self.layout, indent=2))
        return self.layout

    def start_podman(self, wait: bool = True) -> None:
        """The Podman service the agents share (an operator's systemd unit would restart it the same way)."""
        sock = Path(self.layout["podman_socket"])
        sock.unlink(missing_ok=True)
        self._spawn("podman", ["podman", "system", "service", "--time=0", f"unix://{sock}"])
        if wait:
            self._wait_podman(sock)

    def _wait_podman(self, sock: Path, timeout: float = 60.0) -> None:
        # Agents treat a socket nobody answers on as stale and start their own service: wait until ours answers.
        from podman import PodmanClient

        deadline = time.time() + timeout
        while time.time() < deadline:
            if sock.exists():
                try:
                    with PodmanClient(base_url=f"unix://{sock}") as client:
                        if client.ping():
                            return
                except Exception:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"the podman service did not answer on {sock}; see {self.data_dir / 'podman.log'}")

    def start_master(self, mid: str) -> subprocess.Popen:
        m = next(m for m in self.layout["masters"] if m["id"] == mid)
        return self._spawn(mid, self.master_argv(m))

    def start_agent(self, aid: str) -> subprocess.Popen:
        a = next(a for a in self.layout["agents"] if a["id"] == aid)
        return self._spawn(aid, self.agent_argv(a))

    def status(self, mid: str, timeout: float = 1.0) -> dict | None:
        m = next(m for m in self.layout["masters"] if m["id"] == mid)
        try:
            return self.get_json(m["http"], "/drover/status", timeout=timeout)
        except OSError:
            return None

    def leader(self) -> str | None:
        for m in self.layout["masters"]:
            if not self.alive(m["id"]):
                continue
            st = self.status(m["id"])
            if st and st["serving"]:
                return m["id"]
        return None

    def wait_leader(self, timeout: float = 30.0) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            lead = self.leader()
            if lead:
                return lead
            time.sleep(0.1)
        raise TimeoutError("no master replica became leader")

    def agent_state(self, aid: str) -> dict | None:
        a = next(a for a in self.layout["agents"] if a["id"] == aid)
        try:
            return self.get_json(a["http"], "/state", timeout=2)
        except OSError:
            return None

    def wait_agents(self, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        waiting = [a["id"] for a in self.layout["agents"]]
        while time.time() < deadline:
            waiting = [aid for aid in waiting if not (self.agent_state(aid) or {}).get("master")]
            if not waiting:
                return
            time.sleep(0.2)
        raise TimeoutError(f"agent(s) {', '.join(waiting)} did not register within {timeout:.0f} s"
                           + "".join(self._log_tail(aid) for aid in waiting))

    def _log_tail(self, name: str, lines: int = 15) -> str:
        state = "running" if self.alive(name) else f"exited with status {self.procs[name].returncode}" \
            if name in self.procs else "not started"
        try:
            tail = (self.data_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            tail = []
        return f"\n--- {name} ({state}), last lines of {self.data_dir / (name + '.log')}:\n" + "\n".join(tail)

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def kill(self, name: str, sig: int = signal.SIGKILL, wait: bool = True) -> None:
        """Signal a component (kill -9 by default) and, unless `wait` is False (SIGSTOP/SIGCONT), reap it. The
        signal goes to its process group (each component runs in a session of its own), so a master's Raft process
        (eventstore/raftproc.py) is stopped, continued or killed with it, as a machine's would be."""
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            if wait:
                proc.wait(timeout=30)

    def agent_id(self, aid: str) -> str | None:
        """The id agent `aid` registered under (its checkpoint), None before it first registered."""
        a = next(a for a in self.layout["agents"] if a["id"] == aid)
        try:
            return json.loads((Path(a["work_dir"]) / "meta" / "agent.json").read_text()).get("agent_id")
        except (OSError, ValueError):
            return None

    def _terminate(self, names: list[str]) -> None:
        for name in names:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for name in names:
            proc = self.procs.get(name)
            if proc is not None:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def _settle(self, timeout: float = 10.0, quiet: float = 0.5) -> None:
        """Until the live replicas report the same (applied index, state hash) twice `quiet` seconds apart, or
        `timeout` passes (best effort: a replica that does not answer is not waited for)."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            live = [m["id"] for m in self.layout.get("masters", []) if self.alive(m["id"])]
            sts = [self.status(mid) for mid in live]
            seen = {(st["applied_index"], st["state_hash"]) for st in sts if st is not None}
            if not live or (len(seen) == 1 and None not in sts and seen == last):
                return
            last = seen if len(seen) == 1 and None not in sts else None
            time.sleep(quiet)

    def stop(self) -> None:
        """Stop agents, let the replicas settle, stop masters, remove this cluster's containers, stop Podman."""
        agent_ids = [self.agent_id(a["id"]) for a in self.layout.get("agents", [])]
        agents = [a["id"] for a in self.layout.get("agents", [])]
        self._terminate(agents)
        # The leader records the agents' disconnections: let every replica have them before the replicas stop,
        # so that their logs end alike (`drover chaos` compares them).
        self._settle()
        self._terminate([m["id"] for m in self.layout.get("masters", [])])
        env = {**os.environ, **podman_env()}
        for aid in filter(None, agent_ids):
            ids = subprocess.run(["podman", "ps", "-aq", "--filter", f"label=drover.agent={aid}"], env=env,
                                 capture_output=True, text=True).stdout.split()
            if ids:
                subprocess.run(["podman", "rm", "-f", "-t", "2", *ids], env=env, capture_output=True)
        proc = self.procs.get("podman")
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
