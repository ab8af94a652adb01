"""The default task image: a busybox rootfs imported into the local podman store.

The default image needs no registry: it is built locally from busybox-static's /bin/busybox and never pulled
(other images a task names are pulled from their registry by the containerizer, docs/services.md).
`python -m agent.images` builds it (scripts/setup.sh) and prints its id.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

DEFAULT_IMAGE = "localhost/drover-busybox:latest"

REPO_ROOT = Path(__file__).resolve().parent.parent
BUSYBOX = Path("/bin/busybox")
SANDBOX_PATH = "/mnt/mesos/sandbox"
# Image config applied on import. PATH must be set: an imported rootfs has no ENV at all.
IMAGE_CHANGES = ['CMD ["/bin/sh"]', "ENV PATH=/bin"]
# Fixed mtime so the tarball (and so the imported layer digest) is the same on every build.
_MTIME = 1_700_000_000
_LOCK_PATH = Path(tempfile.gettempdir()) / "drover-image-build.lock"
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nnobody:x:65534:\n"


# ----------------------------------------------------------------------------------------------------- podman env
def containers_conf_path() -> Path:
    """The containers.conf podman must use: $CONTAINERS_CONF if set, else deploy/containers.conf.

    Mirrors scripts/env.sh for processes not started through it: default_ulimits above the caller's hard limits make
    every container fail with EPERM, so a copy with lowered limits is written to var/containers.conf when needed.
    """
    env = os.environ.get("CONTAINERS_CONF")
    if env:
        return Path(env)
    conf = REPO_ROOT / "deploy" / "containers.conf"
    text = conf.read_text()
    new = text
    for rlim, key, default in ((resource.RLIMIT_NOFILE, "nofile", 16384), (resource.RLIMIT_NPROC, "nproc", 32768)):
        hard = resource.getrlimit(rlim)[1]
        if hard != resource.RLIM_INFINITY and hard < default:
            new = new.replace(f"{key}={default}:{default}", f"{key}={hard}:{hard}")
    if new == text:
        return conf
    out = REPO_ROOT / "var" / "containers.conf"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"containers.conf.{os.getpid()}")
    tmp.write_text(new)
    os.replace(tmp, out)  # atomic: concurrent agents never read a half-written file
    return out


def podman_env() -> dict[str, str]:
    """Environment for podman subprocesses (CLI or `podman system service`)."""
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(containers_conf_path())
    return env


# ------------------------------------------------------------------------------------------------------- rootfs tar
def build_rootfs_tar(dest_tar: Path) -> Path:
    """Write a minimal busybox rootfs tarball (uncompressed) to dest_tar."""
    if not BUSYBOX.exists():
        raise RuntimeError(f"{BUSYBOX} not found: install busybox-static (apt-get install busybox-static)")
    applets = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True).stdout.split()
    dest_tar = Path(dest_tar)
    dest_tar.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_tar.with_name(dest_tar.name + f".{os.getpid()}.tmp")

    def info(name: str, type_: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.linkname, ti.mtime = type_, mode, size, linkname, _MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    def add_file(tf: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
        tf.addfile(info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))

    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777), ("mnt", 0o755),
                        ("mnt/mesos", 0o755), ("mnt/mesos/sandbox", 0o755), ("proc", 0o755), ("sys", 0o755),
                        ("dev", 0o755)):
            tf.addfile(info(d, tarfile.DIRTYPE, mode))
        add_file(tf, "bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in sorted(set(applets)):
            if applet != "busybox" and "/" not in applet:
                tf.addfile(info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, linkname="busybox"))
        add_file(tf, "etc/passwd", _PASSWD.encode(), 0o644)
        add_file(tf, "etc/group", _GROUP.encode(), 0o644)
    os.replace(tmp, dest_tar)
    return dest_tar


# ----------------------------------------------------------------------------------------------------------- import
@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Cross-process lock so two agents starting together do not import the image twice at once."""
    with open(_LOCK_PATH, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _import_via_api(client, tar_path: Path, name: str) -> str:
    # podman-py has no import(); images.load() wants a docker-archive, not a rootfs. The libpod endpoint
    # POST /libpod/images/import takes the raw tarball plus `changes`/`reference` and works on podman 4.3.1.
    with open(tar_path, "rb") as f:
        resp = client.api.post(
            "/images/import",
            params={"reference": name, "changes": IMAGE_CHANGES},
            data=f,
            headers={"Content-Type": "application/x-tar"},
            timeout=120,
        )
    resp.raise_for_status()
    return client.images.get(name).id


def _import_via_cli(tar_path: Path, name: str) -> str:
    podman = shutil.which("podman") or "podman"
    cmd = [podman, "import", "--quiet"]
    for change in IMAGE_CHANGES:
        cmd += ["--change", change]
    cmd += [str(tar_path), name]
    p = subprocess.run(cmd, env=podman_env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"podman import failed ({p.returncode}): {p.stderr.strip()}")
    return _cli_image_id(name) or p.stdout.strip()


def _cli_image_id(name: str) -> str | None:
    podman = shutil.which("podman") or "podman"
    p = subprocess.run([podman, "image", "inspect", "--format", "{{.Id}}", name], env=podman_env(),
                       capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else None


def ensure_image(client_or_socket=None, name: str = DEFAULT_IMAGE) -> str:
    """Make sure the default busybox image exists in the local store; return its id.

    client_or_socket: a podman.PodmanClient, a socket path (str/Path, "unix://" optional), or None to use the podman
    CLI directly (no service needed; same global store). Only DEFAULT_IMAGE-style busybox images can be built.
    """
    client, own_client = None, False
    if client_or_socket is not None and not isinstance(client_or_socket, (str, os.PathLike)):
        client = client_or_socket
    elif client_or_socket is not None:
        from podman import PodmanClient

        sock = str(client_or_socket)
        client = PodmanClient(base_url=sock if "://" in sock else f"unix://{sock}", timeout=120)
        own_client = True
    try:

        def existing() -> str | None:
            if client is None:
                return _cli_image_id(name)
            return client.images.get(name).id if client.images.exists(name) else None

        if image_id := existing():
            return image_id
        with _build_lock():
            if image_id := existing():  # another process built it while we waited
                return image_id
            with tempfile.TemporaryDirectory(prefix="drover-rootfs-") as tmp:
                tar_path = build_rootfs_tar(Path(tmp) / "rootfs.tar")
                if client is not None:
                    return _import_via_api(client, tar_path, name)
                return _import_via_cli(tar_path, name)
    finally:
        if own_client:
            client.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Build the Drover default task image (busybox) if missing.")
    ap.add_argument("--name", default=DEFAULT_IMAGE)
    ap.add_argument("--socket", help="podman service socket; default: use the podman CLI")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    image_id = ensure_image(args.socket, args.name)
    print(json.dumps({"name": args.name, "id": image_id}) if args.json else image_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
