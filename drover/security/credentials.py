"""Credentials in Mesos's JSON format, and HTTP Basic authentication against them. Pure (files.py reads them).

    {"credentials": [{"principal": "ops", "secret": "..."}, ...]}

(Mesos 1.11 dropped the older one-pair-per-line text format; so do we.) A principal and a secret are
bounded, printable strings; a principal has no ':' (HTTP Basic splits on the first one). Secrets never
appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field

import msgspec

MAX_PRINCIPAL = 255
MAX_SECRET = 4096
MAX_CREDENTIALS = 10_000


class CredentialsError(ValueError):
    """A credentials file or entry that cannot be used (the message never holds a secret)."""


class Entry(msgspec.Struct, forbid_unknown_fields=True):
    principal: str
    secret: str


class CredentialsFile(msgspec.Struct, forbid_unknown_fields=True):
    credentials: list[Entry]


def principal_problem(principal: str) -> str | None:
    if not principal:
        return "a principal must not be empty"
    if len(principal) > MAX_PRINCIPAL:
        return f"a principal is at most {MAX_PRINCIPAL} characters"
    if ":" in principal:
        return "a principal must not contain ':' (HTTP Basic splits on it)"
    if not principal.isprintable() or principal != principal.strip():
        return "a principal must be printable, without surrounding whitespace"
    return None


def _secret_problem(secret: str) -> str | None:
    if not secret:
        return "a secret must not be empty"
    if len(secret) > MAX_SECRET:
        return f"a secret is at most {MAX_SECRET} characters"
    if not secret.isprintable():
        return "a secret must be printable"
    return None


@dataclass(frozen=True)
class Credential:
    principal: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if (why := principal_problem(self.principal)) is not None:
            raise CredentialsError(why)
        if (why := _secret_problem(self.secret)) is not None:
            raise CredentialsError(f"principal {self.principal!r}: {why}")

    def basic_header(self) -> str:
        """The `Authorization` value a client sends."""
        token = base64.b64encode(f"{self.principal}:{self.secret}".encode()).decode("ascii")
        return f"Basic {token}"


@dataclass(frozen=True)
class Credentials:
    """The principals a server accepts. Lookups compare secrets in constant time."""

    entries: tuple[Credential, ...]
    _by_principal: dict[str, Credential] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.entries:
            raise CredentialsError("a credentials file must name at least one principal")
        if len(self.entries) > MAX_CREDENTIALS:
            raise CredentialsError(f"at most {MAX_CREDENTIALS} credentials")
        seen: set[str] = set()
        for c in self.entries:
            if c.principal in seen:
                raise CredentialsError(f"principal {c.principal!r} is listed twice")
            seen.add(c.principal)
        object.__setattr__(self, "_by_principal", {c.principal: c for c in self.entries})

    @property
    def principals(self) -> list[str]:
        return [c.principal for c in self.entries]

    def check(self, principal: str, secret: str) -> bool:
        # One lookup, then a constant-time comparison of the secret (against a stand-in for an unknown principal,
        # so that the time taken does not tell which secrets are close; principals themselves are not secret).
        entry = self._by_principal.get(principal)
        expected = entry.secret if entry is not None else "\x00" * max(1, len(secret))
        return hmac.compare_digest(expected.encode(), secret.encode()) and entry is not None

    def __repr__(self) -> str:
        return f"Credentials(principals={self.principals!r})"


def parse(data: bytes, where: str = "credentials") -> Credentials:
    try:
        f = msgspec.json.decode(data, type=CredentialsFile)
    except msgspec.ValidationError as e:
        raise CredentialsError(f"{where}: expected {{\"credentials\": [{{\"principal\": ..., \"secret\": ...}}]}}: "
                               f"{str(e).split(' - at ')[0]}") from None
    except msgspec.DecodeError:
        raise CredentialsError(f"{where}: not valid JSON") from None
    try:
        return Credentials(tuple(Credential(e.principal, e.secret) for e in f.credentials))
    except CredentialsError as e:
        raise CredentialsError(f"{where}: {e}") from None


# ---- HTTP Basic ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthFailure:
    """Why a request is not authenticated (a 401's reason; never contains what was sent)."""

    reason: str


def parse_basic(header: str | None) -> tuple[str, str] | AuthFailure:
    """`Authorization: Basic base64(principal:secret)` -> (principal, secret). Like Mesos: exactly the scheme
    `Basic`, one space, a token that decodes to text with a ':'."""
    if header is None:
        return AuthFailure("Missing 'Authorization' header")
    scheme, _, token = header.partition(" ")
    if scheme != "Basic":
        return AuthFailure("Expecting 'Authorization' header of the form 'Basic <credentials>'")
    if len(token) > 4 * (MAX_PRINCIPAL + MAX_SECRET + 1):
        return AuthFailure("'Authorization' header is too long")
    try:
        decoded = base64.b64decode(token.strip().encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return AuthFailure("Malformed 'Authorization' header: not base64 of UTF-8 text")
    principal, sep, secret = decoded.partition(":")
    if not sep:
        return AuthFailure("Malformed 'Authorization' header: expected 'principal:secret'")
    return principal, secret


def authenticate(credentials: Credentials, header: str | None) -> str | AuthFailure:
    """The authenticated principal, or why not."""
    parsed = parse_basic(header)
    if isinstance(parsed, AuthFailure):
        return parsed
    principal, secret = parsed
    if not credentials.check(principal, secret):
        return AuthFailure("Authentication failed")
    return principal
