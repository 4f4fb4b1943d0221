"""Certificates and keys for the TLS tests, issued at run time (nothing secret is committed):
a CA, server and client certificates signed by it, expired ones, in PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


@dataclass
class Issued:
    cert: x509.Certificate
    key: Any
    cert_path: Path
    key_path: Path


def _name(cn: str, org: str = "Ferrocorn Tests") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_key(key: Any, path: Path, fmt: str = "pkcs8", password: bytes | None = None) -> None:
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    form = {"pkcs8": serialization.PrivateFormat.PKCS8,
            "traditional": serialization.PrivateFormat.TraditionalOpenSSL}[fmt]
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, form, enc))


def issue(directory: Path, name: str, *, cn: str, issuer: Issued | None = None,
          ca: bool = False, serial: int | None = None, expired: bool = False,
          client: bool = False, key: Any = None) -> Issued:
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = _name(cn)
    not_before = NOW - datetime.timedelta(days=30 if expired else 1)
    not_after = NOW - datetime.timedelta(days=1) if expired else NOW + datetime.timedelta(days=30)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(key.public_key())
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False), critical=True)
    elif client:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    signer = issuer.key if issuer else key
    cert = builder.sign(signer, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(key, key_path)
    return Issued(cert, key, cert_path, key_path)
