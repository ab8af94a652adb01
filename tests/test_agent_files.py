"""The pure parts of the agent's /files endpoints (agent/sandbox_files.py) and session commands, and the path
confinement on a real directory tree (no agent process)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import sandbox_files as sf
from agent.http_api import command_argv
from agent.podman_api import Demux, PodmanAPIError


def test_read_window_follows_mesos():
    assert sf.read_window(100, -1, -1) is None  # offset -1: only the size
    assert sf.read_window(100, 0, -1) == (0, 100)
    assert sf.read_window(100, 10, 5) == (10, 5)
    assert sf.read_window(100, 90, 50) == (90, 10)
    assert sf.read_window(100, 100, 5) == (100, 0)
    assert sf.read_window(100, 500, 5) == (100, 0)
    assert sf.read_window(10 * sf.MAX_READ, 0, -1) == (0, sf.MAX_READ)  # bounded
    assert sf.read_window(10 * sf.MAX_READ, 0, 10 ** 18) == (0, sf.MAX_READ)
    for offset, length in ((-2, 1), (0, -2)):
        with pytest.raises(sf.FilesError) as e:
            sf.read_window(100, offset, length)
        assert e.value.status == 400


@pytest.mark.parametrize("bad", ["x", "1.5", "--1", "1-", "9" * 40, " ", "0x10", "-"])
def test_parse_int_refuses_non_integers(bad):
    with pytest.raises(sf.FilesError) as e:
        sf.parse_int(bad, "offset", -1)
    assert e.value.status == 400


def test_parse_int():
    assert sf.parse_int(None, "offset", -1) == -1
    assert sf.parse_int("", "offset", 7) == 7
    assert sf.parse_int("-1", "offset", 0) == -1
    assert sf.parse_int("42", "length", 0) == 42


def test_utf8_prefix_keeps_characters_whole():
    text = "héllo €".encode()
    assert sf.utf8_prefix(text) == text
    assert sf.utf8_prefix(text[:-1]) == "héllo ".encode()
    assert sf.utf8_prefix(text[:-2]) == "héllo ".encode()
    assert sf.utf8_prefix(b"ab\xff") == b"ab\xff"  # invalid, not incomplete: left to the decoder
    assert sf.utf8_prefix(b"") == b""


def test_sandbox_of():
    root = Path("/w/sandboxes")
    assert sf.sandbox_of(root, Path("/w/sandboxes/f1/t1")) == ("f1", "t1")
    assert sf.sandbox_of(root, Path("/w/sandboxes/f1/t1/a/b")) == ("f1", "t1")
    assert sf.sandbox_of(root, Path("/w/sandboxes/f1")) is None
    assert sf.sandbox_of(root, Path("/w/sandboxes")) is None
    assert sf.sandbox_of(root, Path("/w/meta/agent.json")) is None
    assert sf.sandbox_of(root, Path("/etc/passwd")) is None


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "sandboxes"
    box = root / "f1" / "t1"
    box.mkdir(parents=True)
    (box / "stdout").write_text("0123456789")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "agent.json").write_text("secret")
    os.symlink(tmp_path / "meta" / "agent.json", box / "escape")
    os.symlink("../../../meta", box / "escape-dir")
    os.symlink("stdout", box / "alias")
    return root.resolve()


def test_resolve_confines_paths_to_sandboxes(tree):
    box = tree / "f1" / "t1"
    assert sf.resolve(tree, str(box / "stdout")).task_id == "t1"
    assert sf.resolve(tree, str(box / "alias")).path == box / "stdout"  # a symlink inside stays inside
    for bad in (str(box / "escape"), str(box / "escape-dir" / "agent.json"), str(box / ".." / ".." / ".." / "meta"),
                "/etc/passwd", str(tree), str(tree / "f1"), str(box / "nope")):
        with pytest.raises(sf.FilesError) as e:
            sf.resolve(tree, bad)
        assert e.value.status == 404, bad
    for bad in ("", None, "stdout", "relative/path", "/a\x00b", "/" + "a" * 5000):
        with pytest.raises(sf.FilesError) as e:
            sf.resolve(tree, bad)
        assert e.value.status == 400, bad


def test_read_and_browse(tree):
    box = tree / "f1" / "t1"
    t = sf.resolve(tree, str(box / "stdout"))
    assert sf.read(tree, t, -1, -1) == {"data": "", "offset": 10}
    assert sf.read(tree, t, 2, 3) == {"data": "234", "offset": 2, "next_offset": 5}
    assert sf.read(tree, t, 8, 100) == {"data": "89", "offset": 8, "next_offset": 10}
    with pytest.raises(sf.FilesError) as e:
        sf.read(tree, sf.resolve(tree, str(box)), 0, 1)
    assert e.value.status == 400
    names = [d["path"].rsplit("/", 1)[1] for d in sf.browse(tree, sf.resolve(tree, str(box)))]
    assert names == ["alias", "escape", "escape-dir", "stdout"]  # listed, never followed
    assert sf.browse(tree, t)[0]["size"] == 10


def test_demux_frames():
    d = Demux()
    data = b"\x01\x00\x00\x00\x00\x00\x00\x03abc" + b"\x02\x00\x00\x00\x00\x00\x00\x02de"
    assert d.feed(data[:5]) == []
    assert d.feed(data[5:13]) == [(1, b"abc")]
    assert d.feed(data[13:]) == [(2, b"de")]
    with pytest.raises(PodmanAPIError):
        Demux().feed(b"\x07\x00\x00\x00\x00\x00\x00\x01x")


def test_command_argv():
    assert command_argv({"shell": True, "value": "echo hi"}) == ["/bin/sh", "-c", "echo hi"]
    assert command_argv({"shell": False, "value": "ls", "arguments": ["ls", "-l"]}) == ["ls", "-l"]
    for bad in (None, {}, {"value": ""}, {"value": 3}, {"value": "x", "shell": "yes"},
                {"value": "x", "arguments": "ls"}, {"value": "x", "arguments": [1]},
                {"value": "x" * 70_000}, {"value": "a\x00b"}):
        assert isinstance(command_argv(bad), str), bad


def test_sessions_are_judged_by_drovers_and_mesoss_action_names():
    from agent.http_api import session_actions
    from drover.security import acls as A

    deny = '[{"principals": {"values": ["m"]}, "users": {"values": ["nobody"]}}]'  # m: as nobody only
    assert session_actions(A.OPEN) == ("launch_nested_container_sessions",)
    mesos = A.parse('{"permissive": false, "launch_nested_container_sessions_under_parent_with_user": ' + deny + '}')
    assert session_actions(mesos) == ("launch_nested_container_sessions_under_parent_with_user",)
    both = A.parse('{"launch_nested_container_sessions": ' + deny + ', "launch_nested_container_sessions_as_user": '
                   + deny + '}')
    assert session_actions(both) == ("launch_nested_container_sessions", "launch_nested_container_sessions_as_user")
    # `m` may not run sessions as root: a rule with Mesos's name alone is enough to refuse it
    assert not all(A.authorized(mesos, a, "m", "root") for a in session_actions(mesos))
    assert all(A.authorized(mesos, a, "m", "nobody") for a in session_actions(mesos))


def test_a_download_names_any_file_safely():
    from agent.http_api import content_disposition

    assert content_disposition("stdout") == "attachment; filename=\"stdout\"; filename*=UTF-8''stdout"
    for name in ("a\nb", 'q"uote', "h\u00e9llo", "\r\n\tX-Evil: 1", "\\"):
        header = content_disposition(name)
        assert header.isascii() and "\n" not in header and "\r" not in header, name
