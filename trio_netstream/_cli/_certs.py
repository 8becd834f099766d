"""Certificates and TLS contexts for the command line.

``demo --tls`` uses a throwaway CA and server certificate (trustme's when it
is installed, else made here with ``cryptography``, imported only then);
``echo --tls-cert`` and ``connect --ca-file`` load files, and a file that
cannot be loaded is a :class:`Failure` with exit code 3.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ._output import EXIT_TLS, Failure

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    Validity = tuple[datetime.datetime, datetime.datetime]


class Certificates(NamedTuple):
    """A throwaway CA and a server certificate for localhost, 127.0.0.1 and ::1 (PEM)."""

    ca_pem: bytes
    chain_pem: bytes
    key_pem: bytes

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory(prefix="trio-netstream-") as directory:
            chain = Path(directory) / "chain.pem"
            key = Path(directory) / "key.pem"
            chain.write_bytes(self.chain_pem)
            key.write_bytes(self.key_pem)
            context.load_cert_chain(chain, key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))


def throwaway_certificates(*, use_trustme: bool = True) -> Certificates:
    """A fresh CA and server certificate: trustme's when it is installed,
    else made here with ``cryptography`` (a dependency of this package)."""
    if use_trustme:
        try:
            import trustme
        except ImportError:
            pass
        else:
            ca = trustme.CA()
            issued = ca.issue_cert("localhost", "127.0.0.1", "::1")
            chain = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
            return Certificates(ca.cert_pem.bytes(), chain, issued.private_key_pem.bytes())
    return _generate_certificates()


def _generate_certificates() -> Certificates:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.timezone.utc)
    validity = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, validity)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _server_certificate(key, ca_key, ca_cert.subject, validity)
    pem = serialization.Encoding.PEM
    return Certificates(
        ca_cert.public_bytes(pem),
        cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; a server certificate signs handshakes."""
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_certificate(ca_key: ec.EllipticCurvePrivateKey, validity: Validity) -> x509.Certificate:
    """The throwaway CA's self-signed certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trio-netstream"),
            x509.NameAttribute(NameOID.COMMON_NAME, "trio-netstream throwaway CA"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    validity: Validity,
) -> x509.Certificate:
    """The server certificate for localhost, 127.0.0.1 and ::1, signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )


def server_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    """The ``echo --tls-cert/--tls-key`` context (exit 3 if it cannot be loaded)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ValueError) as exc:
        files = certfile if keyfile is None else f"{certfile} / {keyfile}"
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise Failure(f"cannot load certificate and key: {files}: {reason}", EXIT_TLS) from exc
    return context


def client_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    """The ``connect --tls/--starttls`` context (exit 3 if --ca-file cannot be loaded)."""
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
            raise Failure(f"cannot load CA file: {ca_file}: {reason}", EXIT_TLS) from exc
    return context
