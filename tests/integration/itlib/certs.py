"""Server certificates for the rotation faults: two CAs of our own (the plugin trusts one of
them through a CA file the test may replace), leaves from either, and an expired leaf.

The client side is unchanged: the plugin keeps presenting the session PKI's client certificate,
which the TLS front verifies against the session CA.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

from .pki import _make_ca, _make_leaf, _write_cert, _write_key


@dataclass(frozen=True)
class RotationCerts:
    dir: str
    ca_a: str              # CA "A" (PEM)
    ca_b: str              # an unrelated CA "B"
    leaf_a1: tuple[str, str]   # (cert, key) from A
    leaf_a2: tuple[str, str]   # another, from A (a routine rotation)
    leaf_b: tuple[str, str]    # from B
    leaf_a_expired: tuple[str, str]  # from A, expired an hour ago


def _expired(ca_key, ca_cert):
    """A leaf like _make_leaf's, re-signed with a validity that ended an hour ago."""
    key, cert = _make_leaf(ca_key, ca_cert, "127.0.0.1", server=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    from cryptography import x509
    b = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
         .public_key(cert.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=2))
         .not_valid_after(now - datetime.timedelta(hours=1)))
    for ext in cert.extensions:
        b = b.add_extension(ext.value, critical=ext.critical)
    return key, b.sign(ca_key, hashes.SHA256())


def make_rotation_certs(directory: str) -> RotationCerts:
    os.makedirs(directory, mode=0o755, exist_ok=True)
    os.chmod(directory, 0o755)
    ka, ca = _make_ca("Rotation test CA A")
    kb, cb = _make_ca("Rotation test CA B")

    def leaf(name, pair):
        cert_path = os.path.join(directory, f"{name}.pem")
        key_path = os.path.join(directory, f"{name}-key.pem")
        _write_cert(cert_path, pair[1])
        _write_key(key_path, pair[0])   # read by the test's front (root), not the plugin
        return cert_path, key_path

    r = RotationCerts(
        dir=directory,
        ca_a=os.path.join(directory, "ca-a.pem"),
        ca_b=os.path.join(directory, "ca-b.pem"),
        leaf_a1=leaf("a1", _make_leaf(ka, ca, "127.0.0.1", server=True)),
        leaf_a2=leaf("a2", _make_leaf(ka, ca, "127.0.0.1", server=True)),
        leaf_b=leaf("b", _make_leaf(kb, cb, "127.0.0.1", server=True)),
        leaf_a_expired=leaf("a-expired", _expired(ka, ca)),
    )
    _write_cert(r.ca_a, ca)
    _write_cert(r.ca_b, cb)
    return r
