"""The self-signed certificate `make up TLS=1` makes when no certificate folder is given.

Browsers give the microphone only to secure pages off localhost, so the mic page needs HTTPS
when it is opened from another machine. The certificate covers PUBLIC_HOST and this host's
names; browsers warn once. The orchestrator container runs as the image's unprivileged user
(uid 10001), which must be able to read the key through the read-only mount.
"""

from __future__ import annotations

import os
from pathlib import Path

from duplex.orchestrator.tls import certificate_names, default_hostnames, ensure_self_signed

CONTAINER_UID = 10001
"""The `duplex` user of the images (Dockerfile)."""


def ensure_certificate(folder: Path, public_host: str) -> str:
    """Make (or reuse) folder/cert.pem and folder/key.pem; returns a line to print."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    ensure_self_signed(cert, key, [public_host, *default_hostnames()])
    if os.geteuid() == 0:
        # Root can hand the key to the container's user and keep it private (0600).
        os.chown(key, CONTAINER_UID, CONTAINER_UID)
        note = f"key owned by uid {CONTAINER_UID}, mode 0600"
    else:
        # Without root the container's user can read it only if everyone can: a self-signed
        # key for this host, in a folder that is never committed.
        os.chmod(key, 0o644)
        note = "key mode 0644 so that the container's user can read it"
    names = ", ".join(certificate_names(cert))
    return f"TLS: self-signed certificate {cert} for {names} ({note})"
