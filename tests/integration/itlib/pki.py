"""Test PKI: a CA, a server and a client certificate signed by it, and an unrelated second CA.

Everything is EC P-256 and written as PEM into a directory. Nothing here is a stand-in: OpenBao
serves the server certificate and verifies the client certificate against the CA.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Trousseau integration tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(
        now + datetime.timedelta(days=2))


def _make_ca(cn: str):
    key = _key()
    name = _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = _validity(builder).sign(key, hashes.SHA256())
    return key, cert


def _make_leaf(ca_key, ca_cert, cn: str, *, server: bool):
    key = _key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
        ]), critical=False)
    cert = _validity(builder).sign(ca_key, hashes.SHA256())
    return key, cert


def spki_pin_of_public_key(public_key) -> str:
    """"sha256//<base64(sha256(DER SubjectPublicKeyInfo))>", the format of vault.tls.spki_pins."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def _write_cert(path: str, cert: x509.Certificate) -> None:
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def _write_key(path: str, key, owner: tuple[int, int] | None = None) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    if owner is not None and os.geteuid() == 0:
        os.chown(path, owner[0], owner[1])
    os.chmod(path, 0o400)


@dataclass(frozen=True)
class Pki:
    dir: str
    ca_file: str            # the test CA that signed the server and client certificates
    server_cert_file: str   # 127.0.0.1 + localhost
    server_key_file: str
    client_cert_file: str   # clientAuth, for mutual TLS
    client_key_file: str
    other_ca_file: str      # an unrelated CA: trusting only it must fail verification
    server_spki_pin: str    # pin of the server certificate's key
    other_spki_pin: str     # a well-formed pin of an unrelated key


def make_pki(directory: str, key_owner: tuple[int, int] | None = None) -> Pki:
    """Writes the PKI into `directory` (created 0755). Private keys the plugin reads are chowned
    to `key_owner` (the uid/gid the plugin drops to when started as root)."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    os.chmod(directory, 0o755)
    ca_key, ca_cert = _make_ca("Trousseau test CA")
    srv_key, srv_cert = _make_leaf(ca_key, ca_cert, "127.0.0.1", server=True)
    cli_key, cli_cert = _make_leaf(ca_key, ca_cert, "trousseau-client", server=False)
    _, other_ca_cert = _make_ca("Unrelated test CA")
    other_key = _key()

    p = Pki(
        dir=directory,
        ca_file=os.path.join(directory, "ca.pem"),
        server_cert_file=os.path.join(directory, "server.pem"),
        server_key_file=os.path.join(directory, "server-key.pem"),
        client_cert_file=os.path.join(directory, "client.pem"),
        client_key_file=os.path.join(directory, "client-key.pem"),
        other_ca_file=os.path.join(directory, "other-ca.pem"),
        server_spki_pin=spki_pin_of_public_key(srv_cert.public_key()),
        other_spki_pin=spki_pin_of_public_key(other_key.public_key()),
    )
    _write_cert(p.ca_file, ca_cert)
    _write_cert(p.server_cert_file, srv_cert)
    _write_key(p.server_key_file, srv_key)
    _write_cert(p.client_cert_file, cli_cert)
    _write_key(p.client_key_file, cli_key, owner=key_owner)
    _write_cert(p.other_ca_file, other_ca_cert)
    return p
