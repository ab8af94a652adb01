"""TLS for Drover's HTTP ports (docs/tls.md): the server and client contexts, and a throw-away PKI for tests and
`drover local --tls`.

Each function checks the files it is given before it hands them to `ssl`, and refuses them with a ValueError of
one line naming the file and what is wrong with it (the `drover` command turns it into `error: ...`, exit 2). The
Raft port is not TLS: pysyncobj's password authenticates and encrypts it (eventstore/raftlog.py).

Server contexts: TLS 1.2 or 1.3 only, Python's default cipher list (forward secrecy and AEAD only at OpenSSL
security level 2), no compression, no renegotiation. Client contexts: the chain must verify against the CA file
(or the system's CAs when none is given) and the certificate must name the host the client connected to (a DNS
name, or an IP address SAN for an IP).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import uuid
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MIN_VERSION = ssl.TLSVersion.TLSv1_2


class PKIFiles(NamedTuple):
    """What generate_test_pki writes: the CA certificate clients verify against, the server's certificate and
    its private key."""
    ca: Path
    cert: Path
    key: Path


# ---- reading and checking PEM files ------------------------------------------------------------------------------
def _read(path: Path | str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read the {what} {path}: {e.strerror}") from None


def _certificates(path: Path | str, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ValueError(f"the {what} {path} holds no PEM certificate")
    return certs


def _private_key(path: Path | str) -> PrivateKeyTypes:
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ValueError(f"cannot read the key file {path}: {e.strerror}") from None
    if mode & 0o007:
        raise ValueError(f"the key file {path} is accessible to other users (mode {mode & 0o777:o}); chmod 600 it")
    data = _read(path, "key file")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        raise ValueError(f"the key file {path} is encrypted; give the key unencrypted, readable only by the "
                         f"service's user") from None
    except ValueError:
        raise ValueError(f"the key file {path} holds no PEM private key") from None
    except UnsupportedAlgorithm as e:
        raise ValueError(f"the key file {path} holds a key of an unsupported type: {e}") from None


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _no_password() -> bytes:
    # Never reached after _private_key (it refuses encrypted keys): without a callback OpenSSL would prompt on the
    # terminal and the service would hang.
    raise ValueError("the key file is encrypted")


# ---- contexts -------------------------------------------------------------------------------------------------------
def server_context(cert_file: Path | str | None, key_file: Path | str | None) -> ssl.SSLContext:
    """A context for an HTTPS site serving the certificate chain in `cert_file` (the server's certificate first,
    then any intermediates) with the private key in `key_file` (PEM, unencrypted, not accessible to other users).
    ValueError (one line) when a file is missing, unreadable, not PEM, encrypted, too open, when the key is not the
    certificate's, or when the certificate has expired."""
    if cert_file is None or key_file is None:
        raise ValueError("TLS needs both a certificate file and its key file")
    leaf = _certificates(cert_file, "certificate file")[0]
    key = _private_key(key_file)
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise ValueError(f"the key in {key_file} is not the key of the certificate in {cert_file}")
    now = datetime.datetime.now(datetime.timezone.utc)
    if leaf.not_valid_after_utc < now:
        raise ValueError(f"the certificate in {cert_file} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file), password=_no_password)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise ValueError(f"cannot use the certificate {cert_file} with the key {key_file}: {e}") from None
    return ctx


def client_context(ca_file: Path | str | None = None) -> ssl.SSLContext:
    """A context for HTTPS clients of Drover's ports: the server's chain must verify against the CA
    certificate(s) in `ca_file` (PEM; None: the system's CAs) and its certificate must name the host connected
    to. A certificate in `ca_file` is trusted as is, even an intermediate or the server's own (OpenSSL's
    partial-chain flag). ValueError (one line) when `ca_file` is missing, unreadable or holds no certificate."""
    if ca_file is None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        _certificates(ca_file, "CA file")
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
        except (ssl.SSLError, OSError) as e:
            raise ValueError(f"cannot use the CA file {ca_file}: {e}") from None
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.minimum_version = MIN_VERSION
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# ---- a test PKI ---------------------------------------------------------------------------------------------------
def _san(host: str) -> x509.GeneralName:
    host = host.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or not all(l and len(l) <= 63 and all(c.isascii() and (c.isalnum() or c in "-*") for c in l)
                           for l in labels):
        raise ValueError(f"not an IP address or a DNS name: {host!r}")
    return x509.DNSName(host)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (a reader sees the old file or the new one), with `mode` from the start."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def generate_test_pki(directory: Path | str, hosts: tuple[str, ...] | list[str] = ("127.0.0.1", "localhost"),
                      *, days: int = 365) -> PKIFiles:
    """A new CA and a server certificate it signs, for tests and `drover local --tls`: writes `ca.pem` (the CA
    certificate, what clients get as --tls-ca), `cert.pem` (the server certificate) and `key.pem` (its key, mode
    0600) into `directory` (created 0700 if missing), replacing what is there. The certificate names every one of
    `hosts` (IP address SANs for IPs, DNS SANs for names) and is valid from 5 minutes ago for `days` days. Keys
    are ECDSA P-256. The CA's key is not kept: this CA signs nothing else, ever."""
    names = [_san(h) for h in hosts]
    if not names:
        raise ValueError("a certificate needs at least one host")
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    # A name of its own: two test CAs never look alike, so a wrong CA fails as "unable to get local issuer".
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Drover"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"Drover test CA {uuid.uuid4().hex[:12]}")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    cn = hosts[0].strip()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Drover"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))

    files = PKIFiles(ca=directory / "ca.pem", cert=directory / "cert.pem", key=directory / "key.pem")
    _write(files.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()), 0o600)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.ca, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    return files
