"""Network namespaces for chaos runs: one per master replica and agent, joined by a bridge.

Each node gets its own namespace with a veth into a per-run bridge (10.213.N.0/24; the host is .254),
so a partition is a real one: packets are dropped by iptables inside the node's namespace, while the
host (the harness) can still reach every node, which lets it watch an isolated leader step down.
Only root can do this; without it `drover chaos` falls back to process faults (faults.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field


class NetnsError(Exception):
    pass


def available() -> bool:
    """Root, and the tools this needs (ip, iptables)."""
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in ("ip", "iptables"))


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


@dataclass
class Network:
    """A bridge plus namespaces. `tag` (1..250) keeps concurrent runs apart: names carry it, and the
    subnet is 10.213.<tag>.0/24. Interface names stay within Linux's 15 characters."""

    tag: int
    nodes: dict[str, str] = field(default_factory=dict)  # node name -> IP
    cut: set[tuple[str, str]] = field(default_factory=set)  # (node, peer) pairs whose traffic is dropped

    @classmethod
    def for_this_process(cls) -> "Network":
        """A tag no other run on this host is using (its bridge does not exist)."""
        start = os.getpid() % 230
        for i in range(230):
            tag = 20 + (start + i) % 230
            if not os.path.exists(f"/sys/class/net/drvbr{tag}"):
                return cls(tag=tag)
        raise NetnsError("no free network tag: remove stale drvbr* bridges (ip link del drvbrN)")

    @property
    def bridge(self) -> str:
        return f"drvbr{self.tag}"

    @property
    def host_ip(self) -> str:
        return f"10.213.{self.tag}.254"

    def ns(self, node: str) -> str:
        return f"drv{self.tag}{node}"

    def _veth(self, node: str) -> str:
        return f"drv{self.tag}{node}h"[:15]

    def up(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")

    def add(self, node: str) -> str:
        """A namespace for `node`; returns its IP."""
        ip = f"10.213.{self.tag}.{len(self.nodes) + 1}"
        ns, veth = self.ns(node), self._veth(node)
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "link", "set", veth, "master", self.bridge)
        _run("ip", "link", "set", veth, "up")
        _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        self.nodes[node] = ip
        return ip

    def wrap(self, node: str, argv: list[str]) -> list[str]:
        """argv run inside the node's namespace (the process keeps its pid: ip netns exec execs)."""
        return ["ip", "netns", "exec", self.ns(node), *argv]

    def partition(self, node: str, peers: list[str]) -> None:
        """Drop all traffic between `node` and each of `peers` (both directions, inside node's namespace)."""
        for peer in peers:
            if (node, peer) in self.cut:
                continue
            ns, ip = self.ns(node), self.nodes[peer]
            _run("ip", "netns", "exec", ns, "iptables", "-w", "-I", "INPUT", "-s", ip, "-j", "DROP")
            _run("ip", "netns", "exec", ns, "iptables", "-w", "-I", "OUTPUT", "-d", ip, "-j", "DROP")
            self.cut.add((node, peer))

    def heal(self, node: str | None = None) -> None:
        """Undo `partition` for `node` (or for every node)."""
        for n, peer in sorted(self.cut):
            if node is not None and n != node:
                continue
            ns, ip = self.ns(n), self.nodes[peer]
            _run("ip", "netns", "exec", ns, "iptables", "-w", "-D", "INPUT", "-s", ip, "-j", "DROP", check=False)
            _run("ip", "netns", "exec", ns, "iptables", "-w", "-D", "OUTPUT", "-d", ip, "-j", "DROP", check=False)
            self.cut.discard((n, peer))

    def _ours(self, name: str) -> bool:
        # drv20m1 is tag 20's, drv200m1 is not: the tag must be followed by the node name.
        prefix = f"drv{self.tag}"
        return name.startswith(prefix) and name[len(prefix):len(prefix) + 1].isalpha()

    def down(self) -> None:
        """Remove every namespace and link of this tag (idempotent)."""
        listed = _run("ip", "netns", "list", check=False).stdout.split("\n")
        for line in listed:
            name = line.split(" ")[0].strip()
            if self._ours(name):
                _run("ip", "netns", "del", name, check=False)
        links = _run("ip", "-o", "link", "show", check=False).stdout.splitlines()
        for line in links:
            parts = line.split(":")
            if len(parts) > 1:
                name = parts[1].strip().split("@")[0]
                if name == self.bridge or (self._ours(name) and name.endswith("h")):
                    _run("ip", "link", "del", name, check=False)
        self.nodes.clear()
        self.cut.clear()
