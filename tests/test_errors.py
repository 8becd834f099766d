"""Error translation: Node codes, Trio wrappers unwrapped, transport_errors()."""

from __future__ import annotations

import errno
import socket
import ssl
import struct

import pytest
import trio
import trio.testing
import trustme

import trio_netstream as net
from trio_netstream._errors import (
    StreamStateError,
    TransportError,
    node_code,
    translate,
    transport_errors,
)

# --- node_code() ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "ECONNREFUSED"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "ECONNRESET"),
        (BrokenPipeError(errno.EPIPE, "broken pipe"), "EPIPE"),
        (ConnectionAbortedError(errno.ECONNABORTED, "aborted"), "ECONNABORTED"),
        (OSError(errno.EADDRINUSE, "in use"), "EADDRINUSE"),
        (OSError(errno.EADDRNOTAVAIL, "not available"), "EADDRNOTAVAIL"),
        (OSError(errno.EHOSTUNREACH, "unreachable"), "EHOSTUNREACH"),
        (OSError(errno.ENOENT, "no such file"), "ENOENT"),
        (TimeoutError(errno.ETIMEDOUT, "timed out"), "ETIMEDOUT"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "ENOTFOUND"),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), "EAI_AGAIN"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_node_code(exc: BaseException, code: str) -> None:
    assert node_code(exc) == code


@pytest.mark.parametrize("exc", [ValueError("x"), RuntimeError(), OSError("no errno"), KeyError(1)])
def test_node_code_is_none_without_an_errno(exc: BaseException) -> None:
    assert node_code(exc) is None


def test_node_code_of_real_refused_connection() -> None:
    # A bound socket that is not listening refuses connections on loopback.
    with socket.socket() as closed_port, socket.socket() as client:
        closed_port.bind(("127.0.0.1", 0))
        with pytest.raises(ConnectionRefusedError) as info:
            client.connect(closed_port.getsockname())
    assert info.value.errno == errno.ECONNREFUSED
    assert node_code(info.value) == "ECONNREFUSED"


def test_node_code_of_real_address_in_use() -> None:
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        first.listen()
        with pytest.raises(OSError) as info:
            second.bind(first.getsockname())
    assert info.value.errno == errno.EADDRINUSE
    assert node_code(info.value) == "EADDRINUSE"


def test_node_code_of_real_gaierror() -> None:
    # AI_NUMERICHOST makes getaddrinfo fail with EAI_NONAME without any DNS query.
    with pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo("not-an-address", 80, flags=socket.AI_NUMERICHOST)
    assert info.value.errno == socket.EAI_NONAME
    assert node_code(info.value) == "ENOTFOUND"
    translated = translate(info.value)
    assert translated is info.value
    assert translated.code == "ENOTFOUND"  # type: ignore[attr-defined]  # set by translate


# --- translate() ------------------------------------------------------------------


def _broken_from(cause: BaseException) -> trio.BrokenResourceError:
    """A BrokenResourceError chained to *cause*, as Trio raises it."""
    exc = trio.BrokenResourceError("socket connection broken")
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize("sending", [False, True])
@pytest.mark.parametrize(
    ("cause", "code"),
    [
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "ECONNRESET"),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), "EPIPE"),
        (OSError(errno.ETIMEDOUT, "Connection timed out"), "ETIMEDOUT"),
    ],
    ids=["reset", "pipe", "timeout"],
)
def test_translate_broken_resource_returns_its_oserror_cause(
    cause: OSError, code: str, sending: bool
) -> None:
    original_errno = cause.errno
    result = translate(_broken_from(cause), sending=sending)
    assert result is cause
    assert type(result) is type(cause)
    assert result.errno == original_errno
    assert result.code == code  # type: ignore[attr-defined]  # set by translate


def test_translate_keeps_an_existing_code() -> None:
    cause = ConnectionResetError(errno.ECONNRESET, "reset")
    cause.code = "CUSTOM"  # type: ignore[attr-defined]  # user-visible attribute
    assert translate(_broken_from(cause)).code == "CUSTOM"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("sending", "cls", "err", "code"),
    [
        (True, BrokenPipeError, errno.EPIPE, "EPIPE"),
        (False, ConnectionResetError, errno.ECONNRESET, "ECONNRESET"),
    ],
)
def test_translate_broken_resource_without_cause(
    sending: bool, cls: type[OSError], err: int, code: str
) -> None:
    original = trio.BrokenResourceError("peer went away")
    result = translate(original, sending=sending)
    assert type(result) is cls
    assert result.errno == err
    assert result.code == code  # type: ignore[attr-defined]  # set by translate
    assert result.__cause__ is original


def test_translate_defaults_to_receiving() -> None:
    result = translate(trio.BrokenResourceError())
    assert type(result) is ConnectionResetError
    assert result.code == "ECONNRESET"  # type: ignore[attr-defined]  # set by translate


def test_translate_closed_resource() -> None:
    original = trio.ClosedResourceError("the stream was closed")
    result = translate(original)
    assert isinstance(result, OSError)
    assert not isinstance(result, trio.ClosedResourceError)
    assert result.errno == errno.EBADF
    assert result.code == "EBADF"  # type: ignore[attr-defined]  # set by translate
    assert result.__cause__ is original


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "ECONNREFUSED"),
        (OSError(errno.EADDRINUSE, "in use"), "EADDRINUSE"),
        (socket.gaierror(socket.EAI_NONAME, "not known"), "ENOTFOUND"),
    ],
    ids=["refused", "inuse", "gai"],
)
def test_translate_plain_oserror_passes_through_with_code(exc: OSError, code: str) -> None:
    errno_before = exc.errno
    result = translate(exc)
    assert result is exc
    assert result.errno == errno_before
    assert result.code == code  # type: ignore[attr-defined]  # set by translate


async def test_translate_real_memory_stream_peer_gone() -> None:
    a, b = trio.testing.memory_stream_pair()
    await b.aclose()
    with pytest.raises(trio.BrokenResourceError) as info:
        await a.send_all(b"x")
    result = translate(info.value, sending=True)
    assert type(result) is BrokenPipeError
    assert (result.errno, result.code) == (errno.EPIPE, "EPIPE")  # type: ignore[attr-defined]
    assert result.__cause__ is info.value
    await a.aclose()
    with pytest.raises(trio.ClosedResourceError) as closed:
        await a.send_all(b"x")
    assert translate(closed.value).errno == errno.EBADF


async def test_translate_real_broken_pipe_on_socketpair() -> None:
    left, right = trio.socket.socketpair()
    stream = trio.SocketStream(left)
    right.close()
    try:
        with trio.fail_after(10), pytest.raises(trio.BrokenResourceError) as info:
            await stream.send_all(b"x" * 1024)
    finally:
        await stream.aclose()
    result = translate(info.value, sending=True)
    assert type(result) is BrokenPipeError
    assert result.errno == errno.EPIPE
    assert result.code == "EPIPE"  # type: ignore[attr-defined]  # set by translate


async def test_translate_real_connection_reset_over_loopback() -> None:
    with trio.fail_after(10):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        listener = listeners[0]
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
        # SO_LINGER with a zero timeout makes close() send RST.
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await server.aclose()
        await listener.aclose()
        try:
            with pytest.raises(trio.BrokenResourceError) as info:
                await client.receive_some()
        finally:
            await client.aclose()
    result = translate(info.value)
    assert type(result) is ConnectionResetError
    assert result.errno == errno.ECONNRESET
    assert result.code == "ECONNRESET"  # type: ignore[attr-defined]  # set by translate


async def test_translate_real_tls_verification_failure_has_node_code() -> None:
    # A server certificate from a CA the client does not trust: Node reports
    # err.code "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", not an errno name.
    ca, other_ca = trustme.CA(), trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    other_ca.configure_trust(client_ctx)
    a, b = trio.testing.memory_stream_pair()
    client = trio.SSLStream(a, client_ctx, server_hostname="localhost")
    server = trio.SSLStream(b, server_ctx, server_side=True)
    failures: dict[str, BaseException] = {}

    async def handshake(name: str, stream: trio.SSLStream[trio.abc.Stream]) -> None:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            failures[name] = exc
        finally:
            await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handshake, "client", client)
            nursery.start_soon(handshake, "server", server)
    wrapper = failures["client"]
    cause = wrapper.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError)
    assert cause.verify_code == 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    result = translate(wrapper)
    assert result is cause
    assert result.code == "UNABLE_TO_GET_ISSUER_CERT_LOCALLY"  # type: ignore[attr-defined]


# --- transport_errors() -------------------------------------------------------------


@pytest.mark.parametrize("sending", [False, True])
def test_transport_errors_wraps_broken_resource(sending: bool) -> None:
    cause = ConnectionResetError(errno.ECONNRESET, "reset")
    with pytest.raises(TransportError) as info, transport_errors(sending=sending):
        raise trio.BrokenResourceError("broken") from cause
    assert info.value.error is cause
    assert cause.code == "ECONNRESET"  # type: ignore[attr-defined]  # set by translate


@pytest.mark.parametrize(
    ("sending", "cls", "code"),
    [(True, BrokenPipeError, "EPIPE"), (False, ConnectionResetError, "ECONNRESET")],
)
def test_transport_errors_without_cause_uses_sending(
    sending: bool, cls: type[OSError], code: str
) -> None:
    original = trio.BrokenResourceError()
    with pytest.raises(TransportError) as info, transport_errors(sending=sending):
        raise original
    error = info.value.error
    assert type(error) is cls
    assert error.code == code  # type: ignore[attr-defined]  # set by translate
    assert error.__cause__ is original


def test_transport_errors_wraps_closed_resource() -> None:
    with pytest.raises(TransportError) as info, transport_errors():
        raise trio.ClosedResourceError()
    assert isinstance(info.value.error, OSError)
    assert info.value.error.code == "EBADF"  # type: ignore[attr-defined]  # set by translate


def test_transport_errors_wraps_real_refused_connect() -> None:
    with socket.socket() as closed_port, socket.socket() as client:
        closed_port.bind(("127.0.0.1", 0))
        with pytest.raises(TransportError) as info, transport_errors():
            client.connect(closed_port.getsockname())
    error = info.value.error
    assert type(error) is ConnectionRefusedError
    assert error.errno == errno.ECONNREFUSED
    assert error.code == "ECONNREFUSED"  # type: ignore[attr-defined]  # set by translate


@pytest.mark.parametrize("exc", [ValueError("listener bug"), KeyError("k"), StreamStateError("x")])
def test_transport_errors_lets_other_exceptions_through(exc: Exception) -> None:
    with pytest.raises(type(exc)) as info, transport_errors():
        raise exc
    assert info.value is exc


def test_transport_errors_passes_when_nothing_fails() -> None:
    with transport_errors(sending=True):
        value = 1 + 1
    assert value == 2


def test_stream_state_error_is_public() -> None:
    assert net.StreamStateError is StreamStateError
    assert issubclass(StreamStateError, Exception)
