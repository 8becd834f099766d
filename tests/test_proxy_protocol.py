"""PROXY protocol (HAProxy's v1 text and v2 binary headers) on servers.

A. The sans-IO parser (``trio_netstream._proxy``): valid v1 (TCP4, TCP6,
   UNKNOWN) and v2 (PROXY over INET/INET6/UNIX, LOCAL, UNSPEC, TLVs up to
   ``V2_MAX_LENGTH``) headers; ``header_length`` on every prefix of a header
   and on a header followed by payload; every malformed header a
   ``ValueError`` with ``.code == "ERR_PROXY_PROTOCOL"``.
B. Real sockets (loopback; raw trio or stdlib sockets as the balancer, our
   server with ``proxy_protocol=True``): each malformed header is one
   ``'clientError'`` (the real socket's addresses in ``info``) and no
   ``'connection'``, and the server goes on serving; refused sources
   (``proxy_trusted``) before anything is read; ``handshake_timeout``; a
   header sent a byte at a time; the bytes behind the header are the first
   ``'data'``; ``remote_*`` and ``stream.proxy``; a stalled balancer does not
   stall the accept loop; no descriptor leaked; nothing logged.
C. Hypothesis: random bytes only ever raise the ``ValueError``; a valid
   header plus payload cut anywhere goes through a model of ``read_header``'s
   peek/consume loop (and the real ``read_header`` over a socketpair) leaving
   exactly the payload; over real sockets, a header plus payload sent in
   random chunks gives exactly the payload as ``'data'``, and garbage gives
   one ``'clientError'`` and no ``'connection'``.
"""

from __future__ import annotations

import gc
import ipaddress
import itertools
import logging
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from netstream_testing import IPV6

import trio_netstream as net
from trio_netstream._proxy import (
    V1_MAX,
    V2_MAX_LENGTH,
    ProxyHeader,
    header_length,
    is_trusted,
    parse,
    read_header,
    trusted_networks,
)

#: The v2 signature, as HAProxy's proxy-protocol.txt spells it.
SIGNATURE = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
CODE = "ERR_PROXY_PROTOCOL"
LOOPBACK = "127.0.0.1"
#: An upper bound for every real-socket test.
LIMIT = 15


# -- building headers ------------------------------------------------------------------


def v1(
    proto: str = "TCP4",
    src: str = "192.0.2.1",
    dst: str = "198.51.100.2",
    sport: int | str = 51234,
    dport: int | str = 443,
) -> bytes:
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode()


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def v2(
    body: bytes = b"",
    *,
    version: int = 2,
    command: int = 1,
    family: int = 1,
    protocol: int = 1,
    length: int | None = None,
) -> bytes:
    """A v2 header: the signature, the two nibble pairs, the length, *body*."""
    size = len(body) if length is None else length
    return (
        SIGNATURE
        + bytes([version << 4 | command, family << 4 | protocol])
        + size.to_bytes(2, "big")
        + body
    )


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    pack = socket.inet_pton
    return pack(socket.AF_INET, src) + pack(socket.AF_INET, dst) + struct.pack("!HH", sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    pack = socket.inet_pton
    return (
        pack(socket.AF_INET6, src) + pack(socket.AF_INET6, dst) + struct.pack("!HH", sport, dport)
    )


def unix(src: bytes, dst: bytes) -> bytes:
    return src.ljust(108, b"\0") + dst.ljust(108, b"\0")


INET = inet("192.0.2.1", "198.51.100.2", 51234, 443)
INET6 = inet6("2001:db8::1", "2001:db8::2", 51234, 443)
UNIX = unix(b"/run/client.sock", b"/run/server.sock")
#: The longest v1 header the spec allows (its own example): exactly 107 bytes.
V1_LONGEST = (
    b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)
#: A TLV that fills an INET header up to exactly V2_MAX_LENGTH bytes after the prefix.
MAX_TLV = tlv(0x04, bytes(V2_MAX_LENGTH - len(INET) - 3))


def measure_and_parse(data: bytes, peer: tuple[str, int] | None = None) -> ProxyHeader:
    """``header_length`` then ``parse`` of exactly the measured bytes, as the server does."""
    total = header_length(data)
    assert total is not None, "header_length wants more bytes of a complete case"
    assert total <= len(data), f"header_length says {total} > {len(data)}"
    return parse(data[:total], peer)


def assert_proxy_error(exc: BaseException) -> None:
    assert type(exc) is ValueError, repr(exc)
    assert getattr(exc, "code", None) == CODE, repr(exc)
    assert str(exc).startswith("PROXY protocol"), str(exc)


# -- A. the sans-IO parser: valid headers -----------------------------------------------

PEER = ("10.1.2.3", 40000)

VALID: dict[str, tuple[bytes, ProxyHeader]] = {
    "v1-tcp4": (
        v1(),
        ProxyHeader(1, "PROXY", ("192.0.2.1", 51234), ("198.51.100.2", 443), {}, PEER),
    ),
    "v1-tcp4-port-zero-and-max": (
        v1(sport=0, dport=65535),
        ProxyHeader(1, "PROXY", ("192.0.2.1", 0), ("198.51.100.2", 65535), {}, PEER),
    ),
    "v1-tcp6": (
        v1("TCP6", "2001:db8::1", "2001:db8::2"),
        ProxyHeader(1, "PROXY", ("2001:db8::1", 51234), ("2001:db8::2", 443), {}, PEER),
    ),
    "v1-tcp6-full-length": (
        v1("TCP6", "ffff:" * 7 + "ffff", "ffff:" * 7 + "ffff", 65535, 65535),
        ProxyHeader(
            1,
            "PROXY",
            ("ffff:" * 7 + "ffff", 65535),
            ("ffff:" * 7 + "ffff", 65535),
            {},
            PEER,
        ),
    ),
    "v1-unknown": (b"PROXY UNKNOWN\r\n", ProxyHeader(1, "PROXY", None, None, {}, PEER)),
    "v1-unknown-with-addresses": (
        v1("UNKNOWN", "2001:db8::1", "2001:db8::2"),
        ProxyHeader(1, "PROXY", None, None, {}, PEER),
    ),
    "v1-unknown-107-bytes": (V1_LONGEST, ProxyHeader(1, "PROXY", None, None, {}, PEER)),
    "v2-inet": (
        v2(INET),
        ProxyHeader(2, "PROXY", ("192.0.2.1", 51234), ("198.51.100.2", 443), {}, PEER),
    ),
    "v2-inet6": (
        v2(INET6, family=2),
        ProxyHeader(2, "PROXY", ("2001:db8::1", 51234), ("2001:db8::2", 443), {}, PEER),
    ),
    "v2-unix": (
        v2(UNIX, family=3),
        ProxyHeader(2, "PROXY", ("/run/client.sock", None), ("/run/server.sock", None), {}, PEER),
    ),
    "v2-unix-full-108-byte-paths": (
        v2(unix(b"a" * 108, b"b" * 108), family=3),
        ProxyHeader(2, "PROXY", ("a" * 108, None), ("b" * 108, None), {}, PEER),
    ),
    "v2-local": (
        v2(command=0, family=0, protocol=0),
        ProxyHeader(2, "LOCAL", None, None, {}, PEER),
    ),
    "v2-local-with-an-ignored-address-block": (
        v2(INET, command=0),
        ProxyHeader(2, "LOCAL", None, None, {}, PEER),
    ),
    "v2-local-ignores-unknown-family-and-protocol": (
        v2(b"junk", command=0, family=9, protocol=7),
        ProxyHeader(2, "LOCAL", None, None, {}, PEER),
    ),
    "v2-unspec": (v2(family=0, protocol=0), ProxyHeader(2, "PROXY", None, None, {}, PEER)),
    "v2-unspec-with-ignored-bytes": (
        v2(b"\x01\x02\x03", family=0, protocol=0),
        ProxyHeader(2, "PROXY", None, None, {}, PEER),
    ),
    "v2-inet-tlvs": (
        v2(INET + tlv(0x01, b"h2") + tlv(0x02, b"example.com") + tlv(0x05, b"\x00" * 16)),
        ProxyHeader(
            2,
            "PROXY",
            ("192.0.2.1", 51234),
            ("198.51.100.2", 443),
            {0x01: b"h2", 0x02: b"example.com", 0x05: b"\x00" * 16},
            PEER,
        ),
    ),
    "v2-inet-zero-length-tlvs": (
        v2(INET + tlv(0x04, b"") + tlv(0xE0, b"x") + tlv(0x30, b"")),
        ProxyHeader(
            2,
            "PROXY",
            ("192.0.2.1", 51234),
            ("198.51.100.2", 443),
            {0x04: b"", 0xE0: b"x", 0x30: b""},
            PEER,
        ),
    ),
    "v2-inet6-tlvs": (
        v2(INET6 + tlv(0x20, b"\x07\x00\x00\x00\x00") + tlv(0x03, b"\xde\xad\xbe\xef"), family=2),
        ProxyHeader(
            2,
            "PROXY",
            ("2001:db8::1", 51234),
            ("2001:db8::2", 443),
            {0x20: b"\x07\x00\x00\x00\x00", 0x03: b"\xde\xad\xbe\xef"},
            PEER,
        ),
    ),
    "v2-inet-tlv-at-max-length": (
        v2(INET + MAX_TLV),
        ProxyHeader(
            2,
            "PROXY",
            ("192.0.2.1", 51234),
            ("198.51.100.2", 443),
            {0x04: bytes(V2_MAX_LENGTH - len(INET) - 3)},
            PEER,
        ),
    ),
}


@pytest.mark.parametrize("name", list(VALID))
def test_parse_valid_header(name: str) -> None:
    header, expected = VALID[name]
    assert header_length(header) == len(header)
    got = measure_and_parse(header, PEER)
    assert got == expected
    assert got.family == (
        None
        if expected.source is None or expected.source[1] is None
        else ("IPv6" if ":" in expected.source[0] else "IPv4")
    )


@pytest.mark.parametrize("name", list(VALID))
def test_header_length_prefixes_and_payload(name: str) -> None:
    header, _ = VALID[name]
    for size in range(len(header)):
        prefix = header[:size]
        total = header_length(prefix)
        if header.startswith(SIGNATURE) and size >= 16:
            # A v2 prefix shows the length once its 16 bytes came: still
            # never a claim that the prefix is a whole header.
            assert total == len(header), size
        else:
            assert total is None, size
    assert header_length(header) == len(header)
    for payload in (b"x", b"GET / HTTP/1.1\r\n\r\n", b"\r\n" * 80, header, bytes(range(256)) * 10):
        assert header_length(header + payload) == len(header)
        assert parse((header + payload)[: len(header)], PEER) == VALID[name][1]


def test_v1_constants_match_the_spec() -> None:
    assert len(V1_LONGEST) == V1_MAX == 107
    assert V2_MAX_LENGTH >= 216 + 3  # a UNIX block and a TLV fit


def test_parse_without_peer_and_family_property() -> None:
    got = measure_and_parse(v1("TCP6", "2001:db8::1", "2001:db8::2"))
    assert got.peer is None
    assert got.family == "IPv6"
    assert measure_and_parse(v1()).family == "IPv4"
    assert measure_and_parse(v2(UNIX, family=3)).family is None
    assert measure_and_parse(v2(command=0, family=0, protocol=0)).family is None


def test_v1_addresses_are_normalised() -> None:
    got = measure_and_parse(v1("TCP6", "2001:DB8:0:0::1", "2001:db8::2"))
    assert got.source == ("2001:db8::1", 51234)


# -- A. the sans-IO parser: malformed headers --------------------------------------------

GOOD_PORTS = {"sport": 51234, "dport": 443}

MALFORMED: dict[str, bytes] = {
    # not a header at all
    "http-request": b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),
    "single-nul": b"\x00",
    "crlf-then-junk": b"\r\nX",
    # v2: signature, version, command, family, protocol
    "v2-signature-last-byte": SIGNATURE[:11] + b"\x0b" + v2(INET)[12:],
    "v2-signature-quit-lowercase": SIGNATURE.replace(b"QUIT", b"quit") + v2(INET)[12:],
    "v2-signature-missing-nul": SIGNATURE.replace(b"\x00", b"\x01") + v2(INET)[12:],
    "v2-version-0": v2(INET, version=0),
    "v2-version-1": v2(INET, version=1),
    "v2-version-3": v2(INET, version=3),
    "v2-version-15": v2(INET, version=15),
    "v2-command-2": v2(INET, command=2),
    "v2-command-15": v2(INET, command=15),
    "v2-family-4": v2(INET, family=4),
    "v2-family-15": v2(INET, family=15),
    "v2-dgram-inet": v2(INET, protocol=2),
    "v2-dgram-inet6": v2(INET6, family=2, protocol=2),
    "v2-dgram-unix": v2(UNIX, family=3, protocol=2),
    "v2-protocol-unspec-inet": v2(INET, protocol=0),
    "v2-protocol-15": v2(INET, protocol=15),
    # v2: address blocks
    "v2-inet-no-address": v2(b""),
    "v2-inet-address-truncated": v2(INET[:11]),
    "v2-inet6-address-truncated": v2(INET6[:35], family=2),
    "v2-inet6-with-an-inet-block": v2(INET, family=2),
    "v2-unix-address-truncated": v2(UNIX[:215], family=3),
    # v2: TLVs
    "v2-tlv-one-byte": v2(INET + b"\x01"),
    "v2-tlv-two-bytes": v2(INET + b"\x01\x00"),
    "v2-tlv-truncated-after-a-good-one": v2(INET + tlv(0x01, b"h2") + b"\x02\x00"),
    "v2-tlv-longer-than-header": v2(INET + b"\x01\x00\x05abc"),
    "v2-tlv-length-ffff": v2(INET + b"\x02\xff\xff" + b"x" * 10),
    "v2-inet6-tlv-longer-than-header": v2(INET6 + b"\x01\x00\x02a", family=2),
    # v2: length over the bound
    "v2-length-over-limit-prefix-only": v2(length=V2_MAX_LENGTH + 1),
    "v2-length-ffff-prefix-only": v2(length=0xFFFF),
    "v2-length-over-limit-with-body": v2(INET + MAX_TLV + b"\x00"),
    "v2-local-over-limit": v2(bytes(V2_MAX_LENGTH + 1), command=0, family=0, protocol=0),
    # v1: the line
    "v1-no-crlf-in-107-bytes": b"PROXY TCP4 " + b"1" * 96,
    "v1-crlf-ends-at-byte-108": b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n",
    "v1-lf-only-then-http": v1()[:-2] + b"\nGET / HTTP/1.1\r\n\r\n",
    "v1-bare-lf-inside": v1().replace(b" 198.51", b"\n198.51"),
    "v1-bare-cr-inside": v1().replace(b" 198.51", b"\r198.51"),
    "v1-bare-lf-in-unknown": b"PROXY UNKNOWN x\ny\r\n",
    "v1-bare-cr-in-unknown": b"PROXY UNKNOWN x\ry\r\n",
    "v1-cr-before-crlf-in-unknown": b"PROXY UNKNOWN\r\r\n",
    "v1-lf-before-crlf": v1()[:-2] + b"\n\r\n",
    "v1-cr-before-crlf": v1()[:-2] + b"\r\r\n",
    "v1-non-ascii-address": v1().replace(b"192.0.2.1", b"192.0.2.\xb9"),
    "v1-non-ascii-utf8-tail": v1()[:-2] + " é".encode() + b"\r\n",
    "v1-non-ascii-unknown": b"PROXY UNKNOWN \xff\r\n",
    "v1-nul-in-address": v1(src="192.0.2.1\x00"),
    # v1: ports
    "v1-port-alpha": v1(sport="http"),
    "v1-port-plus-sign": v1(sport="+80"),
    "v1-port-minus": v1(dport="-1"),
    "v1-port-hex": v1(dport="0x50"),
    "v1-port-fraction": v1(sport="80.0"),
    "v1-port-unicode-digit": v1(sport="\u0663"),
    "v1-port-65536": v1(sport=65536),
    "v1-port-99999": v1(dport=99999),
    "v1-port-six-digits": v1(sport=100000),
    "v1-port-twenty-digits": v1(dport="1" * 20),
    "v1-port-leading-zero": v1(sport="080"),
    "v1-port-double-zero": v1(dport="00"),
    "v1-port-leading-zero-max": v1(dport="065535"),
    "v1-port-empty": v1(sport=""),
    # v1: addresses
    "v1-tcp4-with-ipv6-source": v1("TCP4", "2001:db8::1", "198.51.100.2"),
    "v1-tcp4-with-ipv6-destination": v1("TCP4", "192.0.2.1", "2001:db8::2"),
    "v1-tcp4-with-ipv6-both": v1("TCP4", "2001:db8::1", "2001:db8::2"),
    "v1-tcp6-with-ipv4-both": v1("TCP6", "192.0.2.1", "198.51.100.2"),
    "v1-tcp6-with-ipv4-destination": v1("TCP6", "2001:db8::1", "198.51.100.2"),
    "v1-tcp4-three-octets": v1(src="192.0.2"),
    "v1-tcp4-octet-256": v1(dst="256.0.0.1"),
    "v1-tcp4-leading-zero-octet": v1(src="192.0.02.1"),
    "v1-tcp4-hostname": v1(src="localhost"),
    "v1-tcp6-triple-colon": v1("TCP6", "2001:db8:::1", "2001:db8::2"),
    "v1-tcp4-empty-address": v1(src=""),
    # v1: fields
    "v1-too-few-fields": b"PROXY TCP4 192.0.2.1 198.51.100.2 51234\r\n",
    "v1-protocol-only": b"PROXY TCP4\r\n",
    "v1-empty-protocol": b"PROXY \r\n",
    "v1-proxy-crlf": b"PROXY\r\n",
    "v1-too-many-fields": v1()[:-2] + b" extra\r\n",
    "v1-trailing-space": v1()[:-2] + b" \r\n",
    "v1-double-space": v1().replace(b"PROXY ", b"PROXY  "),
    "v1-tab-separator": v1().replace(b"PROXY ", b"PROXY\t"),
    "v1-protocol-tcp5": v1("TCP5"),
    "v1-protocol-udp4": v1("UDP4"),
    "v1-protocol-lowercase": v1("tcp4"),
    "v1-protocol-unknown-suffix": v1("UNKNOWN4"),
    "v1-lowercase-proxy": v1().replace(b"PROXY", b"proxy"),
    "v1-mixed-case-proxy": v1().replace(b"PROXY", b"Proxy"),
    "v1-no-space-after-proxy": v1().replace(b"PROXY ", b"PROXY"),
    "v1-leading-space": b" " + v1(),
}

#: Headers cut short by the end of the connection (complete data would need more).
TRUNCATED: dict[str, bytes] = {
    "nothing": b"",
    "v1-first-byte": b"P",
    "v1-half": v1()[:20],
    "v1-missing-lf": v1()[:-1],
    "v2-first-two-bytes": SIGNATURE[:2],
    "v2-signature-only": SIGNATURE,
    "v2-prefix-15-bytes": v2(INET)[:15],
    "v2-address-cut": v2(INET)[:20],
    "v2-tlv-cut": v2(INET + tlv(0x02, b"example.com"))[:-3],
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_parse_malformed_header(name: str) -> None:
    data = MALFORMED[name]
    with pytest.raises(ValueError) as caught:
        measure_and_parse(data, PEER)
    assert_proxy_error(caught.value)


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_header_is_decided_by_its_bytes(name: str) -> None:
    """No malformed case makes a reader wait for more: ``header_length`` of
    the bytes raises, or measures a header they hold (then ``parse`` raises)."""
    data = MALFORMED[name]
    try:
        total = header_length(data)
    except ValueError as exc:
        assert_proxy_error(exc)
        return
    assert total is not None
    assert total <= len(data)


@pytest.mark.parametrize("name", list(TRUNCATED))
def test_truncated_header_wants_more_bytes(name: str) -> None:
    data = TRUNCATED[name]
    total = header_length(data)
    assert total is None or total > len(data)


@pytest.mark.parametrize("data", [SIGNATURE, SIGNATURE + b"\x21"], ids=["12-bytes", "13-bytes"])
def test_parse_short_v2_signature_is_value_error(data: bytes) -> None:
    # parse() is public (in __all__) and its module promises that every
    # malformed header is a ValueError with .code ERR_PROXY_PROTOCOL.
    with pytest.raises(ValueError) as caught:
        parse(data)
    assert_proxy_error(caught.value)


def test_parse_short_v2_prefix_of_14_or_15_bytes_is_value_error() -> None:
    for data in (v2(INET)[:14], v2(INET)[:15]):
        with pytest.raises(ValueError) as caught:
            parse(data)
        assert_proxy_error(caught.value)


# -- A. trusted networks ------------------------------------------------------------------


def test_trusted_networks_and_is_trusted() -> None:
    assert trusted_networks(None) is None
    nets = trusted_networks(
        ["10.0.0.0/8", ipaddress.ip_network("::1/128"), ipaddress.ip_address("192.0.2.7")]
    )
    assert nets is not None
    assert is_trusted(nets, ("10.9.8.7", 1))
    assert is_trusted(nets, ("::1", 1, 0, 0))
    assert is_trusted(nets, ("192.0.2.7", 1))
    assert is_trusted(nets, ("::ffff:10.1.1.1", 1, 0, 0))  # IPv4-mapped
    assert not is_trusted(nets, ("127.0.0.1", 1))
    assert not is_trusted(nets, ("192.0.2.8", 1))
    assert is_trusted(None, ("203.0.113.1", 1))
    assert is_trusted(nets, "")  # a UNIX-socket peer
    assert trusted_networks([]) == ()
    assert not is_trusted((), ("127.0.0.1", 1))
    for bad in ("10.0.0.0/8", b"10.0.0.0/8", 10, [10]):
        with pytest.raises(TypeError):
            trusted_networks(bad)
    with pytest.raises(ValueError):
        trusted_networks(["10.0.0.1/8"])  # host bits set
    with pytest.raises(ValueError):
        trusted_networks(["not a network"])


def test_proxy_trusted_checked_by_create_server() -> None:
    with pytest.raises(TypeError):
        net.create_server(proxy_protocol=True, proxy_trusted="10.0.0.0/8")
    with pytest.raises(ValueError):
        net.create_server(proxy_protocol=True, proxy_trusted=["10.0.0.300/8"])


# -- B. real sockets: helpers ---------------------------------------------------------------


class Harness:
    """One proxy_protocol server's events, in order: ('connection', stream)
    and ('clientError', exc, info); each stream's data and end."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.streams: list[net.Stream] = []
        self.data: dict[net.Stream, bytearray] = {}
        self.chunks: dict[net.Stream, list[bytes]] = {}
        self.ended: set[net.Stream] = set()
        self.port = 0
        self.server: net.Server | None = None

    def on_connection(self, stream: net.Stream) -> None:
        self.events.append(("connection", stream))
        self.streams.append(stream)
        data = self.data[stream] = bytearray()
        chunks = self.chunks[stream] = []

        def on_data(chunk: bytes) -> None:
            data.extend(chunk)
            chunks.append(bytes(chunk))

        def on_end() -> None:
            self.ended.add(stream)
            stream.end()  # allow_half_open is True by default

        stream.on("data", on_data)
        stream.on("end", on_end)

    def on_client_error(self, exc: BaseException, info: dict[str, Any]) -> None:
        self.events.append(("clientError", exc, info))

    @property
    def errors(self) -> list[tuple[Any, ...]]:
        return [event for event in self.events if event[0] == "clientError"]

    @property
    def connections(self) -> list[tuple[Any, ...]]:
        return [event for event in self.events if event[0] == "connection"]


@asynccontextmanager
async def proxy_server(**options: Any) -> AsyncIterator[Harness]:
    harness = Harness()
    options.setdefault("handshake_timeout", 5000)
    async with net.create_server(harness.on_connection, proxy_protocol=True, **options) as server:
        server.on("clientError", harness.on_client_error)
        await server.listen(0, LOOPBACK)
        address = server.address()
        assert isinstance(address, tuple)
        harness.port = address[1]
        harness.server = server
        try:
            yield harness
        finally:
            server.close()
            for stream in server.streams:  # a failed test must not hang the block
                stream.destroy()


async def wait_until(predicate: Callable[[], object]) -> None:
    """Poll until *predicate* holds (listeners set what it looks at), 5 s at most."""
    with trio.fail_after(5):
        while not predicate():  # noqa: ASYNC110  # polling listeners' results
            await trio.sleep(0.002)


async def connect(port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.connect((LOOPBACK, port))
    return sock


async def send_all(sock: trio.socket.SocketType, data: bytes) -> bool:
    """Send *data*; ``False`` if the server closed first (not an error here)."""
    view = memoryview(data)
    try:
        while view:
            view = view[await sock.send(view) :]
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


async def until_closed(sock: trio.socket.SocketType) -> str:
    """Wait for the server to close the connection: ``"eof"`` (FIN) or
    ``"reset"`` (RST: it closed with bytes it had not read)."""
    try:
        chunk = await sock.recv(65536)
    except ConnectionResetError:
        return "reset"
    assert chunk == b"", f"the server sent {chunk!r}"
    return "eof"


def real_info(port: int, peer_port: int) -> dict[str, Any]:
    return {
        "local_address": LOOPBACK,
        "local_port": port,
        "local_family": "IPv4",
        "remote_address": LOOPBACK,
        "remote_port": peer_port,
        "remote_family": "IPv4",
    }


def assert_nothing_logged(caplog: pytest.LogCaptureFixture) -> None:
    logged = [
        record
        for record in caplog.records
        if record.name.startswith("trio_netstream") and record.levelno >= logging.WARNING
    ]
    assert not logged, [record.getMessage() for record in logged]


async def assert_serves(harness: Harness, payload: bytes = b"still serving") -> net.Stream:
    """A valid connection now: 'connection', the client's address, its data."""
    before = len(harness.streams)
    peer = await connect(harness.port)
    with peer:
        assert await send_all(peer, v1(sport=40000 + before) + payload)
        await wait_until(
            lambda: (
                len(harness.streams) > before and harness.data[harness.streams[before]] == payload
            )
        )
    stream = harness.streams[before]
    assert (stream.remote_address, stream.remote_port) == ("192.0.2.1", 40000 + before)
    return stream


async def bad_peer(harness: Harness, data: bytes, *, eof: bool = False) -> tuple[int, str]:
    """A raw peer sends *data* (then EOF if *eof*) and waits for the server
    to close; returns its own port and how the server closed."""
    errors = len(harness.errors)
    with await connect(harness.port) as peer:
        peer_port = peer.getsockname()[1]
        await send_all(peer, data)
        if eof:
            peer.shutdown(socket.SHUT_WR)
        closed = await until_closed(peer)
    await wait_until(lambda: len(harness.errors) > errors)
    return peer_port, closed


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="trio_netstream")
    return caplog


# -- B. real sockets: malformed, truncated, refused, late --------------------------------


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_socket_malformed_header_is_one_client_error(
    name: str, quiet: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(LIMIT):
        async with proxy_server() as harness:
            peer_port, _ = await bad_peer(harness, MALFORMED[name])
            await trio.testing.wait_all_tasks_blocked(0.01)
            [(_, exc, info)] = harness.events
            assert_proxy_error(exc)
            assert info == real_info(harness.port, peer_port)
            await assert_serves(harness)
            assert len(harness.errors) == 1
            assert len(harness.connections) == 1
    assert_nothing_logged(quiet)


@pytest.mark.parametrize("name", list(TRUNCATED))
async def test_socket_header_cut_by_eof_is_one_client_error(
    name: str, quiet: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(LIMIT):
        async with proxy_server() as harness:
            peer_port, closed = await bad_peer(harness, TRUNCATED[name], eof=True)
            assert closed == "eof"  # every byte sent was read as part of the header
            await trio.testing.wait_all_tasks_blocked(0.01)
            [(_, exc, info)] = harness.events
            assert_proxy_error(exc)
            assert info == real_info(harness.port, peer_port)
            await assert_serves(harness)
            assert len(harness.errors) == 1
    assert_nothing_logged(quiet)


async def test_socket_bad_header_with_no_client_error_listener(
    quiet: pytest.LogCaptureFixture,
) -> None:
    seen: list[net.Stream] = []

    def on_connection(stream: net.Stream) -> None:
        seen.append(stream)
        stream.on("end", stream.end)  # allow_half_open is True by default
        stream.resume()  # flowing: it sees the peer's EOF

    with trio.fail_after(LIMIT):
        async with net.create_server(on_connection, proxy_protocol=True) as server:
            await server.listen(0, LOOPBACK)
            address = server.address()
            assert isinstance(address, tuple)
            with await connect(address[1]) as peer:
                await send_all(peer, b"GET / HTTP/1.1\r\n\r\n")
                assert await until_closed(peer) == "reset"
            with await connect(address[1]) as peer:
                await send_all(peer, v1() + b"ok")
                await wait_until(lambda: seen)
            server.close()
    assert len(seen) == 1
    assert_nothing_logged(quiet)


async def test_refused_source_is_permission_error_before_reading(
    quiet: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(LIMIT):
        async with proxy_server(proxy_trusted=["10.0.0.0/8"]) as harness:
            # A peer that sends nothing: refused all the same (nothing is awaited).
            peer_port, closed = await bad_peer(harness, b"")
            assert closed == "eof"
            [(_, exc, info)] = harness.events
            assert type(exc) is PermissionError
            assert LOOPBACK in str(exc)
            assert info == real_info(harness.port, peer_port)

            # A peer whose valid header is in the kernel before the server
            # accepts: the server closes without reading it, so the kernel
            # resets the connection (a read header would give a plain FIN).
            raw = socket.create_connection((LOOPBACK, harness.port))
            raw.sendall(v1() + b"payload")
            with trio.socket.from_stdlib_socket(raw) as peer:
                peer_port = peer.getsockname()[1]
                assert await until_closed(peer) == "reset"
            await wait_until(lambda: len(harness.errors) == 2)
            [_, (_, exc, info)] = harness.events
            assert type(exc) is PermissionError
            assert info == real_info(harness.port, peer_port)
            await trio.testing.wait_all_tasks_blocked(0.01)
            assert not harness.connections
    assert_nothing_logged(quiet)


@pytest.mark.parametrize(
    "trusted",
    [
        ["127.0.0.0/8"],
        ["10.0.0.0/8", ipaddress.ip_network("127.0.0.1/32")],
        [ipaddress.ip_address("127.0.0.1")],
        ("::1/128", "127.0.0.1"),
    ],
)
async def test_trusted_source_is_served(
    trusted: list[Any], quiet: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(LIMIT):
        async with proxy_server(proxy_trusted=trusted) as harness:
            stream = await assert_serves(harness)
            assert stream.proxy is not None
            assert stream.proxy.peer is not None
            assert stream.proxy.peer[0] == LOOPBACK
            assert not harness.errors
    assert_nothing_logged(quiet)


@pytest.mark.parametrize(
    "sent",
    [b"", b"PROXY TCP4 192.0.2.1 ", SIGNATURE[:7], v2(INET)[:16], v2(INET)[:20]],
    ids=["silent", "v1-partial", "v2-signature-partial", "v2-prefix-only", "v2-address-partial"],
)
async def test_no_header_within_handshake_timeout(
    sent: bytes, quiet: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(LIMIT):
        async with proxy_server(handshake_timeout=200) as harness:
            with await connect(harness.port) as peer:
                peer_port = peer.getsockname()[1]
                start = trio.current_time()
                await send_all(peer, sent)
                await wait_until(lambda: harness.errors)
                elapsed = trio.current_time() - start
                assert await until_closed(peer) == "eof"
            [(_, exc, info)] = harness.events
            assert isinstance(exc, TimeoutError)
            assert "200" in str(exc)
            assert info == real_info(harness.port, peer_port)
            assert 0.15 <= elapsed < 3, elapsed
            await assert_serves(harness)
            assert len(harness.errors) == 1
    assert_nothing_logged(quiet)


# -- B. real sockets: valid headers ---------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
async def test_header_sent_one_byte_at_a_time(
    version: int, quiet: pytest.LogCaptureFixture
) -> None:
    header = v1() if version == 1 else v2(INET + tlv(0x02, b"example.com"))
    payload = b"GET / HTTP/1.1\r\n\r\n"
    with trio.fail_after(LIMIT):
        async with proxy_server(handshake_timeout=10_000) as harness:
            with await connect(harness.port) as peer:
                for byte in header[:-1]:
                    assert await send_all(peer, bytes([byte]))
                    await trio.sleep(0.003)
                assert not harness.events  # not a whole header yet
                assert await send_all(peer, header[-1:])
                await wait_until(lambda: harness.streams)
                await trio.sleep(0.01)
                assert await send_all(peer, payload)
                await wait_until(lambda: harness.streams and harness.data[harness.streams[0]])
                await wait_until(lambda: harness.data[harness.streams[0]] == payload)
            [stream] = harness.streams
            assert stream.proxy is not None
            assert stream.proxy.source == ("192.0.2.1", 51234)
            assert (stream.remote_address, stream.remote_port) == ("192.0.2.1", 51234)
            assert not harness.errors
    assert_nothing_logged(quiet)


SAME_PACKET_PAYLOADS = {
    "http": b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "one-byte": b"x",
    "another-v1-header": v1(src="203.0.113.9"),
    "another-v2-header": v2(INET),
    "binary": bytes(range(256)) * 40,
}


SAME_PACKET_HEADERS = {
    "v1": v1(),
    "v2": v2(INET + tlv(0x01, b"h2")),
    "v2-max-length": v2(INET + MAX_TLV),
}


@pytest.mark.parametrize("payload_name", list(SAME_PACKET_PAYLOADS))
@pytest.mark.parametrize("header_name", list(SAME_PACKET_HEADERS))
async def test_bytes_after_header_in_same_packet_are_first_data(
    header_name: str, payload_name: str, quiet: pytest.LogCaptureFixture
) -> None:
    header = SAME_PACKET_HEADERS[header_name]
    payload = SAME_PACKET_PAYLOADS[payload_name]
    with trio.fail_after(LIMIT):
        async with proxy_server() as harness:
            with await connect(harness.port) as peer:
                assert await send_all(peer, header + payload)
                peer.shutdown(socket.SHUT_WR)
                await wait_until(lambda: harness.streams and harness.streams[0] in harness.ended)
            [stream] = harness.streams
            chunks = harness.chunks[stream]
            assert b"".join(chunks) == payload
            assert chunks[0] == payload[: len(chunks[0])]
            assert stream.proxy is not None
            assert stream.proxy.source == ("192.0.2.1", 51234)  # the first header only
            assert not harness.errors
    assert_nothing_logged(quiet)


SOCKET_VALID = {
    "v1-tcp4": (v1(), ("192.0.2.1", 51234, "IPv4")),
    "v1-tcp6": (v1("TCP6", "2001:db8::1", "2001:db8::2", 1, 2), ("2001:db8::1", 1, "IPv6")),
    "v1-unknown": (b"PROXY UNKNOWN\r\n", None),
    "v2-inet-tlvs": (
        v2(inet("203.0.113.5", "198.51.100.2", 65535, 443) + tlv(0x02, b"a.example") + tlv(5, b"")),
        ("203.0.113.5", 65535, "IPv4"),
    ),
    "v2-inet6": (v2(inet6("2001:db8::7", "::1", 0, 443), family=2), ("2001:db8::7", 0, "IPv6")),
    "v2-local": (v2(INET, command=0), None),
    "v2-unspec": (v2(family=0, protocol=0), None),
}


@pytest.mark.parametrize("name", list(SOCKET_VALID))
async def test_remote_address_and_stream_proxy(name: str, quiet: pytest.LogCaptureFixture) -> None:
    header, remote = SOCKET_VALID[name]
    expected = parse(header)
    with trio.fail_after(LIMIT):
        async with proxy_server() as harness:
            with await connect(harness.port) as peer:
                peer_port = peer.getsockname()[1]
                assert await send_all(peer, header)
                await wait_until(lambda: harness.streams)
                [stream] = harness.streams
                proxy = stream.proxy
                assert proxy is not None
                assert proxy.version == expected.version
                assert proxy.command == expected.command
                assert proxy.source == expected.source
                assert proxy.destination == expected.destination
                assert proxy.tlvs == expected.tlvs
                assert proxy.peer == (LOOPBACK, peer_port)
                if remote is None:  # LOCAL, UNKNOWN, UNSPEC: the real peer
                    remote = (LOOPBACK, peer_port, "IPv4")
                got = (stream.remote_address, stream.remote_port, stream.remote_family)
                assert got == remote
                assert (stream.local_address, stream.local_port) == (LOOPBACK, harness.port)
            await wait_until(lambda: stream in harness.ended)
            assert not harness.errors
    assert_nothing_logged(quiet)


async def test_v2_unix_source_in_stream_proxy(quiet: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(LIMIT):
        async with proxy_server() as harness:
            with await connect(harness.port) as peer:
                assert await send_all(peer, v2(UNIX, family=3) + b"hi")
                await wait_until(lambda: harness.streams and harness.data[harness.streams[0]])
            [stream] = harness.streams
            assert stream.proxy is not None
            assert stream.proxy.source == ("/run/client.sock", None)
            assert stream.proxy.destination == ("/run/server.sock", None)
            assert harness.data[stream] == b"hi"
    assert_nothing_logged(quiet)


async def test_server_without_proxy_protocol_has_no_proxy() -> None:
    streams: list[net.Stream] = []

    def on_connection(stream: net.Stream) -> None:
        streams.append(stream)
        stream.on("end", stream.end)
        stream.resume()

    with trio.fail_after(LIMIT):
        async with net.create_server(on_connection) as server:
            await server.listen(0, LOOPBACK)
            address = server.address()
            assert isinstance(address, tuple)
            with await connect(address[1]) as peer:
                await send_all(peer, v1())
                await wait_until(lambda: streams)
                assert streams[0].proxy is None
                assert streams[0].remote_address == LOOPBACK
            server.close()


async def test_stalled_balancers_do_not_block_the_accept_loop(
    quiet: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(LIMIT):
        async with proxy_server(handshake_timeout=1500) as harness:
            stalled = []
            for partial in (b"PROXY TCP4 192.0.2.1 198.5", v2(INET)[:18], b""):
                sock = await connect(harness.port)
                await send_all(sock, partial)
                stalled.append(sock)
            await trio.sleep(0.05)
            start = trio.current_time()
            peers = []
            for index in range(20):
                peer = await connect(harness.port)
                assert await send_all(peer, v1(sport=1000 + index) + b"%d" % index)
                peers.append(peer)
            await wait_until(lambda: len(harness.connections) == 20)
            assert trio.current_time() - start < 1.0
            assert not harness.errors
            assert sorted(s.remote_port for s in harness.streams) == list(range(1000, 1020))
            for stream in harness.streams:
                await wait_until(
                    lambda s=stream: bytes(harness.data[s]) == b"%d" % (s.remote_port - 1000)
                )
            for peer in peers:
                peer.close()
            await wait_until(lambda: len(harness.errors) == 3)
            assert [event[0] for event in harness.events] == ["connection"] * 20 + [
                "clientError"
            ] * 3
            assert all(isinstance(event[1], TimeoutError) for event in harness.errors)
            for sock in stalled:
                assert await until_closed(sock) == "eof"
                sock.close()
    assert_nothing_logged(quiet)


async def test_bad_headers_count_toward_no_connection_limit(
    quiet: pytest.LogCaptureFixture,
) -> None:
    drops: list[Any] = []
    with trio.fail_after(LIMIT):
        async with proxy_server(max_connections=1) as harness:
            assert harness.server is not None
            harness.server.on("drop", drops.append)
            for data in (b"junk\r\n", v2(INET, version=1), v1(sport="x")):
                await bad_peer(harness, data)
            await assert_serves(harness)
            assert len(harness.errors) == 3
            assert not drops
    assert_nothing_logged(quiet)


async def test_close_cancels_pending_header_reads(quiet: pytest.LogCaptureFixture) -> None:
    # The default handshake_timeout is 120 s: close() must not wait for it.
    with trio.fail_after(LIMIT):
        async with proxy_server(handshake_timeout=120_000) as harness:
            stalled = [await connect(harness.port) for _ in range(3)]
            await send_all(stalled[0], b"PROXY TCP4 ")
            await send_all(stalled[1], v2(INET)[:20])
            await trio.sleep(0.05)
            assert harness.server is not None
            harness.server.close()
            for sock in stalled:
                assert await until_closed(sock) in ("eof", "reset")
                sock.close()
        assert not harness.connections
    assert_nothing_logged(quiet)


async def test_peer_reset_inside_header(quiet: pytest.LogCaptureFixture) -> None:
    """A balancer that resets mid-header: no 'connection', nothing logged
    (a 'clientError' for it is allowed), and the server goes on."""
    with trio.fail_after(LIMIT):
        async with proxy_server() as harness:
            with await connect(harness.port) as peer:
                await send_all(peer, b"PROXY TCP4 192.0.2.1")
                await trio.sleep(0.05)
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await trio.sleep(0.1)
            await trio.testing.wait_all_tasks_blocked(0.01)
            assert not harness.connections
            assert len(harness.errors) <= 1
            for _, exc, _info in harness.errors:
                assert isinstance(exc, (ValueError, OSError))
            await assert_serves(harness)
    assert_nothing_logged(quiet)


async def test_dual_stack_listener_trusts_ipv4_mapped_peer(
    quiet: pytest.LogCaptureFixture,
) -> None:
    if not IPV6:
        pytest.skip("IPv6 loopback (::1) cannot be bound on this host")
    seen: list[net.Stream] = []
    errors: list[Any] = []

    def on_connection(stream: net.Stream) -> None:
        seen.append(stream)
        stream.on("end", stream.end)
        stream.resume()

    with trio.fail_after(LIMIT):
        for trusted, served in ((["127.0.0.0/8"], True), (["10.0.0.0/8"], False)):
            async with net.create_server(
                on_connection, proxy_protocol=True, proxy_trusted=trusted
            ) as server:
                server.on("clientError", lambda exc, info: errors.append((exc, info)))
                await server.listen(0, "::", ipv6_only=False)
                address = server.address()
                assert isinstance(address, tuple)
                count = len(seen), len(errors)
                with await connect(address[1]) as peer:  # over IPv4
                    await send_all(peer, v1())
                    await wait_until(lambda c=count: (len(seen), len(errors)) != c)
                server.close()
            if served:
                assert len(seen) == 1
                assert seen[-1].remote_address == "192.0.2.1"
            else:
                assert len(errors) == 1
                assert type(errors[-1][0]) is PermissionError
    assert_nothing_logged(quiet)


async def test_header_before_tls_client_hello(quiet: pytest.LogCaptureFixture) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    secured: list[net.Stream] = []
    with trio.fail_after(LIMIT):
        async with proxy_server(ssl=server_ctx) as harness:
            assert harness.server is not None
            harness.server.on("secureConnection", secured.append)
            sock = await connect(harness.port)
            assert await send_all(sock, v2(INET + tlv(0x01, b"h2")))
            tls = trio.SSLStream(trio.SocketStream(sock), client_ctx, server_hostname="localhost")
            await tls.do_handshake()
            await tls.send_all(b"over TLS")
            await wait_until(lambda: harness.streams and harness.data[harness.streams[0]])
            await wait_until(lambda: bytes(harness.data[harness.streams[0]]) == b"over TLS")
            [stream] = harness.streams
            assert secured == [stream]
            assert (stream.remote_address, stream.remote_port) == ("192.0.2.1", 51234)
            assert stream.proxy is not None
            assert stream.proxy.tlvs == {0x01: b"h2"}
            await tls.aclose()
            assert not harness.errors
    assert_nothing_logged(quiet)


async def test_descriptors_back_to_baseline_after_bad_peers(
    quiet: pytest.LogCaptureFixture,
) -> None:
    def open_fds() -> int:
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    with trio.fail_after(30):
        async with proxy_server() as harness:  # warm up whatever is made once
            await assert_serves(harness)
            await bad_peer(harness, b"junk")
        baseline = open_fds()
        async with proxy_server(handshake_timeout=150) as harness:
            for data in MALFORMED.values():
                await bad_peer(harness, data)
            for data in TRUNCATED.values():
                await bad_peer(harness, data, eof=True)
            await bad_peer(harness, b"PROXY ")  # late
            await assert_serves(harness)
            expected = len(MALFORMED) + len(TRUNCATED) + 1
            assert len(harness.errors) == expected
        async with proxy_server(proxy_trusted=["10.0.0.0/8"]) as harness:
            for _ in range(10):
                await bad_peer(harness, v1())
        assert open_fds() == baseline
    assert_nothing_logged(quiet)


# -- C. hypothesis --------------------------------------------------------------------------

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)

ports = st.integers(0, 65535)
ipv4s = st.ip_addresses(v=4)
ipv6s = st.ip_addresses(v=6)
tlv_lists = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=40)),
    max_size=6,
    unique_by=lambda item: item[0],
)
unix_paths = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=108
)
v1_tails = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=91)

KINDS = (
    "v1-tcp4",
    "v1-tcp6",
    "v1-unknown",
    "v2-inet",
    "v2-inet6",
    "v2-unix",
    "v2-local",
    "v2-unspec",
    "v2-inet-max-length",
)


@st.composite
def valid_headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    """A valid header and what it says (``peer`` left out)."""
    kind = draw(st.sampled_from(KINDS))
    if kind in ("v1-tcp4", "v1-tcp6"):
        addresses = ipv4s if kind == "v1-tcp4" else ipv6s
        src, dst = str(draw(addresses)), str(draw(addresses))
        sport, dport = draw(ports), draw(ports)
        header = v1(kind[3:].upper(), src, dst, sport, dport)
        return header, ProxyHeader(1, "PROXY", (src, sport), (dst, dport))
    if kind == "v1-unknown":
        tail = draw(v1_tails)
        header = b"PROXY UNKNOWN" + (b" " + tail.encode() if tail else b"") + b"\r\n"
        return header, ProxyHeader(1, "PROXY", None, None)
    if kind in ("v2-local", "v2-unspec"):
        body = draw(st.binary(max_size=64))
        if kind == "v2-local":
            family, protocol = draw(st.integers(0, 15)), draw(st.integers(0, 15))
            header = v2(body, command=0, family=family, protocol=protocol)
            return header, ProxyHeader(2, "LOCAL", None, None)
        header = v2(body, family=0, protocol=draw(st.integers(0, 15)))
        return header, ProxyHeader(2, "PROXY", None, None)
    if kind == "v2-inet-max-length":
        src, dst = str(draw(ipv4s)), str(draw(ipv4s))
        sport, dport = draw(ports), draw(ports)
        kind_, fill = draw(st.integers(0, 255)), draw(st.integers(0, 255))
        value = bytes([fill]) * (V2_MAX_LENGTH - len(INET) - 3)
        header = v2(inet(src, dst, sport, dport) + tlv(kind_, value))
        return header, ProxyHeader(2, "PROXY", (src, sport), (dst, dport), {kind_: value})
    tlvs = draw(tlv_lists)
    tail = b"".join(tlv(kind_, value) for kind_, value in tlvs)
    expected_tlvs = dict(tlvs)
    if kind == "v2-unix":
        src, dst = draw(unix_paths), draw(unix_paths)
        header = v2(unix(src.encode(), dst.encode()) + tail, family=3)
        return header, ProxyHeader(2, "PROXY", (src, None), (dst, None), expected_tlvs)
    sport, dport = draw(ports), draw(ports)
    if kind == "v2-inet":
        src, dst = str(draw(ipv4s)), str(draw(ipv4s))
        header = v2(inet(src, dst, sport, dport) + tail)
    else:
        src, dst = str(draw(ipv6s)), str(draw(ipv6s))
        header = v2(inet6(src, dst, sport, dport) + tail, family=2)
    return header, ProxyHeader(2, "PROXY", (src, sport), (dst, dport), expected_tlvs)


def assert_same_header(got: ProxyHeader, want: ProxyHeader) -> None:
    assert (got.version, got.command) == (want.version, want.command)
    for have, should in ((got.source, want.source), (got.destination, want.destination)):
        if should is None or should[1] is None:
            assert have == should
        else:
            assert have is not None
            assert isinstance(have[0], str)
            assert ipaddress.ip_address(have[0]) == ipaddress.ip_address(should[0])
            assert have[1] == should[1]
    if want.version == 2 and want.source is not None:
        assert got.tlvs == want.tlvs
    elif want.version == 1:
        assert got.tlvs == {}


@st.composite
def mutated_headers(draw: st.DrawFn) -> bytes:
    header, _ = draw(valid_headers())
    data = bytearray(header)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, len(data)))
        if action == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif at < len(data):
            del data[at]
    return bytes(data) + draw(st.binary(max_size=20))


@st.composite
def v2_random_bodies(draw: st.DrawFn) -> bytes:
    body = draw(st.binary(max_size=300))
    return (
        SIGNATURE
        + draw(st.binary(min_size=2, max_size=2))
        + len(body).to_bytes(2, "big")
        + body
        + draw(st.binary(max_size=10))
    )


ascii_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=120)

garbage = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=200).map(lambda tail: SIGNATURE + tail),
    v2_random_bodies(),
    ascii_text.map(lambda text: b"PROXY " + text.encode()),
    st.tuples(ascii_text, st.integers(0, 110)).map(
        lambda pair: b"PROXY " + pair[0].encode()[: pair[1]] + b"\r\n"
    ),
    st.lists(
        st.sampled_from(
            ["TCP4", "TCP6", "UNKNOWN", "1.2.3.4", "::1", "80", "0", "65536", " ", "x"]
        ),
        max_size=8,
    ).map(lambda words: ("PROXY " + " ".join(words) + "\r\n").encode()),
    mutated_headers(),
)


def model_outcome(data: bytes) -> str:
    """What a server makes of *data* followed by EOF: "valid" or "invalid"."""
    try:
        total = header_length(data)
        if total is None or total > len(data):
            return "invalid"  # cut short by the EOF
        parse(data[:total])
    except ValueError:
        return "invalid"
    return "valid"


@settings(FUZZ, max_examples=1500)
@given(data=garbage)
def test_fuzz_parser_raises_only_its_value_error(data: bytes) -> None:
    try:
        total = header_length(data)
    except ValueError as exc:
        assert_proxy_error(exc)
        return
    if total is None:
        assert len(data) < V1_MAX
        return
    assert total >= 16 if data.startswith(SIGNATURE) else 8 <= total <= V1_MAX
    if total <= len(data):
        try:
            got = parse(data[:total], PEER)
        except ValueError as exc:
            assert_proxy_error(exc)
        else:
            assert got.version in (1, 2)
            assert got.command in ("PROXY", "LOCAL")
            assert got.peer == PEER
    # parse() of the unmeasured bytes: only the ValueError too.
    try:
        parse(data)
    except ValueError as exc:
        assert_proxy_error(exc)


@settings(FUZZ, max_examples=500)
@given(case=valid_headers())
def test_fuzz_valid_headers_parse_to_what_they_say(case: tuple[bytes, ProxyHeader]) -> None:
    header, expected = case
    assert header_length(header) == len(header)
    assert_same_header(measure_and_parse(header, PEER), expected)


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[start:stop] for start, stop in itertools.pairwise(bounds)]


def model_read_header(arrivals: list[bytes]) -> tuple[bytes, bytes]:
    """read_header's loop over a kernel buffer the *arrivals* fill one at a
    time: peek, measure, take the header only, or take all that came.
    Returns the header and what is left for the stream."""
    pending = list(arrivals)
    kernel = bytearray()
    taken = bytearray()
    while True:
        if not kernel:
            if not pending:
                raise EOFError
            kernel += pending.pop(0)
            continue
        seen = bytes(kernel[: 16 + V2_MAX_LENGTH - len(taken)])  # MSG_PEEK
        data = bytes(taken) + seen
        total = header_length(data)
        if total is not None and len(data) >= total:
            count = total - len(taken)
            taken += kernel[:count]
            del kernel[:count]
            return bytes(taken), bytes(kernel) + b"".join(pending)
        taken += seen
        del kernel[: len(seen)]


@settings(FUZZ, max_examples=800)
@given(
    case=valid_headers(),
    payload=st.binary(max_size=400),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
)
def test_fuzz_peek_consume_model_takes_exactly_the_header(
    case: tuple[bytes, ProxyHeader], payload: bytes, cuts: list[int]
) -> None:
    header, expected = case
    got, rest = model_read_header(cut(header + payload, cuts))
    assert got == header
    assert rest == payload
    assert_same_header(parse(got), expected)


async def _read_over_socketpair(chunks: list[bytes]) -> tuple[bytes, bytes]:
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    with reader, writer:
        async with trio.open_nursery() as nursery:

            async def write() -> None:
                for chunk in chunks:
                    writer.sendall(chunk)  # small: the socket buffer takes it
                    await trio.sleep(0.0005)
                writer.shutdown(socket.SHUT_WR)

            nursery.start_soon(write)
            header = await read_header(reader)
        rest = bytearray()
        while True:
            try:
                chunk = reader.recv(65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(reader)
                continue
            if not chunk:
                return header, bytes(rest)
            rest += chunk


@settings(FUZZ, max_examples=150)
@given(
    case=valid_headers(),
    payload=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 3000), max_size=8),
)
def test_fuzz_read_header_over_socketpair_leaves_the_payload(
    case: tuple[bytes, ProxyHeader], payload: bytes, cuts: list[int]
) -> None:
    header, _ = case
    got, rest = trio.run(_read_over_socketpair, cut(header + payload, cuts))
    assert got == header
    assert rest == payload


async def test_read_header_eof_inside_header_is_value_error() -> None:
    for data in (b"", v1()[:10], v2(INET)[:20]):
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        with reader, writer:
            writer.sendall(data)
            writer.shutdown(socket.SHUT_WR)
            with pytest.raises(ValueError) as caught:
                await read_header(reader)
            assert_proxy_error(caught.value)
            assert "ended" in str(caught.value)


async def _send_chunks(
    peer: trio.socket.SocketType, chunks: list[bytes], delays: list[float]
) -> None:
    for index, chunk in enumerate(chunks):
        if not await send_all(peer, chunk):
            return
        await trio.sleep(delays[index % len(delays)] if delays else 0)


async def _valid_exchange(
    header: bytes, expected: ProxyHeader, payload: bytes, chunks: list[bytes], delays: list[float]
) -> None:
    with trio.fail_after(LIMIT):
        async with proxy_server() as harness:
            with await connect(harness.port) as peer:
                peer_port = peer.getsockname()[1]
                await _send_chunks(peer, chunks, delays)
                peer.shutdown(socket.SHUT_WR)
                await wait_until(lambda: harness.streams and harness.streams[0] in harness.ended)
            [stream] = harness.streams
            assert bytes(harness.data[stream]) == payload
            assert not harness.errors
            proxy = stream.proxy
            assert proxy is not None
            assert proxy.peer == (LOOPBACK, peer_port)
            assert_same_header(proxy, expected)
            if expected.source is not None and expected.source[1] is not None:
                assert stream.remote_address is not None
                assert ipaddress.ip_address(stream.remote_address) == ipaddress.ip_address(
                    expected.source[0]
                )
                assert stream.remote_port == expected.source[1]
                assert stream.remote_family == proxy.family
            elif expected.source is None:
                assert (stream.remote_address, stream.remote_port) == (LOOPBACK, peer_port)


delays_ms = st.lists(st.sampled_from([0.0, 0.0005, 0.001, 0.003]), max_size=4)


@settings(FUZZ, max_examples=30)
@given(
    case=valid_headers(),
    payload=st.binary(max_size=3000),
    cuts=st.lists(st.integers(0, 5000), max_size=8),
    delays=delays_ms,
)
def test_fuzz_socket_header_then_payload_in_random_chunks(
    case: tuple[bytes, ProxyHeader], payload: bytes, cuts: list[int], delays: list[float]
) -> None:
    header, expected = case
    trio.run(_valid_exchange, header, expected, payload, cut(header + payload, cuts), delays)


async def _garbage_exchange(chunks: list[bytes], delays: list[float]) -> None:
    with trio.fail_after(LIMIT):
        async with proxy_server() as harness:
            with await connect(harness.port) as peer:
                peer_port = peer.getsockname()[1]
                await _send_chunks(peer, chunks, delays)
                try:
                    peer.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # reset already
                await until_closed(peer)
            await wait_until(lambda: harness.errors)
            await trio.testing.wait_all_tasks_blocked(0.005)
            [(_, exc, info)] = harness.events
            assert_proxy_error(exc)
            assert info == real_info(harness.port, peer_port)


@settings(FUZZ, max_examples=30)
@given(data=garbage, cuts=st.lists(st.integers(0, 500), max_size=6), delays=delays_ms)
def test_fuzz_socket_garbage_is_one_client_error(
    data: bytes, cuts: list[int], delays: list[float]
) -> None:
    assume(model_outcome(data) == "invalid")
    trio.run(_garbage_exchange, cut(data, cuts), delays)


def test_proxy_trusted_without_proxy_protocol_raises_at_the_call() -> None:
    with pytest.raises(ValueError, match="needs proxy_protocol=True"):
        net.create_server(proxy_trusted=["10.0.0.0/8"])


async def test_a_refused_source_error_has_its_code() -> None:
    async with proxy_server(proxy_trusted=["10.0.0.0/8"]) as harness:
        with socket.create_connection((LOOPBACK, harness.port)):
            await wait_until(lambda: harness.errors)
    error = harness.errors[0][1]
    assert isinstance(error, PermissionError)
    assert error.code == "EACCES"
