"""Fixtures shared by the reliability tests."""

from __future__ import annotations

import datetime
import ssl

import pytest
import trustme
from netstream_testing import Certs


@pytest.fixture(scope="session")
def certs() -> Certs:
    """One set of ``trustme`` certificates for the whole run."""
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client_ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    return Certs(
        ca=ca,
        server=server,
        client_ca=client_ca,
        client=client_ca.issue_cert("client.example"),
        wrong_ca_client=trustme.CA().issue_cert("client.example"),
        expired_client=client_ca.issue_cert(
            "client.example",
            not_before=datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc),
            not_after=datetime.datetime(2002, 1, 1, tzinfo=datetime.timezone.utc),
        ),
        server_ctx=server_ctx,
        client_ctx=client_ctx,
    )
