"""Peer verification with ``reject_unauthorized=False``: the handshake completes,
and ``verify_peer()`` / ``authorization_error`` say what OpenSSL would have said.

Both ends are trio_netstream streams over ``trio.testing.memory_stream_pair()``;
certificates come from ``trustme`` (and one self-signed from ``cryptography``).
"""

from __future__ import annotations

import datetime
import ssl
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_netstream as net

NOW = datetime.datetime.now(datetime.timezone.utc)


def server_context(cert: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def client_context(*cas: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for ca in cas:
        ca.configure_trust(context)
    return context


async def handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext | None,
    hostname: str | None,
    *,
    reject_unauthorized: bool = False,
) -> tuple[bool, str | None, dict[str, Any] | None, list[Any]]:
    """Upgrade a wrapped pair; the client's (verify_peer, error, cert, events)."""
    left, right = trio.testing.memory_stream_pair()
    server = net.Stream.wrap(left)
    client = net.Stream.wrap(right)
    events: list[Any] = []
    seen: dict[str, Any] = {}

    def on_secure() -> None:
        seen["verified"] = client.verify_peer()
        seen["why"] = client.authorization_error
        seen["cert"] = client.get_peer_certificate()
        events.append("secure")
        client.end()

    client.on("secure", on_secure)
    client.on("error", lambda err: events.append(("error", type(err).__name__)))
    client.on("close", lambda had_error: events.append(("close", had_error)))
    server.on("error", lambda err: None)
    server.on("end", server.end)
    with trio.fail_after(10):
        async with server, client:
            server.set_secure(server_ctx, server_side=True)
            client.set_secure(
                client_ctx, server_hostname=hostname, reject_unauthorized=reject_unauthorized
            )
    return seen.get("verified", False), seen.get("why"), seen.get("cert"), events


async def test_a_chain_through_an_intermediate_verifies() -> None:
    root = trustme.CA()
    intermediate = root.create_child_ca()
    cert = intermediate.issue_cert("localhost")
    verified, why, peer, events = await handshake(
        server_context(cert), client_context(root), "localhost"
    )
    assert (verified, why) == (True, None)
    assert peer is not None and "DNS:localhost" in peer["subjectaltname"]
    assert events == ["secure", ("close", False)]


async def test_a_self_signed_certificate_is_depth_zero() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    blob = trustme.Blob(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with blob.tempfile() as path:
        context.load_cert_chain(path)
    verified, why, peer, _ = await handshake(context, client_context(trustme.CA()), "localhost")
    assert verified is False
    assert why is not None and why.startswith("DEPTH_ZERO_SELF_SIGNED_CERT")
    assert peer is not None and peer["subject"] == {"CN": "self"} == peer["issuer"]


async def test_a_certificate_not_yet_valid() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert(
        "localhost",
        not_before=NOW + datetime.timedelta(days=2),
        not_after=NOW + datetime.timedelta(days=30),
    )
    verified, why, _, _ = await handshake(server_context(cert), client_context(ca), "localhost")
    assert verified is False
    assert why is not None and why.startswith("CERT_NOT_YET_VALID")


@pytest.mark.parametrize(
    ("hostname", "verified"),
    [("a.example.test", True), ("A.EXAMPLE.TEST", True), ("a.b.example.test", False)],
)
async def test_wildcard_names_match_one_label(hostname: str, verified: bool) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("*.example.test")
    result, why, _, _ = await handshake(server_context(cert), client_context(ca), hostname)
    assert result is verified
    assert (why is None) is verified
    if not verified:
        assert why is not None and why.startswith("ERR_TLS_CERT_ALTNAME_INVALID")


@pytest.mark.parametrize(("hostname", "verified"), [("127.0.0.2", True), ("127.0.0.1", False)])
async def test_ip_addresses_match_exactly(hostname: str, verified: bool) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.2")
    result, why, _, _ = await handshake(server_context(cert), client_context(ca), hostname)
    assert result is verified
    if not verified:
        assert why is not None and why.startswith("ERR_TLS_CERT_ALTNAME_INVALID")


async def test_the_default_context_checks_against_the_system_store() -> None:
    """context=None: the system's CAs (not trustme's) are the anchors."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    verified, why, peer, events = await handshake(server_context(cert), None, "localhost")
    assert verified is False
    assert why is not None and why.startswith("UNABLE_TO_GET_ISSUER_CERT_LOCALLY")
    assert peer is not None
    assert events == ["secure", ("close", False)]


async def test_a_context_that_does_not_verify_is_not_reported_as_verified() -> None:
    """reject_unauthorized=True with a CERT_NONE context: the handshake passes,
    but verify_peer() tells the truth."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    verified, why, _, _ = await handshake(
        server_context(cert), context, "localhost", reject_unauthorized=True
    )
    assert verified is False
    assert why is not None and why.startswith("UNABLE_TO_GET_ISSUER_CERT_LOCALLY")
    # The caller's context is left as it was.
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)


async def test_the_callers_context_is_restored_after_the_handshake() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    context = client_context(trustme.CA())  # verifies, but trusts another CA
    options = context.options
    verified, why, _, events = await handshake(server_context(cert), context, "localhost")
    assert verified is False and why is not None
    assert events == ["secure", ("close", False)]
    assert (context.verify_mode, context.check_hostname, context.options) == (
        ssl.CERT_REQUIRED,
        True,
        options,
    )
