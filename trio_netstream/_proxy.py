"""The PROXY protocol: HAProxy's v1 (text) and v2 (binary) headers.

A load balancer in front of a server sends one header at the start of each
connection, naming the client it accepted the connection from. This module
parses it (:func:`header_length`, :func:`parse`: pure, no I/O) and reads it
off a socket (:func:`read_header`) without reading one byte more than the
header: the bytes behind it stay in the kernel for the stream (or its TLS
handshake). A v1 header is a line of at most 107 bytes ending in CRLF; a v2
header is a 16-byte prefix (a 12-byte signature, version and command,
family and protocol, the length of the rest) then that many bytes, which
this module bounds by :data:`V2_MAX_LENGTH`.

Every malformed header is a ``ValueError`` whose ``.code`` is
``"ERR_PROXY_PROTOCOL"``; a header cut short by the end of the connection
too. See https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt.
"""

from __future__ import annotations

import ipaddress
import socket as _stdlib_socket
from collections.abc import Iterable
from typing import Any, cast

import attrs
import trio

__all__ = [
    "V1_MAX",
    "V2_MAX_LENGTH",
    "ProxyHeader",
    "Network",
    "header_length",
    "is_trusted",
    "parse",
    "read_header",
    "trusted_networks",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: The longest v1 header (``PROXY TCP6`` with two full IPv6 addresses), CRLF included.
V1_MAX = 107
#: The most bytes a v2 header may carry after its 16-byte prefix (addresses
#: and TLVs); HAProxy sends a few hundred at most.
V2_MAX_LENGTH = 2048

_LOCAL, _PROXY = 0x0, 0x1
_UNSPEC, _INET, _INET6, _UNIX = 0x0, 0x1, 0x2, 0x3
_STREAM = 0x1
_ADDRESS_SIZES = {_INET: 12, _INET6: 36, _UNIX: 216}

Address = tuple[str, "int | None"]


@attrs.frozen
class ProxyHeader:
    """A PROXY protocol header, as ``stream.proxy`` gives it.

    ``source`` and ``destination`` are ``(host, port)`` of the client and of
    the address it connected to (``(path, None)`` for UNIX sockets), or
    ``None`` for a ``LOCAL`` header, a v1 ``UNKNOWN`` line or a v2 ``UNSPEC``
    family, which keep the connection's own addresses. ``tlvs`` are the v2
    type-length-value fields (empty for v1). ``peer`` is the balancer's own
    ``(host, port)``: the connection's real peer.
    """

    version: int
    command: str
    source: Address | None
    destination: Address | None
    tlvs: dict[int, bytes] = attrs.field(factory=dict[int, bytes])
    peer: tuple[str, int] | None = None

    @property
    def family(self) -> str | None:
        """``"IPv4"`` or ``"IPv6"`` of :attr:`source`, else ``None``."""
        if self.source is None or self.source[1] is None:
            return None
        return "IPv6" if ":" in self.source[0] else "IPv4"


def _bad(message: str) -> ValueError:
    error = ValueError(f"PROXY protocol: {message}")
    error.code = "ERR_PROXY_PROTOCOL"  # type: ignore[attr-defined]  # as Node's error codes
    return error


def header_length(data: bytes) -> int | None:
    """The length of the header *data* starts with, once *data* shows it
    (``None``: more bytes are needed to tell).

    Raises:
        ValueError: *data* cannot start a header (``.code``
            ``"ERR_PROXY_PROTOCOL"``).
    """
    if V2_SIGNATURE.startswith(data[:12]):
        if len(data) < 16:
            return None
        length = int.from_bytes(data[14:16], "big")
        if length > V2_MAX_LENGTH:
            raise _bad(f"a v2 header of {length} bytes is over the limit of {V2_MAX_LENGTH}")
        return 16 + length
    if V1_PREFIX.startswith(data[:6]):
        end = data.find(b"\r\n", 0, V1_MAX)
        if end >= 0:
            return end + 2
        if len(data) >= V1_MAX:
            raise _bad(f"no CRLF within the {V1_MAX} bytes of a v1 header")
        return None
    raise _bad("not a PROXY protocol header (bad signature)")


def parse(header: bytes, peer: tuple[str, int] | None = None) -> ProxyHeader:
    """The header :func:`header_length` measured (exactly its bytes).

    Raises:
        ValueError: the header is malformed (``.code`` ``"ERR_PROXY_PROTOCOL"``).
    """
    if header.startswith(V2_SIGNATURE):
        return _parse_v2(header, peer)
    return _parse_v1(header, peer)


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > 65535:
        raise _bad(f"bad port {text[:8]!r}")
    if len(text) > 1 and text[0] == "0":
        raise _bad(f"bad port {text!r} (a leading zero)")
    return int(text)


def _ip(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise _bad(f"bad address {text[:46]!r}") from None
    if address.version != version:
        raise _bad(f"address {text!r} is not IPv{version}")
    return str(address)


def _parse_v1(header: bytes, peer: tuple[str, int] | None) -> ProxyHeader:
    line = header[:-2]
    if not header.endswith(b"\r\n") or b"\r" in line or b"\n" in line or not line.isascii():
        raise _bad("a v1 header is one ASCII line ending in CRLF")
    parts = line.decode("ascii").split(" ")
    if parts[0] != "PROXY" or len(parts) < 2:
        raise _bad("a v1 header starts with 'PROXY '")
    if parts[1] == "UNKNOWN":
        return ProxyHeader(1, "PROXY", None, None, peer=peer)
    versions = {"TCP4": 4, "TCP6": 6}
    if parts[1] not in versions:
        raise _bad(f"unknown v1 protocol {parts[1][:8]!r}")
    if len(parts) != 6:
        raise _bad("a v1 TCP header has two addresses and two ports")
    version = versions[parts[1]]
    source = (_ip(parts[2], version), _port(parts[4]))
    destination = (_ip(parts[3], version), _port(parts[5]))
    return ProxyHeader(1, "PROXY", source, destination, peer=peer)


def _parse_v2(header: bytes, peer: tuple[str, int] | None) -> ProxyHeader:
    if len(header) < 16 or len(header) != 16 + int.from_bytes(header[14:16], "big"):
        raise _bad("a v2 header's length does not match its length field")
    version, command = header[12] >> 4, header[12] & 0xF
    if version != 2:
        raise _bad(f"unknown version {version}")
    if command not in (_LOCAL, _PROXY):
        raise _bad(f"unknown v2 command {command}")
    family, protocol = header[13] >> 4, header[13] & 0xF
    body = header[16:]
    if command == _LOCAL or family == _UNSPEC:
        # A health check, or an unknown origin: the connection's own addresses.
        name = "LOCAL" if command == _LOCAL else "PROXY"
        return ProxyHeader(2, name, None, None, peer=peer)
    size = _ADDRESS_SIZES.get(family)
    if size is None:
        raise _bad(f"unknown v2 address family {family}")
    if protocol != _STREAM:
        raise _bad(f"v2 protocol {protocol} is not a stream (TCP)")
    if len(body) < size:
        raise _bad(f"a v2 address block of {len(body)} bytes, {size} needed")
    source, destination = _addresses(family, body[:size])
    return ProxyHeader(2, "PROXY", source, destination, _tlvs(body[size:]), peer)


def _addresses(family: int, block: bytes) -> tuple[Address, Address]:
    if family == _UNIX:
        return (_path(block[:108]), None), (_path(block[108:]), None)
    half = 4 if family == _INET else 16
    ports = block[2 * half :]
    return (
        # Spelled as ipaddress spells them, as v1 addresses are.
        (str(ipaddress.ip_address(block[:half])), int.from_bytes(ports[:2], "big")),
        (str(ipaddress.ip_address(block[half : 2 * half])), int.from_bytes(ports[2:], "big")),
    )


def _path(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _tlvs(data: bytes) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    at = 0
    while at < len(data):
        if len(data) - at < 3:
            raise _bad("a truncated v2 TLV")
        length = int.from_bytes(data[at + 1 : at + 3], "big")
        if len(data) - at - 3 < length:
            raise _bad("a v2 TLV longer than the header")
        tlvs[data[at]] = data[at + 3 : at + 3 + length]
        at += 3 + length
    return tlvs


async def read_header(sock: _stdlib_socket.socket) -> bytes:
    """Read exactly one header off the non-blocking *sock*.

    What is in the kernel is looked at (``MSG_PEEK``) first; bytes are
    taken only as far as the header goes: when the header is not complete
    yet, everything that came is part of it.

    Raises:
        ValueError: a malformed header, or the connection ended inside it.
        OSError: the socket failed.
    """
    taken = bytearray()
    while True:
        try:
            seen = sock.recv(16 + V2_MAX_LENGTH - len(taken), _stdlib_socket.MSG_PEEK)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        if not seen:
            raise _bad(f"the connection ended {len(taken)} bytes into the header")
        data = bytes(taken) + seen
        total = header_length(data)
        if total is not None and len(data) >= total:
            taken += sock.recv(total - len(taken))
            await trio.lowlevel.checkpoint()
            return bytes(taken)
        taken += sock.recv(len(seen))  # all of it belongs to the header


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NETWORK_TYPES = (
    str,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
)


def trusted_networks(value: object) -> tuple[Network, ...] | None:
    """``proxy_trusted`` checked: ``None``, or an iterable of networks (as
    strings like ``"10.0.0.0/8"`` or ``ipaddress`` objects; an address is a
    network of one)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        kind = type(value).__name__
        raise TypeError(f"proxy_trusted must be an iterable of networks, not {kind}")
    networks: list[Network] = []
    for item in cast("Iterable[object]", value):
        if not isinstance(item, _NETWORK_TYPES):
            kind = type(item).__name__
            raise TypeError(f"a trusted network is a str or an ipaddress object, not {kind}")
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ValueError(f"proxy_trusted: {exc}") from None
    return tuple(networks)


def is_trusted(networks: tuple[Network, ...] | None, peer: Any) -> bool:
    """Whether a connection from *peer* (an accept() address) may send a
    header: every peer when no list was given, and UNIX-socket peers."""
    if networks is None or not isinstance(peer, tuple):
        return True
    host = cast("tuple[str, int]", peer)[0]
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
