"""The agent's persistent volume directories (agent/volumes.py): layout, sync with the master's checkpoint, crash
recovery, and that no symlink is ever followed."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from agent.volumes import VolumeError, VolumeStore, compatible_problem, volume_components
from eventstore.resources import DiskVolume, Persistence, Resource, Resources


def vol(pid: str, role: str = "db", size: float = 10.0) -> Resource:
    return Resource("disk", "SCALAR", scalar=size, role=role, persistence=Persistence(pid),
                    volume=DiskVolume("data"))


def test_layout_is_mesos_with_hierarchical_roles_flattened():
    assert volume_components("db", "pv1") == ("volumes", "roles", "db", "pv1")
    assert volume_components("eng/db", "pv1") == ("volumes", "roles", "eng db", "pv1")
    for role, pid in (("*", "pv1"), ("db", ".."), ("db", "a/b"), ("a b", "x"), ("db", "")):
        with pytest.raises(VolumeError):
            volume_components(role, pid)


def test_sync_creates_keeps_and_deletes_only_what_it_checkpointed(tmp_path: Path):
    store = VolumeStore(tmp_path)
    assert store.load() == Resources()
    store.sync(Resources([vol("pv1"), vol("pv2"), Resource("cpus", "SCALAR", scalar=1.0, role="db")]))
    p1, p2 = store.path("db", "pv1"), store.path("db", "pv2")
    assert p1.is_dir() and p2.is_dir()
    assert oct((tmp_path / "volumes").stat().st_mode & 0o777) == "0o700"
    (p1 / "data.txt").write_text("keep me")
    (p2 / "sub").mkdir()
    (p2 / "sub" / "x").write_text("x")
    # a directory the agent never checkpointed is never touched
    stray = tmp_path / "volumes" / "roles" / "db" / "not-ours"
    stray.mkdir()
    store.sync(Resources([vol("pv1")]))
    assert (p1 / "data.txt").read_text() == "keep me" and not p2.exists() and stray.exists()
    assert VolumeStore(tmp_path).load() == Resources([vol("pv1")])
    assert not store.target.exists()


def test_an_interrupted_sync_is_finished_at_the_next_start(tmp_path: Path):
    store = VolumeStore(tmp_path)
    store.sync(Resources([vol("pv1"), vol("pv2")]))
    # a crash after the target was written: pv2 is still there, the target says it goes
    store.target.write_bytes(msgspec.json.encode([vol("pv1"), vol("pv3")]))
    assert VolumeStore(tmp_path).load() == Resources([vol("pv1"), vol("pv3")])
    assert not store.path("db", "pv2").exists() and store.path("db", "pv3").is_dir()


def test_no_symlink_is_followed_creating_or_deleting(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x")
    work = tmp_path / "work"
    work.mkdir()
    store = VolumeStore(work)
    # a symlink where a parent directory of the volumes would be
    (work / "volumes").mkdir(mode=0o700)
    (work / "volumes" / "roles").symlink_to(outside)
    with pytest.raises(VolumeError):
        store.sync(Resources([vol("pv1")]))
    assert sorted(os.listdir(outside)) == ["precious"]
    (work / "volumes" / "roles").unlink()
    store.sync(Resources([vol("pv1")]))
    # a task replaces content of its volume with links out: deleting the volume removes the links only
    (store.path("db", "pv1") / "link").symlink_to(outside)
    (store.path("db", "pv1") / "file-link").symlink_to(outside / "precious")
    store.sync(Resources())
    assert not store.path("db", "pv1").exists() and (outside / "precious").read_text() == "x"


def test_checkpointed_resources_must_fit_the_flags():
    flags = Resources.parse("cpus:2;disk:100")
    assert compatible_problem(Resources([vol("pv1", size=60)]), flags) is None
    why = compatible_problem(Resources([vol("pv1", size=60), vol("pv2", size=60)]), flags)
    assert why is not None and why.startswith("Checkpointed resources") and "incompatible" in why
