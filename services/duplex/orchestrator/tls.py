"""A self-signed certificate for the orchestrator's HTTPS/WSS port, and what uvicorn and
Chromium need to use it.

Browsers give the microphone only to secure pages (https, or http on localhost), so the demo
page opened from another machine needs TLS. With no certificate of their own, operators get a
self-signed one for the host's names (`make demo TLS=1`): the browser warns once, and tests
make Chromium trust it with `--ignore-certificate-errors-spki-list=<spki_sha256_base64(...)>`.

    python -m duplex.orchestrator.tls --cert out/tls/cert.pem --key out/tls/key.pem
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_LOG = logging.getLogger(__name__)

VALID_DAYS = 365
# A certificate that expires sooner than this is replaced rather than reused, so a demo
# started today does not break in the middle of next week.
RENEW_BEFORE = datetime.timedelta(days=14)
# Clocks of other machines on the LAN may run a little behind this one.
_BACKDATE = datetime.timedelta(hours=1)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TlsError(ValueError):
    """A certificate or key file cannot be used."""


def default_hostnames() -> list[str]:
    """localhost, the loopback addresses, and this host's name and fully qualified name."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    return _unique([n for n in names if n])


def ensure_self_signed(cert_path: Path, key_path: Path, hostnames: Sequence[str]) -> None:
    """Make a self-signed certificate for `hostnames` (DNS names and IP addresses), unless the
    files already hold a usable one: the key matches, it is valid for a while yet, and its
    names cover every one asked for. Files are replaced atomically; the key is 0600."""
    names = _unique([h.strip() for h in hostnames if h.strip()])
    if not names:
        raise TlsError("a certificate needs at least one host name or address")
    if _reusable(cert_path, key_path, names):
        _LOG.info("reusing the TLS certificate", extra={"cert_file": str(cert_path)})
        return
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(key_path, key_pem, mode=0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    _LOG.info(
        "made a self-signed TLS certificate",
        extra={"cert_file": str(cert_path), "names": ",".join(names)},
    )


def spki_sha256_base64(cert_path: Path) -> str:
    """base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo: the value Chromium's
    `--ignore-certificate-errors-spki-list` takes (and HPKP-style pins)."""
    cert = _load_cert(cert_path)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def server_ssl_kwargs(cert_path: Path, key_path: Path) -> dict[str, str]:
    """Keyword arguments for `uvicorn.Config` to serve TLS with these files (checked first,
    so a wrong path fails here with its name rather than deep inside uvicorn)."""
    for label, path in (("certificate", cert_path), ("key", key_path)):
        if not path.is_file():
            raise TlsError(f"the TLS {label} file does not exist: {path}")
    return {"ssl_certfile": str(cert_path), "ssl_keyfile": str(key_path)}


def certificate_names(cert_path: Path) -> list[str]:
    """The DNS names and IP addresses a certificate is for (its subjectAltName)."""
    return _san_names(_load_cert(cert_path))


def _reusable(cert_path: Path, key_path: Path, names: Sequence[str]) -> bool:
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = _load_cert(cert_path)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (TlsError, ValueError, TypeError, OSError) as exc:
        _LOG.warning(
            "replacing an unreadable TLS certificate or key",
            extra={"cert_file": str(cert_path), "reason": str(exc)},
        )
        return False
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        return False
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc - RENEW_BEFORE:
        return False
    have = {_normalise(n) for n in _san_names(cert)}
    return all(_normalise(n) in have for n in names)


def _load_cert(cert_path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as exc:
        raise TlsError(f"cannot read the certificate {cert_path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise TlsError(f"{cert_path} is not a PEM certificate: {exc}") from exc


def _san_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return [*dns, *ips]


def _general_names(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        ip = _as_ip(name)
        out.append(x509.IPAddress(ip) if ip is not None else x509.DNSName(name))
    return out


def _as_ip(name: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def _normalise(name: str) -> str:
    ip = _as_ip(name)
    return str(ip) if ip is not None else name.lower().rstrip(".")


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(_normalise(name), name)
    return list(seen.values())


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, mode)  # O_CREAT's mode is masked by the umask, and ignored if it existed
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Make (or reuse) a certificate; print its names and SPKI hash."""
    parser = argparse.ArgumentParser(
        prog="python -m duplex.orchestrator.tls",
        description="Make or reuse a self-signed TLS certificate for the orchestrator.",
    )
    parser.add_argument("--cert", type=Path, required=True, help="certificate file (PEM)")
    parser.add_argument("--key", type=Path, required=True, help="private key file (PEM)")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="a DNS name or IP address to cover (repeatable; default: this host's names)",
    )
    args = parser.parse_args(argv)
    try:
        ensure_self_signed(args.cert, args.key, args.host or default_hostnames())
        print(f"certificate: {args.cert}")
        print(f"key:         {args.key}")
        print(f"names:       {', '.join(certificate_names(args.cert))}")
        print(f"spki sha256: {spki_sha256_base64(args.cert)}")
    except (TlsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
