"""Self-signed certificates for the HTTPS port: names, reuse, renewal, and the SPKI pin."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from duplex.orchestrator import tls
from duplex.orchestrator.tls import (
    TlsError,
    certificate_names,
    default_hostnames,
    ensure_self_signed,
    server_ssl_kwargs,
    spki_sha256_base64,
)

NAMES = ["localhost", "127.0.0.1", "::1", "demo.test"]


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"


def load(cert: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert.read_bytes())


def test_certificate_covers_dns_names_and_ip_addresses(paths: tuple[Path, Path]) -> None:
    cert_path, key_path = paths
    ensure_self_signed(cert_path, key_path, NAMES)
    san = load(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "demo.test"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert sorted(certificate_names(cert_path)) == sorted(NAMES)


def test_certificate_is_a_server_certificate_valid_from_now(paths: tuple[Path, Path]) -> None:
    cert_path, key_path = paths
    ensure_self_signed(cert_path, key_path, NAMES)
    cert = load(cert_path)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=300)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert cert.issuer == cert.subject


def test_private_key_is_readable_by_its_owner_only(paths: tuple[Path, Path]) -> None:
    cert_path, key_path = paths
    ensure_self_signed(cert_path, key_path, NAMES)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert not list(key_path.parent.glob(".*.tmp"))


def test_a_valid_certificate_is_reused(paths: tuple[Path, Path]) -> None:
    cert_path, key_path = paths
    ensure_self_signed(cert_path, key_path, NAMES)
    before = cert_path.read_bytes(), key_path.read_bytes()
    ensure_self_signed(cert_path, key_path, ["DEMO.test", "127.0.0.1"])  # a subset, any case
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before


def test_a_certificate_missing_a_requested_name_is_replaced(paths: tuple[Path, Path]) -> None:
    cert_path, key_path = paths
    ensure_self_signed(cert_path, key_path, ["localhost"])
    first = cert_path.read_bytes()
    ensure_self_signed(cert_path, key_path, ["localhost", "10.1.2.3"])
    assert cert_path.read_bytes() != first
    assert "10.1.2.3" in certificate_names(cert_path)


def test_a_certificate_close_to_expiry_is_replaced(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_path, key_path = paths
    monkeypatch.setattr(tls, "VALID_DAYS", 3)  # inside the renewal window at once
    ensure_self_signed(cert_path, key_path, NAMES)
    short = load(cert_path)
    monkeypatch.undo()
    ensure_self_signed(cert_path, key_path, NAMES)
    assert load(cert_path).not_valid_after_utc > short.not_valid_after_utc


def test_a_key_that_does_not_match_the_certificate_is_replaced(tmp_path: Path) -> None:
    a_cert, a_key = tmp_path / "a.pem", tmp_path / "a.key"
    b_cert, b_key = tmp_path / "b.pem", tmp_path / "b.key"
    ensure_self_signed(a_cert, a_key, NAMES)
    ensure_self_signed(b_cert, b_key, NAMES)
    shutil.copy(b_key, a_key)
    old_cert = a_cert.read_bytes()
    ensure_self_signed(a_cert, a_key, NAMES)
    assert a_cert.read_bytes() != old_cert
    # The pair works together again: a TLS server context accepts it.
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(a_cert, a_key)


def test_unreadable_files_are_replaced(paths: tuple[Path, Path]) -> None:
    cert_path, key_path = paths
    cert_path.parent.mkdir(parents=True)
    cert_path.write_text("not a certificate")
    key_path.write_text("not a key")
    ensure_self_signed(cert_path, key_path, NAMES)
    assert sorted(certificate_names(cert_path)) == sorted(NAMES)


def test_no_names_is_an_error(paths: tuple[Path, Path]) -> None:
    with pytest.raises(TlsError, match="at least one"):
        ensure_self_signed(*paths, [" ", ""])


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_spki_hash_matches_the_openssl_recipe_chromium_documents(paths: tuple[Path, Path]) -> None:
    cert_path, key_path = paths
    ensure_self_signed(cert_path, key_path, NAMES)
    recipe = (
        f"openssl x509 -in '{cert_path}' -pubkey -noout | openssl pkey -pubin -outform der"
        " | openssl dgst -sha256 -binary | base64"
    )
    expected = subprocess.run(
        ["bash", "-c", recipe], capture_output=True, text=True, check=True, timeout=20
    ).stdout.strip()
    assert spki_sha256_base64(cert_path) == expected


def test_spki_hash_of_a_file_that_is_not_a_certificate_names_it(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("hello")
    with pytest.raises(TlsError, match=r"bogus\.pem"):
        spki_sha256_base64(bogus)


def test_server_ssl_kwargs_name_the_files_for_uvicorn(paths: tuple[Path, Path]) -> None:
    cert_path, key_path = paths
    ensure_self_signed(cert_path, key_path, NAMES)
    assert server_ssl_kwargs(cert_path, key_path) == {
        "ssl_certfile": str(cert_path),
        "ssl_keyfile": str(key_path),
    }


def test_server_ssl_kwargs_refuse_a_missing_file(paths: tuple[Path, Path]) -> None:
    cert_path, key_path = paths
    with pytest.raises(TlsError, match="certificate file does not exist"):
        server_ssl_kwargs(cert_path, key_path)


def test_default_hostnames_include_localhost_and_this_host() -> None:
    names = default_hostnames()
    assert names[:2] == ["localhost", "127.0.0.1"]
    assert len(names) == len(set(names))


async def test_a_client_that_trusts_the_certificate_completes_a_handshake(
    paths: tuple[Path, Path],
) -> None:
    cert_path, key_path = paths
    ensure_self_signed(cert_path, key_path, NAMES)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_path, key_path)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cafile=str(cert_path))
    try:
        async with asyncio.timeout(10):
            for name in ("localhost", "demo.test"):  # checked against the SAN
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_ctx, server_hostname=name
                )
                writer.write(b"ping\n")
                assert await reader.readline() == b"ping\n"
                writer.close()
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_ctx, server_hostname="other.test"
                )
    finally:
        server.close()
        await server.wait_closed()


def test_command_line_prints_the_names_and_the_spki_pin(
    paths: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cert_path, key_path = paths
    argv = ["--cert", str(cert_path), "--key", str(key_path), "--host", "demo.test"]
    assert tls.main(argv) == 0
    out = capsys.readouterr().out
    assert "names:       demo.test" in out
    assert f"spki sha256: {spki_sha256_base64(cert_path)}" in out
