"""drover.security.tls: the generated PKI verifies, a wrong CA or a name the certificate lacks is refused, plain
HTTP and old TLS get nowhere, and bad files are refused with one clear line (also by the `drover` command).

Real handshakes: an aiohttp HTTPS site on loopback with the server context, real clients with the client context.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import warnings
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from drover.security.tls import MIN_VERSION, client_context, generate_test_pki, server_context


@pytest.fixture
def pki(tmp_path):
    return generate_test_pki(tmp_path / "pki")


@contextlib.asynccontextmanager
async def https_site(ctx: ssl.SSLContext):
    """An HTTPS site on 127.0.0.1 answering GET /hello; yields its port."""
    async def hello(request):
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def get(url: str, ctx: ssl.SSLContext | None) -> str:
    connector = aiohttp.TCPConnector(ssl=ctx) if ctx is not None else None
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
            return await r.text()


# ---- the generated PKI ----------------------------------------------------------------------------------------------
def test_generated_files_name_every_host_and_keep_the_key_private(tmp_path):
    files = generate_test_pki(tmp_path / "tls", hosts=("127.0.0.1", "::1", "localhost", "m1.example"))
    assert files == (tmp_path / "tls" / "ca.pem", tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")
    assert os.stat(files.key).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "tls").st_mode & 0o777 == 0o700
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "m1.example"]
    assert cert.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The CA's key is not kept; no temporary file is left.
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["ca.pem", "cert.pem", "key.pem"]


def test_generating_again_replaces_the_ca(tmp_path):
    first = generate_test_pki(tmp_path).ca.read_bytes()
    assert generate_test_pki(tmp_path).ca.read_bytes() != first


@pytest.mark.parametrize("hosts", [(), ("",), ("a b",), ("http://x",), ("x_y.example",)])
def test_hosts_that_cannot_be_named_are_refused(tmp_path, hosts):
    with pytest.raises(ValueError):
        generate_test_pki(tmp_path, hosts=hosts)
    assert not (tmp_path / "key.pem").exists()


# ---- handshakes ------------------------------------------------------------------------------------------------------
async def test_a_client_with_the_ca_reaches_the_server_by_ip_and_by_name(pki):
    async with https_site(server_context(pki.cert, pki.key)) as port:
        for host in ("127.0.0.1", "localhost"):
            assert await get(f"https://{host}:{port}/hello", client_context(pki.ca)) == "hello"
        # The certificates also pass OpenSSL's strict X.509 checks (Python 3.13 turns them on by default).
        strict = client_context(pki.ca)
        strict.verify_flags |= ssl.VERIFY_X509_STRICT
        assert await get(f"https://127.0.0.1:{port}/hello", strict) == "hello"
        _, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(pki.ca))
        assert w.get_extra_info("ssl_object").version() == "TLSv1.3"
        w.close()


async def test_a_client_with_another_ca_is_refused(pki, tmp_path):
    other = generate_test_pki(tmp_path / "other")
    async with https_site(server_context(pki.cert, pki.key)) as port:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as e:
            await get(f"https://127.0.0.1:{port}/hello", client_context(other.ca))
        assert e.value.certificate_error.verify_message == "unable to get local issuer certificate"
        # Nor do the system's CAs vouch for a test CA.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(f"https://127.0.0.1:{port}/hello", client_context(None))


async def test_a_host_the_certificate_does_not_name_is_refused(tmp_path):
    only_localhost = generate_test_pki(tmp_path, hosts=("localhost",))
    async with https_site(server_context(only_localhost.cert, only_localhost.key)) as port:
        assert await get(f"https://localhost:{port}/hello", client_context(only_localhost.ca)) == "hello"
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as e:
            await get(f"https://127.0.0.1:{port}/hello", client_context(only_localhost.ca))
        assert "mismatch" in e.value.certificate_error.verify_message


async def test_plain_http_on_the_tls_port_gets_nothing(pki):
    async with https_site(server_context(pki.cert, pki.key)) as port:
        with pytest.raises(aiohttp.ClientError):
            await get(f"http://127.0.0.1:{port}/hello", None)


async def test_tls_1_2_is_the_oldest_version_served(pki):
    server = server_context(pki.cert, pki.key)
    assert server.minimum_version == MIN_VERSION == ssl.TLSVersion.TLSv1_2
    async with https_site(server) as port:
        tls12 = client_context(pki.ca)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        _, w = await asyncio.open_connection("127.0.0.1", port, ssl=tls12)
        assert w.get_extra_info("ssl_object").version() == "TLSv1.2"
        w.close()

    def old_client() -> ssl.SSLContext:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = client_context(pki.ca)
            ctx.minimum_version, ctx.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        return ctx

    # A server that allows TLS 1.1 shows this client can speak it here; then ours must refuse it.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.load_cert_chain(pki.cert, pki.key)
    async with https_site(permissive) as port:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port, ssl=old_client())
        except (ssl.SSLError, OSError):
            pytest.skip("this OpenSSL does not speak TLS 1.1 at all")
        w.close()
    async with https_site(server) as port:
        with pytest.raises((ssl.SSLError, OSError)):
            await asyncio.open_connection("127.0.0.1", port, ssl=old_client())


# ---- bad files -------------------------------------------------------------------------------------------------------
def _expired(pki, path: Path) -> None:
    """A certificate for the key in pki.key that expired yesterday."""
    key = serialization.load_pem_private_key(pki.key.read_bytes(), None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _encrypted(pki, path: Path) -> None:
    key = serialization.load_pem_private_key(pki.key.read_bytes(), None)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"secret")))
    path.chmod(0o600)


def _other_key(pki, path: Path) -> None:
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)


def _open_key(pki, path: Path) -> None:
    path.write_bytes(pki.key.read_bytes())
    path.chmod(0o644)


def _garbage(pki, path: Path) -> None:
    path.write_text("not a PEM file\n")
    path.chmod(0o600)


@pytest.mark.parametrize("which, make, message", [
    ("cert", None, "cannot read the certificate file {cert}: No such file or directory"),
    ("key", None, "cannot read the key file {key}: No such file or directory"),
    ("cert", _garbage, "the certificate file {cert} holds no PEM certificate"),
    ("cert", lambda pki, p: p.write_bytes(pki.key.read_bytes()),
     "the certificate file {cert} holds no PEM certificate"),
    ("key", _garbage, "the key file {key} holds no PEM private key"),
    ("key", _other_key, "the key in {key} is not the key of the certificate in {cert}"),
    ("key", _encrypted, "the key file {key} is encrypted"),
    ("key", _open_key, "the key file {key} is accessible to other users (mode 644); chmod 600 it"),
    ("cert", _expired, "the certificate in {cert} expired on "),
])
def test_bad_server_files_are_refused_in_one_line(pki, tmp_path, which, make, message):
    files = {"cert": pki.cert, "key": pki.key}
    files[which] = tmp_path / f"bad-{which}.pem"
    if make is not None:
        make(pki, files[which])
    with pytest.raises(ValueError) as e:
        server_context(files["cert"], files["key"])
    assert message.format(**files) in str(e.value)
    assert "\n" not in str(e.value)


def test_a_missing_half_is_refused(pki):
    with pytest.raises(ValueError, match="needs both"):
        server_context(pki.cert, None)


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the CA file {ca}: No such file or directory"),
    ("not a certificate\n", "the CA file {ca} holds no PEM certificate"),
])
def test_bad_ca_files_are_refused_in_one_line(tmp_path, content, message):
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_text(content)
    with pytest.raises(ValueError) as e:
        client_context(ca)
    assert str(e.value) == message.format(ca=ca)


# ---- the drover command -------------------------------------------------------------------------------------------
def drover(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drover.cli", *args], capture_output=True, text=True, timeout=60)


MASTER = ["master", "--id", "m", "--http", "127.0.0.1:1", "--raft", "127.0.0.1:2", "--raft-insecure"]


def test_the_command_refuses_bad_tls_flags_in_one_line(pki, tmp_path):
    other = generate_test_pki(tmp_path / "other")
    cases = [
        (MASTER + ["--data-dir", str(tmp_path / "m"), "--tls-cert", str(pki.cert)],
         "drover master: error: --tls-cert and --tls-key go together"),
        (MASTER + ["--data-dir", str(tmp_path / "m"), "--tls-cert", str(pki.cert), "--tls-key", str(other.key)],
         f"drover master: error: --tls-cert/--tls-key: the key in {other.key} is not the key of the certificate"),
        (["agent", "--master", "127.0.0.1:1", "--http", "127.0.0.1:2", "--work-dir", str(tmp_path / "a"),
          "--tls-ca", str(tmp_path / "nope.pem")],
         f"drover agent: error: --tls-ca: cannot read the CA file {tmp_path / 'nope.pem'}"),
        (["execute", "--master", "127.0.0.1:1", "--command", "true", "--tls-ca", str(pki.key)],
         f"drover execute: error: --tls-ca: the CA file {pki.key} holds no PEM certificate"),
    ]
    for args, message in cases:
        r = drover(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "a").exists()  # nothing started
