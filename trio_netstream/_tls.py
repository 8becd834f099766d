"""TLS: a half-closable TLS transport, peer verification and certificate fields.

How this works
--------------

:class:`TLSTransport` runs an ``ssl.SSLObject`` over two memory BIOs on top
of the plaintext transport (``_socket.SocketTransport``, or any Trio
stream under ``Stream.wrap``). It is a
``trio.abc.HalfCloseableStream``, which ``trio.SSLStream`` is not: Node's
``end()`` on a TLS socket sends close_notify and keeps *reading* until the
peer ends, and OpenSSL allows that only if no unread record is waiting in the
incoming BIO when close_notify is sent (otherwise it fails with
``APPLICATION_DATA_AFTER_CLOSE_NOTIFY``). So :meth:`TLSTransport.receive_some`
decrypts everything it fed into the BIO before it returns or waits again,
and :meth:`TLSTransport.send_eof` can always send close_notify, then FIN.

Sends of the reader (handshake, alerts, key-update replies) and of the
writer go through one lock, so ciphertext leaves in the order OpenSSL made
it. The reader is the only task that reads the plaintext transport.

A context is applied to an ``SSLObject`` when it is created (OpenSSL copies
the verify mode then), so a per-connection verify mode is set on the
context just around ``wrap_bio`` and restored at once: the caller's context
is never left changed.

Certificates are read with ``cryptography`` (the stdlib gives no fields for a
certificate it did not verify), which also checks a peer that was let in
with ``reject_unauthorized=False``, to say why it did not verify.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import ipaddress
import operator
import os
import ssl
import warnings
from collections.abc import Generator
from contextlib import contextmanager, suppress
from typing import Any

import attrs
import trio

__all__ = [
    "Choices",
    "TLSTransport",
    "Verification",
    "certificate_fields",
    "check_session",
    "session_of",
    "make_transport",
]

_CHUNK = 64 * 1024


class TLSTransport(trio.abc.HalfCloseableStream):
    """TLS over a plaintext Trio stream, with a real half-close."""

    def __init__(
        self,
        raw: trio.abc.Stream,
        ssl_object: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        self.raw = raw
        self.ssl_object = ssl_object
        self._incoming = incoming
        self._outgoing = outgoing
        self._send_lock = trio.StrictFIFOLock()
        self._plain = bytearray()
        self._eof = False
        self._eof_sent = False
        self._handshaken = False
        self._closed = False
        self.choices: Choices | None = None  # a server connection's (make_transport)

    @property
    def socket(self) -> trio.socket.SocketType | None:
        return getattr(self.raw, "socket", None)

    async def _flush(self) -> None:
        """Send what the last SSL call produced.

        The bytes are taken synchronously, right after that call, and the
        FIFO lock is queued for without a yield in between, so ciphertext
        leaves in the order OpenSSL made it, and each task sends only its
        own: the reader never blocks on the writer's bulk data.
        """
        data = self._outgoing.read()
        if data:
            async with self._send_lock:
                await self.raw.send_all(data)

    async def do_handshake(self) -> None:
        """Run the handshake to the end.

        Raises:
            ssl.SSLError: the handshake failed (the alert is sent first).
            ConnectionResetError: the peer closed the connection mid-handshake.
        """
        choices = self.choices
        while True:
            try:
                if choices is None or not self._incoming.pending:
                    self.ssl_object.do_handshake()  # nothing to read: no callback can come
                else:
                    with choices.applied(self.ssl_object.context):
                        self.ssl_object.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                data = await self.raw.receive_some(_CHUNK)
                if not data:
                    raise ConnectionResetError(
                        errno.ECONNRESET, "the peer closed the connection during the TLS handshake"
                    ) from None
                self._incoming.write(data)
                continue
            except ssl.SSLError:
                with trio.move_on_after(1), _ignore_transport_errors():
                    await self._flush()  # tell the peer why (the alert)
                raise
            await self._flush()
            self._handshaken = True
            # Application data can come in the same read as the peer's last
            # handshake message (TLS 1.3: the client's Finished, then data).
            self._decrypt()
            return

    def _decrypt(self) -> None:
        """Decrypt every whole record in the incoming BIO (see module docstring)."""
        while True:
            try:
                piece = self.ssl_object.read(_CHUNK)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                self._eof = True
                return
            if not piece:
                self._eof = True
                return
            self._plain += piece

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        limit = _CHUNK if max_bytes is None else operator.index(max_bytes)
        if limit < 1:
            raise ValueError("max_bytes must be at least 1")
        waited = False  # every receive is a checkpoint, also from the buffer
        while True:
            if self._closed:
                await trio.lowlevel.checkpoint()
                raise trio.ClosedResourceError("the transport was closed")
            if self._plain or self._eof:
                if not waited:
                    await trio.lowlevel.checkpoint()
                data = bytes(self._plain[:limit])
                del self._plain[:limit]
                return data
            await self._flush()  # replies OpenSSL produced while reading
            received = await self.raw.receive_some(_CHUNK)
            waited = True
            if not received:
                # TCP EOF without close_notify: an end all the same, as in Node.
                self._eof = True
                return b""
            self._incoming.write(received)
            self._decrypt()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the transport was closed")
        if self._eof_sent:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        view = memoryview(data)
        for start in range(0, len(view), 4 * _CHUNK):
            self.ssl_object.write(view[start : start + 4 * _CHUNK])
            await self._flush()
        if not view:
            await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self.raw.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Send close_notify, then FIN; reading goes on until the peer ends."""
        if self._eof_sent:
            await trio.lowlevel.checkpoint()
            return
        self._eof_sent = True
        try:
            self.ssl_object.unwrap()
        except ssl.SSLWantReadError:
            pass  # sent ours; the peer's comes through receive_some
        await self._flush()
        if isinstance(self.raw, trio.abc.HalfCloseableStream):
            await self.raw.send_eof()

    async def aclose(self) -> None:
        """Send close_notify (if not sent yet) and close the transport under it.
        Cancelled (``trio.aclose_forcefully``, the stream's teardown), it
        closes at once without it."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if self._handshaken and not self._eof_sent:
                self._eof_sent = True
                with suppress(ssl.SSLError):  # SSLWantReadError: ours is out
                    self.ssl_object.unwrap()
                with _ignore_transport_errors():
                    await self._flush()
                # What the peer sent that nobody will read (TLS 1.3 session
                # tickets...) would turn the close into a reset: read it off.
                discard = getattr(self.raw, "discard_unread", None)
                if discard is not None:
                    discard()
        finally:
            await self.raw.aclose()


class Choices:
    """A server connection's own TLS choices: its ALPN list, and the SNI name
    the client sent. They are set on the (shared) context only around each
    handshake step: OpenSSL reads them while it answers the ClientHello,
    which happens within one step, synchronously; the caller's context is
    left as it was."""

    __slots__ = ("alpn", "servername")

    def __init__(self, alpn: tuple[str, ...] | None) -> None:
        self.alpn = alpn
        self.servername: str | None = None

    @contextmanager
    def applied(self, context: ssl.SSLContext) -> Generator[None, None, None]:
        theirs = context.sni_callback

        switched: list[ssl.SSLContext] = []

        def record(ssl_object: Any, name: str | None, ctx: ssl.SSLContext) -> int | None:
            self.servername = name
            if theirs is None:
                return None
            answer = theirs(ssl_object, name, ctx)  # type: ignore[arg-type]  # None when the client sent no name
            chosen = ssl_object.context
            if self.alpn and chosen is not context:  # their callback switched contexts
                chosen.set_alpn_protocols(list(self.alpn))
                switched.append(chosen)
            return answer

        context.sni_callback = record
        if self.alpn:
            context.set_alpn_protocols(list(self.alpn))
        try:
            yield
        finally:
            context.sni_callback = theirs
            for other in (context, *switched) if self.alpn else ():
                other.set_alpn_protocols([])


@contextmanager
def _ignore_transport_errors() -> Generator[None, None, None]:
    try:
        yield
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass


@contextmanager
def _for_one_connection(
    context: ssl.SSLContext, verify_mode: ssl.VerifyMode | None, check_hostname: bool | None
) -> Generator[None, None, None]:
    """Adjust *context* for one ``wrap_bio`` call, then restore it.

    OpenSSL copies the verify mode and the options into the new connection,
    so this sets them per connection: a verify mode fitting
    ``reject_unauthorized``, and renegotiation refused.
    """
    saved = (context.verify_mode, context.check_hostname, context.options)
    try:
        context.options |= _NO_RENEGOTIATION
        if check_hostname is not None:
            context.check_hostname = check_hostname
        if verify_mode is not None:
            context.verify_mode = verify_mode
        yield
    finally:
        context.check_hostname = False
        context.verify_mode = saved[0]
        context.check_hostname = saved[1]
        if not saved[2] & _NO_RENEGOTIATION:
            context.options &= ~_NO_RENEGOTIATION


@attrs.frozen
class Verification:
    """What the handshake proved about the peer."""

    verified: bool
    error: str | None


_NO_RENEGOTIATION = getattr(ssl, "OP_NO_RENEGOTIATION", 0)


_default_client_context: ssl.SSLContext | None = None


def default_client_context() -> ssl.SSLContext:
    """``ssl.create_default_context()``, made once: loading the system's CA
    store costs milliseconds, and a session can only be resumed with the
    context it came from."""
    global _default_client_context  # one per process, made when first needed
    if _default_client_context is None:
        _default_client_context = ssl.create_default_context()
    return _default_client_context


#: The sessions :func:`session_of` handed out lately, by ``id``, with their
#: context: a session resumed on the same process is checked without a
#: probe (a probe sets the session on a new ``SSLObject``, which costs
#: about a quarter of a millisecond). Strong references: an ``id`` stays
#: unique while it is here. Bounded.
_HANDED_OUT: dict[int, tuple[ssl.SSLSession, ssl.SSLContext]] = {}
_HANDED_OUT_MAX = 256


def session_of(ssl_object: ssl.SSLObject) -> ssl.SSLSession | None:
    """``ssl_object.session``, remembered with its context for :func:`check_session`."""
    session = ssl_object.session
    if session is not None:
        if len(_HANDED_OUT) >= _HANDED_OUT_MAX:
            del _HANDED_OUT[next(iter(_HANDED_OUT))]  # the oldest
        _HANDED_OUT[id(session)] = (session, ssl_object.context)
    return session


def check_session(context: ssl.SSLContext, session: ssl.SSLSession | None) -> None:
    """Raise ``ValueError`` now if *session* cannot be resumed with *context*
    (OpenSSL takes only a session of the same context)."""
    if session is None:
        return
    known = _HANDED_OUT.get(id(session))
    if known is not None and known[0] is session:
        if known[1] is not context:
            raise ValueError(
                "session cannot be used with this context: it came from another SSLContext"
            )
        return
    try:
        context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x", session=session)
    except ValueError as exc:
        raise ValueError(f"session cannot be used with this context: {exc}") from None


def make_transport(
    raw: trio.abc.Stream,
    context: ssl.SSLContext,
    *,
    server_side: bool,
    server_hostname: str | None,
    reject_unauthorized: bool,
    alpn_protocols: tuple[str, ...] | None = None,
    session: ssl.SSLSession | None = None,
) -> TLSTransport:
    """A :class:`TLSTransport` whose verify mode fits *reject_unauthorized*.

    Client side: by default the handshake verifies the server (and its name
    when *server_hostname* is given); with ``reject_unauthorized=False`` it
    does not, and :func:`verify` says afterwards why the peer did not pass.
    Server side: a context holding CA certificates requests a client
    certificate, which must verify with ``reject_unauthorized`` (else a
    client without one is let in; one that presents a certificate that does
    not verify is still refused by OpenSSL, which Python's ``ssl`` gives no
    way to override).
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    verify_mode: ssl.VerifyMode | None = None
    check_hostname: bool | None = None
    if server_side:
        if context.verify_mode != ssl.CERT_REQUIRED and context.get_ca_certs():
            verify_mode = ssl.CERT_REQUIRED if reject_unauthorized else ssl.CERT_OPTIONAL
    elif not reject_unauthorized:
        verify_mode, check_hostname = ssl.CERT_NONE, False
    elif server_hostname is None and context.check_hostname:
        check_hostname = False  # nothing to check the name against (a UNIX path)
    with _for_one_connection(context, verify_mode, check_hostname):
        if alpn_protocols and not server_side:  # OpenSSL copies the client's list
            context.set_alpn_protocols(list(alpn_protocols))
        try:
            ssl_object = context.wrap_bio(
                incoming,
                outgoing,
                server_side=server_side,
                server_hostname=server_hostname,
                session=session,
            )
        finally:
            if alpn_protocols and not server_side:
                context.set_alpn_protocols([])
    transport = TLSTransport(raw, ssl_object, incoming, outgoing)
    if server_side:
        transport.choices = Choices(alpn_protocols)
    return transport


def _chain(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The peer's certificates (DER), leaf first, verified or not."""
    getter = getattr(ssl_object, "get_unverified_chain", None) or getattr(
        getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None
    )
    if getter is not None:
        chain: list[Any] = getter() or []
        certificates = [
            cert if isinstance(cert, bytes) else cert.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]  # _ssl.Certificate (3.10+)
            for cert in chain
            if cert is not None  # [None] when the peer sent none (a server's CERT_OPTIONAL)
        ]
        if certificates:
            return certificates
    # A resumed session: no chain was sent, the session holds the leaf.
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def verify(
    ssl_object: ssl.SSLObject,
    context: ssl.SSLContext,
    *,
    server_side: bool,
    server_hostname: str | None,
    reject_unauthorized: bool,
) -> Verification:
    """Whether the peer's certificate verified, and if not, why."""
    chain = _chain(ssl_object)
    if not chain:
        return Verification(False, "NO_PEER_CERTIFICATE: the peer sent no certificate")
    if server_side or (reject_unauthorized and context.verify_mode != ssl.CERT_NONE):
        # OpenSSL verified it during the handshake, or the handshake failed.
        return Verification(True, None)
    return _verify_offline(chain, _trusted(context), server_hostname)


def _trusted(context: ssl.SSLContext) -> list[bytes]:
    cas: list[bytes] = list(context.get_ca_certs(binary_form=True))
    if cas:
        return cas
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.exists(candidate):
            return _system_anchors(candidate)
    return []


def _system_anchors(path: str) -> list[bytes]:
    """The CA certificates of a PEM bundle, as DER; ones that cannot be parsed
    (a system store may hold a legacy certificate) are left out."""
    with open(path, "rb") as handle:
        pem = handle.read()
    marker = b"-----END CERTIFICATE-----"
    anchors: list[bytes] = []
    for block in pem.split(marker)[:-1]:
        start = block.find(b"-----BEGIN CERTIFICATE-----")
        if start < 0:
            continue
        try:
            anchors.append(ssl.PEM_cert_to_DER_cert((block[start:] + marker).decode("ascii")))
        except ValueError:
            continue
    return anchors


def _load_certificate(der: bytes) -> Any:
    from cryptography import x509

    with warnings.catch_warnings():
        # A legacy certificate (e.g. a negative serial number) still loads.
        warnings.simplefilter("ignore")
        return x509.load_der_x509_certificate(der)


def _verify_offline(chain: list[bytes], trusted: list[bytes], hostname: str | None) -> Verification:
    """Check a chain the handshake let in unverified, by OpenSSL's rules.

    The chain is built from the leaf through the certificates the peer sent
    to a trusted CA (signatures checked), then the validity dates, then the
    host name; the first failure is reported with OpenSSL's (Node's) code.
    """

    certs = [_load_certificate(der) for der in chain]
    anchors: list[Any] = []
    for der in trusted:
        try:
            anchors.append(_load_certificate(der))
        except ValueError:  # not a certificate cryptography can read: not an anchor
            continue
    leaf = certs[0]
    path = [leaf]
    current = leaf
    while True:
        anchor = _issuer(current, anchors)
        if anchor is not None:
            path.append(anchor)
            break
        parent = _issuer(current, [c for c in certs if c not in path])
        if parent is None:
            if current.issuer == current.subject:
                code = (
                    "DEPTH_ZERO_SELF_SIGNED_CERT"
                    if current is leaf
                    else "SELF_SIGNED_CERT_IN_CHAIN"
                )
                return Verification(False, f"{code}: self-signed certificate")
            return Verification(
                False, "UNABLE_TO_GET_ISSUER_CERT_LOCALLY: unable to get local issuer certificate"
            )
        path.append(parent)
        current = parent
    now = datetime.datetime.now(datetime.timezone.utc)
    for cert in path:
        if cert.not_valid_after_utc < now:
            return Verification(False, "CERT_HAS_EXPIRED: certificate has expired")
        if cert.not_valid_before_utc > now:
            return Verification(False, "CERT_NOT_YET_VALID: certificate is not yet valid")
    if hostname and not _name_matches(leaf, hostname):
        return Verification(
            False,
            "ERR_TLS_CERT_ALTNAME_INVALID: Hostname/IP does not match certificate's altnames: "
            f"{hostname!r} is not in {_alt_names(leaf)!r}",
        )
    return Verification(True, None)


def _issuer(cert: Any, pool: list[Any]) -> Any:
    """The certificate in *pool* that issued and signed *cert*, or ``None``."""
    for candidate in pool:
        if candidate.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except Exception:  # wrong key, bad signature, unsupported algorithm
            continue
        return candidate
    return None


def _name_matches(cert: Any, hostname: str) -> bool:
    """RFC 6125 matching of *hostname* against the subjectAltName entries."""
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        address = None
    if address is not None:
        return address in names.get_values_for_type(x509.IPAddress)
    wanted = hostname.rstrip(".").lower().split(".")
    for pattern in names.get_values_for_type(x509.DNSName):
        labels = pattern.rstrip(".").lower().split(".")
        if len(labels) != len(wanted):
            continue
        first_ok = labels[0] == wanted[0] or (labels[0] == "*" and len(labels) > 2)
        if first_ok and labels[1:] == wanted[1:]:
            return True
    return False


def _name_dict(name: Any) -> dict[str, str]:
    fields: dict[str, str] = {}
    for attribute in name:
        key = attribute.rfc4514_attribute_name
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
        fields[key] = f"{fields[key]}\n{value}" if key in fields else value
    return fields


def _node_date(moment: datetime.datetime) -> str:
    """OpenSSL's (and Node's) format: ``"Jan  1 00:00:00 2030 GMT"``."""
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S %Y} GMT"


def _alt_names(cert: Any) -> str | None:
    from cryptography import x509

    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    names: list[str] = []
    for entry in extension.value:
        if isinstance(entry, x509.DNSName):
            names.append(f"DNS:{entry.value}")
        elif isinstance(entry, x509.IPAddress):
            names.append(f"IP Address:{entry.value}")
        elif isinstance(entry, x509.RFC822Name):
            names.append(f"email:{entry.value}")
        elif isinstance(entry, x509.UniformResourceIdentifier):
            names.append(f"URI:{entry.value}")
    return ", ".join(names)


def certificate_fields(der: bytes) -> dict[str, Any]:
    """Node's ``getPeerCertificate()`` fields for one DER certificate."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    serial = format(cert.serial_number, "X")
    if len(serial) % 2:
        serial = "0" + serial
    fields: dict[str, Any] = {
        "subject": _name_dict(cert.subject),
        "issuer": _name_dict(cert.issuer),
        "valid_from": _node_date(cert.not_valid_before_utc),
        "valid_to": _node_date(cert.not_valid_after_utc),
        "serial_number": serial,
        "fingerprint": _fingerprint(hashlib.sha1(der).digest()),
        "fingerprint256": _fingerprint(hashlib.sha256(der).digest()),
        "subjectaltname": _alt_names(cert),
        "raw": der,
    }
    # Node's camelCase spellings of the same fields.
    fields["validFrom"] = fields["valid_from"]
    fields["validTo"] = fields["valid_to"]
    fields["serialNumber"] = fields["serial_number"]
    return fields


def _fingerprint(digest: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in digest)


def peer_certificate(ssl_object: ssl.SSLObject) -> dict[str, Any] | None:
    der = ssl_object.getpeercert(binary_form=True)
    return None if not der else certificate_fields(der)
