"""Reading and writing the trust boundary's files: credentials (Mesos's format), a client's own credential, ACLs.
Files holding secrets must be private to their owner (refused otherwise, as ssh refuses a private key)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from drover.security.acls import ACLError, ACLs
from drover.security.acls import parse as parse_acls
from drover.security.credentials import Credential, Credentials, CredentialsError, Entry, parse

MAX_FILE_BYTES = 16 * 1024 * 1024


def read_private(path: Path) -> bytes:
    """A file holding secrets: refused if others may read or write it (as ssh refuses a private key)."""
    try:
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise CredentialsError(f"{path} is accessible to group or others (mode {st.st_mode & 0o777:o}); "
                                   f"chmod 600 it")
        if st.st_size > MAX_FILE_BYTES:
            raise CredentialsError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
        return path.read_bytes()
    except OSError as e:
        raise CredentialsError(f"cannot read {path}: {e.strerror}") from None


def load_credentials(path: Path | str) -> Credentials:
    path = Path(path)
    return parse(read_private(path), str(path))


def load_credential(path: Path | str) -> Credential:
    """A client's own credential: `{"principal": ..., "secret": ...}` (Mesos's agent/scheduler --credential), or a
    credentials file whose first entry is used."""
    path = Path(path)
    data = read_private(path)
    try:
        one = msgspec.json.decode(data, type=Entry)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return parse(data, str(path)).entries[0]
    try:
        return Credential(one.principal, one.secret)
    except CredentialsError as e:
        raise CredentialsError(f"{path}: {e}") from None


def write_credentials(path: Path | str, entries: list[Credential]) -> Path:
    """Write a credentials file (mode 0600 from the start)."""
    path = Path(path)
    body = msgspec.json.format(msgspec.json.encode(
        {"credentials": [{"principal": c.principal, "secret": c.secret} for c in entries]}))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(body + b"\n")
    return path


def load_acls(path: Path | str) -> ACLs:
    path = Path(path)
    try:
        if os.stat(path).st_size > MAX_FILE_BYTES:
            raise ACLError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
        return parse_acls(path.read_bytes(), str(path))
    except OSError as e:
        raise ACLError(f"cannot read {path}: {e.strerror}") from None
