"""The fetcher (agent/fetcher.py): its pure rules, then real files and a real HTTP server on loopback, then tasks
of a real agent with real podman containers (fixture from tests/test_agent_safety.py), then one through a cluster.
No mocks."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
import uuid
import zipfile
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agent import fetcher
from agent.agent import Agent, AgentConfig
from agent.fetcher import FetchError, Fetcher, FetcherConfig
from eventstore.events import FetchURI
from eventstore.resources import Resources
from tests.netutil import serve_app
from tests.test_agent_rules import launch_msg
from tests.test_agent_safety import live_agent, wait_for_state  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(120)


# ---- pure ---------------------------------------------------------------------------------------------------------


def test_plan_names_extracts_and_refuses():
    p = fetcher.plan(FetchURI("https://example.com/d/app.tar.gz?sig=1#x"))
    assert (p.local, p.dest, p.archive, p.executable, p.cache) == (False, "app.tar.gz", "tar", False, False)
    assert fetcher.plan(FetchURI("http://h/app.zip", extract=False)).archive is None
    assert fetcher.plan(FetchURI("http://h/run.tgz", executable=True)).archive is None  # Mesos: not extracted
    assert fetcher.plan(FetchURI("http://h/x", output_file="bin/tool.txz")).dest == "bin/tool.txz"
    assert fetcher.plan(FetchURI("http://h/x", output_file="bin/tool.txz")).archive == "tar"
    local = fetcher.plan(FetchURI("file:///srv/a/b.tar"))
    assert (local.local, local.source, local.dest) == (True, "/srv/a/b.tar", "b.tar")
    assert fetcher.plan(FetchURI("/srv/a/c")).source == "/srv/a/c"
    for bad, says in (("ftp://h/a", "scheme 'ftp'"), ("http://h/dir/", "set its output_file"),
                      ("http://h", "set its output_file"), ("rel/path", "absolute path")):
        with pytest.raises(FetchError, match=says):
            fetcher.plan(FetchURI(bad))
    with pytest.raises(FetchError, match="output_file"):
        fetcher.plan(FetchURI("http://h/a", output_file="../a"))


@pytest.mark.parametrize("name, kind", [("a.tar", "tar"), ("a.TAR.GZ", "tar"), ("a.tgz", "tar"), ("a.tar.bz2", "tar"),
                                        ("a.tbz2", "tar"), ("a.tar.xz", "tar"), ("a.txz", "tar"), ("a.zip", "zip"),
                                        ("a.gz", None), ("a.tar.gz.sig", None), ("tar", None)])
def test_archive_kind(name, kind):
    assert fetcher.archive_kind(name) == kind


def test_member_names():
    assert fetcher.member_parts("./a//b/./c") == ["a", "b", "c"]
    assert fetcher.member_parts("./") == []
    for bad in ("/etc/passwd", "a/../../b", "..", "a/.."):
        with pytest.raises(FetchError):
            fetcher.member_parts(bad)


@pytest.mark.parametrize("parts, target, ok", [
    (["l"], "a/b", True), (["d", "l"], "../x", True), (["d", "l"], "../../x", False), (["l"], "../x", False),
    (["l"], "/etc/passwd", False), (["l"], "", False), (["d", "l"], "./../x", True), (["l"], "a/../../x", False),
])
def test_symlink_targets_stay_inside(parts, target, ok):
    assert (fetcher.symlink_problem(parts, target) is None) == ok


def test_local_paths_must_lie_inside_an_allowed_dir():
    assert fetcher.local_allowed("/srv/art/a", ["/srv/art"])
    assert fetcher.local_allowed("/srv/art/a/b", ["/x", "/srv/art/"])
    assert not fetcher.local_allowed("/srv/art", ["/srv/art"])
    assert not fetcher.local_allowed("/srv/artifacts/a", ["/srv/art"])
    assert not fetcher.local_allowed("/etc/passwd", [])


def test_cache_evicts_least_recently_used_first():
    entries = [("a", 40, 3.0), ("b", 40, 1.0), ("c", 20, 2.0)]
    assert fetcher.to_evict(entries, 100, 0) == []
    assert fetcher.to_evict(entries, 100, 10) == ["b"]
    assert fetcher.to_evict(entries, 100, 50) == ["b", "c"]
    assert fetcher.to_evict(entries, 100, 100) == ["b", "c", "a"]


# ---- archives -----------------------------------------------------------------------------------------------------


def tar_bytes(members: list[tuple[str, bytes | None, dict]], mode: str = "w:gz") -> bytes:
    """(name, content or None, TarInfo attributes) -> an archive."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data, attrs in members:
            ti = tarfile.TarInfo(name)
            for k, v in attrs.items():
                setattr(ti, k, v)
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


GOOD_TAR = tar_bytes([("app", None, {"type": tarfile.DIRTYPE, "mode": 0o755}),
                      ("app/hello.txt", b"hello from the archive\n", {"mode": 0o644}),
                      ("app/run.sh", b"#!/bin/sh\necho ran\n", {"mode": 0o4755}),
                      ("app/link", None, {"type": tarfile.SYMTYPE, "linkname": "hello.txt"}),
                      ("app/hard", None, {"type": tarfile.LNKTYPE, "linkname": "app/hello.txt"})])


@pytest.mark.parametrize("mode, name", [("w:gz", "a.tar.gz"), ("w:bz2", "a.tbz2"), ("w:xz", "a.tar.xz"),
                                        ("w", "a.tar")])
def test_tar_archives_are_extracted(tmp_path, mode, name):
    archive = tmp_path / name
    archive.write_bytes(tar_bytes([("d/f", b"x", {"mode": 0o640})], mode))
    root = tmp_path / "root"
    root.mkdir()
    fetcher.extract(archive, root, "tar")
    assert (root / "d" / "f").read_bytes() == b"x"
    assert stat.S_IMODE((root / "d" / "f").stat().st_mode) == 0o640


def test_extraction_keeps_links_inside_and_drops_setuid(tmp_path):
    (tmp_path / "a.tgz").write_bytes(GOOD_TAR)
    root = tmp_path / "root"
    root.mkdir()
    fetcher.extract(tmp_path / "a.tgz", root, "tar")
    assert (root / "app" / "hello.txt").read_text() == "hello from the archive\n"
    assert os.readlink(root / "app" / "link") == "hello.txt"
    assert (root / "app" / "hard").read_text() == "hello from the archive\n"
    assert stat.S_IMODE((root / "app" / "run.sh").stat().st_mode) == 0o755  # no setuid bit


HOSTILE_TARS = {
    "traversal": ([("../escape", b"x", {})], "leads outside"),
    "absolute": ([("/tmp/escape", b"x", {})], "absolute name"),
    "symlink-out": ([("l", None, {"type": tarfile.SYMTYPE, "linkname": "../../etc"})], "outside the sandbox"),
    "symlink-absolute": ([("l", None, {"type": tarfile.SYMTYPE, "linkname": "/etc"})], "absolute target"),
    # a link to "." is inside, but nothing is ever written through a link: x/../y would land outside
    "write-through-link": ([("x", None, {"type": tarfile.SYMTYPE, "linkname": "."}),
                            ("x/l", None, {"type": tarfile.SYMTYPE, "linkname": "../y"})], "symbolic link"),
    "write-through-link-file": ([("x", None, {"type": tarfile.SYMTYPE, "linkname": "d"}),
                                 ("d", None, {"type": tarfile.DIRTYPE}), ("x/f", b"x", {})], "symbolic link"),
    "hardlink-out": ([("h", None, {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"})], "absolute name"),
    "hardlink-missing": ([("h", None, {"type": tarfile.LNKTYPE, "linkname": "nothing"})], "not a file extracted"),
    "device": ([("null", None, {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3})], "special file"),
    "fifo": ([("p", None, {"type": tarfile.FIFOTYPE})], "special file"),
}


@pytest.mark.parametrize("case", HOSTILE_TARS)
def test_hostile_tar_archives_are_refused_and_write_nothing_outside(tmp_path, case):
    members, says = HOSTILE_TARS[case]
    (tmp_path / "evil.tgz").write_bytes(tar_bytes(members))
    root = tmp_path / "a" / "root"
    root.mkdir(parents=True)
    before = set(tmp_path.rglob("*"))
    with pytest.raises(FetchError, match=says):
        fetcher.extract(tmp_path / "evil.tgz", root, "tar")
    assert {p for p in set(tmp_path.rglob("*")) - before if root not in p.parents} == set()


def test_zip_archives_are_extracted_and_traversal_refused(tmp_path):
    (tmp_path / "a.zip").write_bytes(zip_bytes({"d/f.txt": b"zipped\n", "top": b"t"}))
    root = tmp_path / "root"
    root.mkdir()
    fetcher.extract(tmp_path / "a.zip", root, "zip")
    assert (root / "d" / "f.txt").read_text() == "zipped\n"
    (tmp_path / "evil.zip").write_bytes(zip_bytes({"../../evil": b"x"}))
    with pytest.raises(FetchError, match="leads outside"):
        fetcher.extract(tmp_path / "evil.zip", root, "zip")
    assert not (tmp_path.parent / "evil").exists()


def test_extraction_is_bounded(tmp_path):
    (tmp_path / "bomb.tgz").write_bytes(tar_bytes([("big", b"\0" * 100_000, {})]))
    with pytest.raises(FetchError, match="expands beyond"):
        fetcher.extract(tmp_path / "bomb.tgz", tmp_path, "tar", max_bytes=10_000)
    (tmp_path / "many.tgz").write_bytes(tar_bytes([(f"f{i}", b"", {}) for i in range(20)]))
    with pytest.raises(FetchError, match="too many members"):
        fetcher.extract(tmp_path / "many.tgz", tmp_path, "tar", max_members=10)


def test_a_corrupt_archive_is_a_clear_error(tmp_path):
    (tmp_path / "bad.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(FetchError, match="cannot extract 'bad.tar.gz'"):
        fetcher.extract(tmp_path / "bad.tar.gz", tmp_path, "tar")


# ---- fetching, from a real HTTP server on loopback -----------------------------------------------------------------


class Server:
    """Serves `files` (path -> bytes) on 127.0.0.1; `hits` counts requests per path."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.hits = files, Counter()
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        if request.path not in self.files:
            return web.Response(status=404, text="no such file")
        return web.Response(body=self.files[request.path])

    async def __aenter__(self) -> "Server":
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def server():
    async with Server({"/app.tar.gz": GOOD_TAR, "/tool.sh": b"#!/bin/sh\necho tool\n",
                       "/evil.tgz": tar_bytes([("../../escape", b"x", {})]), "/data": b"0123456789"}) as s:
        yield s


def _fetcher(tmp_path: Path, **kw) -> Fetcher:
    return Fetcher(FetcherConfig(cache_dir=tmp_path / "cache", **kw))


async def test_fetch_extracts_chmods_and_names(tmp_path, server):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    await _fetcher(tmp_path).fetch_all([
        FetchURI(f"{server.base}/app.tar.gz"),
        FetchURI(f"{server.base}/tool.sh", executable=True),
        FetchURI(f"{server.base}/data", output_file="conf/data.bin")], sandbox)
    assert (sandbox / "app.tar.gz").read_bytes() == GOOD_TAR  # kept, as Mesos keeps it
    assert (sandbox / "app" / "hello.txt").read_text() == "hello from the archive\n"
    assert stat.S_IMODE((sandbox / "tool.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((sandbox / "conf" / "data.bin").stat().st_mode) == 0o644
    assert (sandbox / "conf" / "data.bin").read_bytes() == b"0123456789"
    assert [p.name for p in sandbox.iterdir() if p.name.startswith(".drover-fetch")] == []


async def test_failures_name_the_uri_and_the_error(tmp_path, server):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    f = _fetcher(tmp_path)
    with pytest.raises(FetchError, match=rf"Failed to fetch '{server.base}/missing': HTTP 404 Not Found"):
        await f.fetch_all([FetchURI(f"{server.base}/missing")], sandbox)
    with pytest.raises(FetchError, match=r"Failed to fetch '.*/evil.tgz': cannot extract 'evil.tgz': .*leads outside"):
        await f.fetch_all([FetchURI(f"{server.base}/evil.tgz")], sandbox)
    with pytest.raises(FetchError, match="more than the 5 bytes allowed"):
        await _fetcher(tmp_path, max_bytes=5).fetch_all([FetchURI(f"{server.base}/data")], sandbox)
    with pytest.raises(FetchError, match="Failed to fetch 'http://127.0.0.1:1/x': ClientConnectorError"):
        await f.fetch_all([FetchURI("http://127.0.0.1:1/x")], sandbox)
    # a symlink left in a reused sandbox is never written through
    (sandbox / "conf").symlink_to("/etc")
    with pytest.raises(FetchError, match="'conf' in the sandbox is a symbolic link"):
        await f.fetch_all([FetchURI(f"{server.base}/data", output_file="conf/passwd")], sandbox)
    (sandbox / "data").symlink_to(tmp_path / "outside")
    await f.fetch_all([FetchURI(f"{server.base}/data")], sandbox)
    assert not (tmp_path / "outside").exists() and (sandbox / "data").read_bytes() == b"0123456789"


async def test_cached_uris_are_served_once_and_evicted_lru(tmp_path, server):
    f = _fetcher(tmp_path, cache_size=15)
    for i in range(3):
        sandbox = tmp_path / f"s{i}"
        sandbox.mkdir()
        await f.fetch_all([FetchURI(f"{server.base}/data", cache=True)], sandbox)
        assert (sandbox / "data").read_bytes() == b"0123456789"
    assert server.hits["/data"] == 1
    # not cached: fetched every time
    await f.fetch_all([FetchURI(f"{server.base}/data", output_file="again")], tmp_path / "s0")
    assert server.hits["/data"] == 2
    # another cached URI that does not fit beside it evicts it (15 bytes: 10 + 10 do not fit)
    server.files["/data2"] = b"abcdefghij"
    await f.fetch_all([FetchURI(f"{server.base}/data2", cache=True)], tmp_path / "s0")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [fetcher.cache_key(f"{server.base}/data2")]
    # larger than the whole cache: fetched without it
    await f.fetch_all([FetchURI(f"{server.base}/app.tar.gz", cache=True)], tmp_path / "s1")
    assert (tmp_path / "s1" / "app" / "hello.txt").exists()
    assert len(list((tmp_path / "cache").iterdir())) == 1


async def test_concurrent_fetches_of_a_cached_uri_download_it_once(tmp_path, server):
    f = _fetcher(tmp_path)
    sandboxes = [tmp_path / f"s{i}" for i in range(4)]
    for s in sandboxes:
        s.mkdir()
    await asyncio.gather(*(f.fetch_all([FetchURI(f"{server.base}/app.tar.gz", cache=True)], s) for s in sandboxes))
    assert server.hits["/app.tar.gz"] == 1
    assert all((s / "app" / "hello.txt").exists() for s in sandboxes)


async def test_local_files_only_from_allowed_dirs(tmp_path):
    allowed = tmp_path / "artifacts"
    allowed.mkdir()
    (allowed / "a.txt").write_text("local\n")
    (allowed / "sneaky").symlink_to("/etc/passwd")
    work = tmp_path / "work"
    (work / "meta").mkdir(parents=True)
    (work / "meta" / "agent.json").write_text("{}")
    (allowed / "into-work").symlink_to(work / "meta" / "agent.json")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    with pytest.raises(FetchError, match="local files are not fetched on this agent"):
        await _fetcher(tmp_path).fetch_all([FetchURI(str(allowed / "a.txt"))], sandbox)
    f = _fetcher(tmp_path, allowed_dirs=(allowed, work), denied_dirs=(work,))
    await f.fetch_all([FetchURI(f"file://{allowed}/a.txt")], sandbox)
    assert (sandbox / "a.txt").read_text() == "local\n"
    for path in (allowed / "sneaky", Path("/etc/passwd"), allowed / "into-work", work / "meta" / "agent.json",
                 Path("/dev/watchdog")):  # looked at through O_PATH, never opened
        with pytest.raises(FetchError, match="not inside a directory this agent fetches local files from"):
            await f.fetch_all([FetchURI(str(path))], sandbox)
    # A missing file and one outside the allowed directories get the same answer: a framework cannot probe which
    # paths exist on the agent.
    for path in (allowed / "nope", Path("/nonexistent/x")):
        with pytest.raises(FetchError, match=r"not inside a directory .* or does not exist"):
            await f.fetch_all([FetchURI(str(path))], sandbox)
    (allowed / "sub").mkdir()
    with pytest.raises(FetchError, match="not a regular file"):
        await f.fetch_all([FetchURI(str(allowed / "sub"))], sandbox)
    with pytest.raises(FetchError, match="not inside a directory"):  # the allowed directory itself
        await f.fetch_all([FetchURI(str(allowed))], sandbox)



async def test_a_cached_local_file_is_served_only_while_it_may_still_be_fetched(tmp_path):
    allowed = tmp_path / "artifacts"
    allowed.mkdir()
    (allowed / "a.txt").write_text("local\n")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    uri = FetchURI(str(allowed / "a.txt"), cache=True)
    await _fetcher(tmp_path, allowed_dirs=(allowed,)).fetch_all([uri], sandbox)
    assert (tmp_path / "cache" / fetcher.cache_key(uri.value)).is_file()
    # the same cache, an agent whose operator no longer allows the directory: refused, cache or not
    with pytest.raises(FetchError, match="local files are not fetched on this agent"):
        await _fetcher(tmp_path).fetch_all([uri], sandbox)
    with pytest.raises(FetchError, match="not inside a directory"):
        await _fetcher(tmp_path, allowed_dirs=(tmp_path / "elsewhere",)).fetch_all([uri], sandbox)
    (allowed / "a.txt").unlink()  # gone: not served from the cache either
    with pytest.raises(FetchError, match="or does not exist"):
        await _fetcher(tmp_path, allowed_dirs=(allowed,)).fetch_all([uri], sandbox)


async def test_a_fetch_stops_when_its_task_is_killed_or_its_time_is_up(tmp_path):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    async with SlowServer({}) as server:  # never answers /slow.tgz until released
        killed = False
        fetch = asyncio.create_task(_fetcher(tmp_path).fetch_all([FetchURI(f"{server.base}/slow.tgz")], sandbox,
                                                                  cancelled=lambda: killed))
        await asyncio.wait_for(server.waiting.wait(), 30)
        killed = True
        with pytest.raises(fetcher.Cancelled):
            await asyncio.wait_for(fetch, 30)

        with pytest.raises(FetchError, match=r"Failed to fetch '.*/slow.tgz': not fetched within 0.5 s"):
            await _fetcher(tmp_path, timeout=0.5).fetch_all([FetchURI(f"{server.base}/slow.tgz")], sandbox)
        server.release.set()
    with pytest.raises(fetcher.Cancelled):  # killed before it started: nothing is fetched
        await _fetcher(tmp_path).fetch_all([FetchURI("http://127.0.0.1:1/x")], sandbox, cancelled=lambda: True)


def test_an_extraction_has_a_deadline(tmp_path):
    (tmp_path / "a.tgz").write_bytes(GOOD_TAR)
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(FetchError, match="cannot extract 'a.tgz': not fetched within 0 s"):
        fetcher.extract(tmp_path / "a.tgz", root, "tar", stop=fetcher._Stop(seconds=0.0))
    with pytest.raises(fetcher.Cancelled):
        fetcher.extract(tmp_path / "a.tgz", root, "tar", stop=fetcher._Stop(cancelled=lambda: True))
    fetcher.extract(tmp_path / "a.tgz", root, "tar", stop=fetcher._Stop(seconds=60.0))
    assert (root / "app" / "hello.txt").exists()

# ---- tasks of a real agent -----------------------------------------------------------------------------------------


async def test_a_task_uses_what_was_fetched_as_its_own_user(live_agent, server):  # noqa: F811
    a: Agent = live_agent
    fid, tid = f"F-{uuid.uuid4().hex[:8]}", "fetch-1"
    uris = [{"value": f"{server.base}/app.tar.gz"}, {"value": f"{server.base}/tool.sh", "executable": True}]
    await a._on_message("m", launch_msg(fid, tid, "cat app/hello.txt && ./tool.sh && touch app/mine",
                                        info={"name": "fw", "user": "nobody"}, command={
                                            "value": "cat app/hello.txt && ./tool.sh && touch app/mine",
                                            "uris": uris}))
    got = await wait_for_state(a, fid, tid, "TASK_FINISHED")
    assert got[-1] == "TASK_FINISHED", got
    sandbox = a.config.work_dir / "sandboxes" / fid / tid
    assert (sandbox / "stdout").read_text() == "hello from the archive\ntool\n"
    assert (sandbox / "app" / "hello.txt").stat().st_uid == 65534  # the task's user owns what was fetched
    assert (sandbox / "app" / "mine").exists()


async def test_failed_fetches_fail_the_task_with_the_uri_and_the_error(live_agent, server):  # noqa: F811
    a: Agent = live_agent
    fid = f"F-{uuid.uuid4().hex[:8]}"
    for tid, uri, says in (("t404", f"{server.base}/missing", "HTTP 404"),
                           ("tevil", f"{server.base}/evil.tgz", "leads outside")):
        await a._on_message("m", launch_msg(fid, tid, command={"value": "true", "uris": [{"value": uri}]}))
        await wait_for_state(a, fid, tid, "TASK_FAILED")
        st = a.tasks[(fid, tid)].unacked[-1]
        assert st.reason == "REASON_CONTAINER_LAUNCH_FAILED"
        assert st.source == "SOURCE_AGENT"
        assert st.message is not None and f"Failed to fetch '{uri}'" in st.message and says in st.message
        assert await a.containerizer.list({"drover.task": tid, "drover.framework": fid}) == []
    assert not (a.config.work_dir.parent / "escape").exists()


async def test_the_cache_survives_an_agent_restart(tmp_path, podman_socket, server):
    work = tmp_path / "work"
    work.mkdir()

    def agent() -> Agent:
        cfg = AgentConfig(masters=["127.0.0.1:9"], http="127.0.0.1:0", work_dir=work,
                          resources=Resources.parse("cpus:4;mem:4096"), podman_socket=podman_socket,
                          start_podman_service=False)
        return Agent(cfg)

    for i in range(2):  # two agent processes' lifetimes over the same work dir
        sandbox = work / "sandboxes" / "F" / f"t{i}"
        sandbox.mkdir(parents=True)
        await agent().fetcher.fetch_all([FetchURI(f"{server.base}/app.tar.gz", cache=True)], sandbox)
        assert (sandbox / "app" / "hello.txt").exists()
        # a partial download an agent killed in the middle of one left behind
        (work / "fetch-cache" / f"{fetcher.cache_key('http://x/y')}.tmp-{uuid.uuid4().hex}").write_bytes(b"part")
    assert server.hits["/app.tar.gz"] == 1
    # the second agent removed the first one's leftover; the last one is for the next agent to remove
    assert len([p for p in (work / "fetch-cache").iterdir() if ".tmp-" in p.name]) == 1


# ---- through a cluster --------------------------------------------------------------------------------------------


async def test_a_framework_task_fetches_its_artifact(tmp_path, server):
    from tests.cluster import running_cluster
    from tests.test_images import final_status
    from tests.v1client import Scheduler

    with running_cluster(tmp_path / "cluster") as c:
        async with aiohttp.ClientSession() as http:
            sched = await Scheduler(http, c.leader_endpoint()).subscribe()
            try:
                offer = (await sched.offers())[0]
                tid = f"fetch-{uuid.uuid4().hex[:8]}"
                task = {"name": tid, "task_id": {"value": tid}, "agent_id": offer["agent_id"],
                        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                                      {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
                        "command": {"value": "cat app/hello.txt",
                                    "uris": [{"value": f"{server.base}/app.tar.gz", "cache": True}]}}
                r = await sched.call("ACCEPT", {"offer_ids": [offer["id"]], "operations": [
                    {"type": "LAUNCH", "launch": {"task_infos": [task]}}]})
                assert r.status == 202, r
                _, st = await final_status(sched, tid)
                assert st["state"] == "TASK_FINISHED", st
            finally:
                await sched.close()
        stdout = list((tmp_path / "cluster").rglob(f"sandboxes/*/{tid}/stdout"))
        assert [p.read_text() for p in stdout] == ["hello from the archive\n"]


class SlowServer(Server):
    """Holds every request for `/slow` until `release` is set."""

    def __init__(self, files: dict[str, bytes]):
        super().__init__(files)
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/slow.tgz":
            self.hits[request.path] += 1
            self.waiting.set()
            await self.release.wait()
            return web.Response(body=GOOD_TAR)
        return await super().handle(request)


async def _started_agent(work: Path, podman_socket: Path, agent_id: str) -> Agent:
    a = Agent(AgentConfig(masters=["127.0.0.1:9"], http="127.0.0.1:0", work_dir=work,
                          resources=Resources.parse("cpus:4;mem:4096"), podman_socket=podman_socket,
                          start_podman_service=False))
    a.cp.agent_id = agent_id
    await a.containerizer.start()
    return a


async def _dispose(a: Agent) -> None:
    pending = list(a._bg) + list(a._watchers.values()) + list(a._stopping.values())
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await a.containerizer.remove_all({"drover.agent": a.cp.agent_id})
    await a.containerizer.stop()


async def test_a_launch_cut_short_while_fetching_is_resumed_after_an_agent_restart(tmp_path, podman_socket):
    work = tmp_path / "work"
    work.mkdir()
    agent_id = f"test-{uuid.uuid4().hex[:10]}"
    async with SlowServer({}) as server:
        first = await _started_agent(work, podman_socket, agent_id)
        try:
            await first._on_message("m", launch_msg("F", "t", agent_id=agent_id, command={
                "value": "cat app/hello.txt", "uris": [{"value": f"{server.base}/slow.tgz"}]}))
            await asyncio.wait_for(server.waiting.wait(), 30)
        finally:
            await _dispose(first)  # the agent is gone in the middle of the fetch
        second = await _started_agent(work, podman_socket, agent_id)
        try:
            assert second.tasks[("F", "t")].container_id is None  # from the checkpoint
            server.release.set()
            await second._recover()
            got = await wait_for_state(second, "F", "t", "TASK_FINISHED")
            assert got[-1] == "TASK_FINISHED", got
            assert (work / "sandboxes" / "F" / "t" / "stdout").read_text() == "hello from the archive\n"
            assert server.hits["/slow.tgz"] == 2
        finally:
            await _dispose(second)


async def test_a_task_killed_while_fetching_never_starts(live_agent):  # noqa: F811
    a: Agent = live_agent
    async with SlowServer({}) as server:
        await a._on_message("m", launch_msg("F", "k", agent_id=a.cp.agent_id, command={
            "value": "true", "uris": [{"value": f"{server.base}/slow.tgz"}]}))
        await asyncio.wait_for(server.waiting.wait(), 30)
        await a._on_message("m", {"type": "KILL", "kill": {"framework_id": "F", "task_id": "k"}})
        # The KILL stops the fetch itself: the server never answers before the task is over.
        got = await wait_for_state(a, "F", "k", "TASK_KILLED")
        server.release.set()
        assert got == ["TASK_STARTING", "TASK_KILLED"], got
        assert a.tasks[("F", "k")].unacked[-1].reason == "REASON_TASK_KILLED_DURING_LAUNCH"
        assert await a.containerizer.list({"drover.task": "k", "drover.agent": a.cp.agent_id}) == []


def test_an_archive_member_too_deep_or_too_long_is_refused_before_any_directory_is_checked():
    from agent.fetcher import MAX_MEMBER_DEPTH, MAX_MEMBER_NAME, member_parts

    assert len(member_parts("/".join(["d"] * MAX_MEMBER_DEPTH))) == MAX_MEMBER_DEPTH
    with pytest.raises(FetchError, match="directories deep"):
        member_parts("/".join(["d"] * (MAX_MEMBER_DEPTH + 1)))
    with pytest.raises(FetchError, match="longer than"):
        member_parts("x" * (MAX_MEMBER_NAME + 1))


async def test_a_cached_download_cut_short_leaves_nothing_in_the_cache(tmp_path):
    done = asyncio.Event()

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"x" * 65536)
        await done.wait()  # then nothing more, until the test is over
        return resp

    app = web.Application()
    app.router.add_get("/trickle", trickle)
    runner, port = await serve_app(app)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    cache = tmp_path / "cache"
    try:
        killed = False
        fetch = asyncio.create_task(_fetcher(tmp_path).fetch_all(
            [FetchURI(f"http://127.0.0.1:{port}/trickle", cache=True)], sandbox, cancelled=lambda: killed))
        for _ in range(300):  # until the partial download is in the cache
            if cache.is_dir() and any(p.stat().st_size > 0 for p in cache.iterdir()):
                break
            await asyncio.sleep(0.05)
        assert any(".tmp-" in p.name for p in cache.iterdir())
        killed = True
        with pytest.raises(fetcher.Cancelled):
            await asyncio.wait_for(fetch, 30)
        assert list(cache.iterdir()) == []
    finally:
        done.set()
        await runner.cleanup()
