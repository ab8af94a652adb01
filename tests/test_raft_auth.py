"""Issue 9, item 11: the Raft port is an input. pysyncobj unpickles what it reads there; with the cluster secret
(pysyncobj's `password`, Fernet) a frame is authenticated before it is unpickled, and a connection sending anything
unauthenticated is dropped. `drover master` refuses to start without a secret unless --raft-insecure; `drover local`
makes one per cluster (eventstore/raftlog.py, "peer authentication"; docs/design.md)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import socket
import stat
import struct
import time
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from pysyncobj.encryptor import getEncryptor
from pysyncobj.utility import TcpUtility, UtilityException

from drover.local import free_port
from eventstore.raftlog import RaftLog, RaftTuning, ensure_secret_file, read_secret_file
from tests.cluster import MASTER_ARGS, Cluster


# ---- the attack ------------------------------------------------------------------------------------------------

class _CreateFile:
    """Unpickling this calls open(path, 'w'): it creates `path`, as whoever unpickles it. The pickle names only
    io.open, so the receiving process needs nothing of this module."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _frame(data: bytes) -> bytes:
    """One frame as pysyncobj's TcpConnection.send writes it without a password: native int length, zlib(pickle)."""
    return struct.pack("i", len(data)) + data


def _plain(obj) -> bytes:
    return _frame(zlib.compress(pickle.dumps(obj, protocol=2), 3))


def _sealed(fernet, obj) -> bytes:
    """A frame as TcpConnection.send writes it with a password -- here with a key the cluster does not have."""
    return _frame(fernet.encrypt_at_time(zlib.compress(pickle.dumps(obj, protocol=2), 3), int(time.monotonic())))


@dataclass
class Framing:
    name: str
    control: bool  # a single replica without a secret runs it (checked: the attack is a real one)
    build: object  # (evil, peer_raft_addr) -> bytes


WRONG = getEncryptor(b"not-the-cluster-secret-0123456789")


def _forged_token(evil) -> bytes:
    # A well-formed Fernet token (version, timestamp, IV, ciphertext) whose HMAC is made up.
    good = Fernet(Fernet.generate_key()).encrypt(zlib.compress(pickle.dumps(evil, protocol=2), 3))
    raw = bytearray(base64.urlsafe_b64decode(good))
    raw[-32:] = os.urandom(32)
    return _frame(base64.urlsafe_b64encode(bytes(raw)))


FRAMINGS = [
    Framing("first frame", True, lambda evil, peer: _plain(evil)),
    Framing("utility command 'status'", True, lambda evil, peer: _plain(["status", evil])),
    Framing("utility command 'add'", True, lambda evil, peer: _plain(["add", evil])),
    Framing("claims to be a read-only node, then sends the payload", True,
            lambda evil, peer: _plain("readonly") + _plain({"type": "drover_keepalive", "x": evil})),
    # (a single replica has no peer to impersonate: not in the control)
    Framing("claims to be a peer, then sends the payload", False,
            lambda evil, peer: _plain(peer) + _plain({"type": "drover_keepalive", "x": evil})),
    Framing("plaintext key handshake, then a keyed payload", False,
            lambda evil, peer: _plain(os.urandom(32)) + _plain((os.urandom(32), evil))),
    Framing("handshake and payload sealed with a wrong secret", False,
            lambda evil, peer: _sealed(WRONG, os.urandom(32)) + _sealed(WRONG, (os.urandom(32), evil))),
    Framing("wrong-secret handshake, then a plaintext payload", False,
            lambda evil, peer: _sealed(WRONG, os.urandom(32)) + _plain(evil)),
    Framing("Fernet token with a forged HMAC", False, lambda evil, peer: _forged_token(evil)),
    Framing("negative frame length", False,
            lambda evil, peer: struct.pack("i", -1) + zlib.compress(pickle.dumps(evil, protocol=2), 3) + b"x"),
]


def _attack(raft_addr: str, payload: bytes, timeout: float = 2.5) -> bool:
    """Send `payload` to a Raft port; True if the replica closed the connection within `timeout` (below the 3 s
    idle timeout of RaftTuning, so a close means the replica refused what it read)."""
    host, port = raft_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        try:
            s.sendall(payload)
        except OSError:
            return True  # already dropped
        s.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if s.recv(65536) == b"":
                    return True
            except socket.timeout:
                continue
            except OSError:
                return True
        return False


def _utility(raft_addr: str, password, command) -> object:
    return TcpUtility(password=password, timeout=5).executeCommand(raft_addr, command)


# ---- unit level: what the design rests on ---------------------------------------------------------------------

def test_fernet_checks_the_hmac_before_handing_out_anything():
    """pysyncobj calls extract_timestamp, then decrypt, then pickle.loads (tcp_connection.py:286-291): both must
    refuse a token that is not authentic, whatever its content."""
    f = getEncryptor(b"the-cluster-secret-0123456789")
    good = f.encrypt_at_time(b"payload", 42)
    assert f.extract_timestamp(good) == 42 and f.decrypt(good) == b"payload"
    raw = bytearray(base64.urlsafe_b64decode(good))
    tampered = []
    for pos in (9, 30, len(raw) - 40, len(raw) - 1):  # timestamp, IV, ciphertext, HMAC
        t = bytearray(raw)
        t[pos] ^= 1
        tampered.append(base64.urlsafe_b64encode(bytes(t)))
    for token in [*tampered, WRONG.encrypt_at_time(b"payload", 42), b"", b"garbage",
                  zlib.compress(pickle.dumps("x"))]:
        with pytest.raises(InvalidToken):
            f.extract_timestamp(token)
        with pytest.raises(InvalidToken):
            f.decrypt(token)


def test_secret_files(tmp_path):
    path = ensure_secret_file(tmp_path / "d" / "raft.secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = read_secret_file(path)
    assert len(secret) == 64 and int(secret, 16) >= 0
    assert ensure_secret_file(path) == path and read_secret_file(path) == secret  # kept, not replaced
    assert ensure_secret_file(tmp_path / "other") != path and read_secret_file(tmp_path / "other") != secret

    loose = tmp_path / "loose"
    loose.write_bytes(b"x" * 40)
    loose.chmod(0o640)
    with pytest.raises(ValueError, match="chmod 600"):
        read_secret_file(loose)
    short = tmp_path / "short"
    short.write_bytes(b"  tooshort \n")
    short.chmod(0o600)
    with pytest.raises(ValueError, match="at least 16") as e:
        read_secret_file(short)
    assert "tooshort" not in str(e.value)
    with pytest.raises(ValueError, match="cannot read"):
        read_secret_file(tmp_path / "missing")
    assert secret.decode() not in repr(RaftTuning(secret=secret))


async def _single_replica(tmp_path: Path, secret: bytes | None):
    log = RaftLog(f"127.0.0.1:{free_port()}", [], tmp_path / "raft", RaftTuning(secret=secret, fsync_journal=False))
    log.start(asyncio.get_running_loop(), asyncio.Queue())
    deadline = time.time() + 10
    while not (log.ready and log.is_leader):
        assert time.time() < deadline, "single replica never became leader"
        await asyncio.sleep(0.01)
    return log


@pytest.mark.parametrize("framing", [f for f in FRAMINGS if f.control], ids=lambda f: f.name)
def test_without_a_secret_the_attack_runs_code(tmp_path, framing):
    """The control: pysyncobj without a password creates the file for these framings (so the same framings
    against a replica with a secret test something)."""
    async def run():
        log = await _single_replica(tmp_path, None)
        try:
            target = tmp_path / "pwned"
            await asyncio.to_thread(_attack, log.self_addr, framing.build(_CreateFile(target), log.self_addr))
            deadline = time.time() + 5
            while not target.exists() and time.time() < deadline:
                await asyncio.sleep(0.05)
            assert target.exists(), f"{framing.name}: the unauthenticated pickle was not run without a secret"
            assert _utility(log.self_addr, None, ["status"])["state"] == 2  # leader; the utility port is open too
        finally:
            log.stop()
    asyncio.run(run())


def test_with_a_secret_a_single_replica_refuses_every_framing(tmp_path):
    secret = b"s" * 32
    async def run():
        log = await _single_replica(tmp_path, secret)
        try:
            assert log._sync.encryptor is not None
            for i, framing in enumerate(FRAMINGS):
                target = tmp_path / f"pwned-{i}"
                dropped = await asyncio.to_thread(_attack, log.self_addr,
                                                  framing.build(_CreateFile(target), log.self_addr))
                assert dropped, f"{framing.name}: the connection was not dropped"
                assert not target.exists(), f"{framing.name}: an unauthenticated pickle was run"
            for password in (None, b"not-the-cluster-secret-0123456789"):
                with pytest.raises(UtilityException):
                    await asyncio.to_thread(_utility, log.self_addr, password, ["status"])
            status = await asyncio.to_thread(_utility, log.self_addr, secret, ["status"])
            assert status["state"] == 2  # with the secret, the same channel answers
            assert await log.propose(_batch(log)) >= 1  # and the log still commits
        finally:
            log.stop()
    asyncio.run(run())


def _batch(log):
    from eventstore import events as ev

    return ev.Batch(term=log.term, ts=0.0, events=[ev.WeightsUpdated(weights={"r": 2.0})])


# ---- real master processes -------------------------------------------------------------------------------------

class _NoAgentsCluster(Cluster):
    """Masters only: these tests need no agents, so no Podman service either."""

    def start_podman(self, wait: bool = True) -> None:
        pass

    def _wait_podman(self, sock: Path, timeout: float = 60.0) -> None:
        pass


def _update_weights(c: Cluster, weight: float) -> None:
    body = json.dumps({"type": "UPDATE_WEIGHTS", "update_weights": {
        "weight_infos": [{"role": "auth-test", "weight": weight}]}}).encode()
    deadline = time.time() + 30
    while True:
        req = urllib.request.Request(f"http://{c.leader_endpoint()}/api/v1", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200
                return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.integration
def test_three_replicas_with_a_secret_commit_and_refuse_unauthenticated_pickles(tmp_path):
    c = _NoAgentsCluster(data_dir=tmp_path / "cluster", agents=0, master_args=list(MASTER_ARGS))
    c.start()
    try:
        c.wait_leader()
        secret_file = c.data_dir / "raft.secret"
        secret = read_secret_file(secret_file)
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        for m in c.layout["masters"]:
            proc = c.procs[m["id"]]
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert str(secret_file).encode() in cmdline and secret not in cmdline
            assert secret not in Path(f"/proc/{proc.pid}/environ").read_bytes()
        _update_weights(c, 2.0)
        before = c.wait_converged()
        assert all(s["applied_index"] > 0 for s in before.values())

        peers = {m["id"]: m["raft"] for m in c.layout["masters"]}
        for mid, raft in peers.items():  # the leader and both followers
            other = next(r for i, r in peers.items() if i != mid)
            for i, framing in enumerate(FRAMINGS):
                target = tmp_path / f"pwned-{mid}-{i}"
                dropped = _attack(raft, framing.build(_CreateFile(target), other))
                assert dropped, f"{mid}, {framing.name}: the connection was not dropped"
                assert not target.exists(), f"{mid}, {framing.name}: an unauthenticated pickle was run"
            with pytest.raises(UtilityException):
                _utility(raft, None, ["status"])
            assert _utility(raft, secret, ["status"])["self"].address == raft  # with the secret, the channel works
        time.sleep(1.0)  # anything run late would have had its chance
        assert not list(tmp_path.glob("pwned-*"))

        assert all(c.alive(m["id"]) for m in c.layout["masters"])
        _update_weights(c, 3.0)
        after = c.wait_converged()
        assert all(after[m]["applied_index"] > before[m]["applied_index"] for m in after)
        for m in c.layout["masters"]:
            assert secret.decode() not in c.log(m["id"])
    finally:
        c.stop()


class _OneWrongSecret(_NoAgentsCluster):
    wrong: str | None = None  # the replica given its own secret

    def master_argv(self, m: dict) -> list[str]:
        argv = super().master_argv(m)
        if m["id"] == self.wrong:
            i = argv.index("--raft-secret-file")
            argv[i + 1] = str(ensure_secret_file(self.data_dir / "wrong.secret"))
        return argv


@pytest.mark.integration
def test_a_replica_with_the_wrong_secret_does_not_join(tmp_path):
    c = _OneWrongSecret(data_dir=tmp_path / "cluster", agents=0, master_args=list(MASTER_ARGS))
    c.wrong = "m3"
    c.start()
    try:
        leader = c.wait_leader()
        assert leader in ("m1", "m2")
        _update_weights(c, 2.0)
        _update_weights(c, 3.0)
        time.sleep(4 * 1.6)  # several of m3's election timeouts (RaftTuning.raft_max_timeout)
        st = c.statuses()
        good = {k: st[k] for k in ("m1", "m2")}
        assert all(s is not None and s["applied_index"] > 0 for s in good.values()), st
        assert good["m1"]["state_hash"] == good["m2"]["state_hash"]
        m3 = st["m3"]
        assert m3 is not None and not m3["serving"] and not m3["raft_leader"] and m3["applied_index"] == 0, m3
        assert m3["term"] == 0, m3  # pysyncobj campaigns only when connected to someone (syncobj.py:635)
        # Neither side counts the other as connected: m1 and m2 see each other only, m3 sees nobody.
        raft = {m["id"]: m["raft"] for m in c.layout["masters"]}
        cluster_secret = read_secret_file(c.data_dir / "raft.secret")
        wrong_secret = read_secret_file(c.data_dir / "wrong.secret")
        for mid, other, outsider in (("m1", "m2", "m3"), ("m2", "m1", "m3")):
            ps = _utility(raft[mid], cluster_secret, ["status"])
            assert ps["partner_node_status_server_" + raft[other]] == 2, ps
            assert ps["partner_node_status_server_" + raft[outsider]] == 0, ps
        ps = _utility(raft["m3"], wrong_secret, ["status"])
        assert ps["leader"] is None and not ps["has_quorum"] and ps["raft_term"] == 0, ps
        assert [ps["partner_node_status_server_" + raft[o]] for o in ("m1", "m2")] == [0, 0], ps

        # The same replica with the cluster's secret joins and catches up: it was only the secret.
        c.kill("m3")
        c.wrong = None
        c.start_master("m3")
        sts = c.wait_converged(timeout=60)
        assert sts["m3"]["applied_index"] == sts[leader]["applied_index"] > 0
    finally:
        c.stop()


# ---- the command -----------------------------------------------------------------------------------------------

def _master_cli(tmp_path, *extra: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "drover.cli", "master", "--id", "m", "--http",
                           f"127.0.0.1:{free_port()}", "--raft", f"127.0.0.1:{free_port()}",
                           "--data-dir", str(tmp_path / "m"), *extra],
                          capture_output=True, text=True, timeout=60)


def test_drover_master_refuses_to_start_without_a_secret(tmp_path):
    r = _master_cli(tmp_path)
    assert r.returncode == 2 and "refusing to start without --raft-secret-file" in r.stderr, r.stderr
    loose = tmp_path / "loose"
    loose.write_text("x" * 40)
    loose.chmod(0o644)
    r = _master_cli(tmp_path, "--raft-secret-file", str(loose))
    assert r.returncode == 2 and "chmod 600" in r.stderr and "x" * 40 not in r.stderr, r.stderr
    ok = ensure_secret_file(tmp_path / "ok")
    r = _master_cli(tmp_path, "--raft-secret-file", str(ok), "--raft-insecure")
    assert r.returncode == 2 and "exclude each other" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
