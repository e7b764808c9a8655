"""A private certificate authority for a fleet: Redis over TLS, and the workers' gRPC API with
mutual TLS (each worker, orchestrator and console holds a certificate signed by the fleet's CA,
and trusts only that CA).

    python -m duplex.deploy.pki --out certs --name worker-a --hosts 10.0.0.5,gpu-a.lan
    # certs/ca.pem ca.key (made once), certs/worker-a.pem worker-a.key

Operators with their own PKI skip this: every consumer reads plain PEM files.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 825  # what browsers and most TLS stacks still accept for a leaf
_BACKDATE = datetime.timedelta(hours=1)  # other hosts' clocks may run a little behind


@dataclass(frozen=True)
class Issued:
    """A certificate and its key on disk."""

    cert: Path
    key: Path


def ensure_ca(directory: Path, name: str = "duplex fleet CA") -> Issued:
    """`ca.pem`/`ca.key` in `directory`, made when missing (reused otherwise)."""
    cert, key = directory / "ca.pem", directory / "ca.key"
    if cert.exists() and key.exists():
        return Issued(cert, key)
    directory.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    built = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS * 2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(private, hashes.SHA256())
    )
    _write(key, _key_pem(private), mode=0o600)
    _write(cert, built.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return Issued(cert, key)


def issue(ca: Issued, directory: Path, name: str, hosts: Sequence[str]) -> Issued:
    """A leaf for `name` valid for `hosts` (DNS names and IP addresses), usable both as a
    server's and as a client's certificate (a worker serves; an orchestrator calls)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca.key}: expected an EC key")
    private = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([name, *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    built = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _write(key, _key_pem(private), mode=0o600)
    _write(cert, built.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return Issued(cert, key)


def _key_pem(private: ec.EllipticCurvePrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duplex.deploy.pki", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for ca.pem and leaves")
    parser.add_argument("--name", required=True, help="the leaf's name (its files' stem)")
    parser.add_argument("--hosts", default="", help="comma-separated DNS names and IPs")
    args = parser.parse_args(argv)
    ca = ensure_ca(args.out)
    leaf = issue(ca, args.out, args.name, [h for h in args.hosts.split(",") if h.strip()])
    print(f"CA {ca.cert}\ncertificate {leaf.cert}\nkey {leaf.key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
