"""What every Python role shares: the line protocol's output, the file
limit, the idle client's hold, TLS contexts from the orchestrator's files,
the handshake rows' resumption check, latency percentiles and the server's
connection count, the readline benchmark's lines and their check, the
churn rows' echo count, the http rows' server with no I/O (requests parsed,
replies made)."""

from __future__ import annotations

import json
import os
import resource
import ssl
import sys

from bench_spec import LINE_TEXT, BenchError, line_length, lines_bytes


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def result(**values: float) -> None:
    say("RESULT " + json.dumps(values))


def raise_nofile() -> None:
    """Raise the soft limit on open files up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _wait_stdin_closed() -> None:
    """Block (the whole process) until the orchestrator closes our stdin."""
    while sys.stdin.buffer.read(65536):
        pass


def hold_then_exit() -> None:
    """The idle client's end: hold the connections until told, then exit
    at once (the kernel closes every socket; a graceful close of thousands
    of connections is not what is measured)."""
    _wait_stdin_closed()
    sys.stdout.flush()
    os._exit(0)


def _pin_version(context: ssl.SSLContext, tls: dict[str, str]) -> ssl.SSLContext:
    """Only ``tls["version"]`` (``"TLSv1.3"``), when the row asks for one."""
    if tls.get("version"):
        version = ssl.TLSVersion[tls["version"].replace(".", "_")]
        context.minimum_version = context.maximum_version = version
    return context


def server_ssl(tls: dict[str, str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls["cert"], tls["key"])
    return _pin_version(context, tls)


def client_ssl(
    tls: dict[str, str], context_class: type[ssl.SSLContext] = ssl.SSLContext
) -> ssl.SSLContext:
    """What ``ssl.create_default_context(cafile=...)`` makes (certificate and
    host name checked), as an instance of *context_class*."""
    context = context_class(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=tls["ca"])
    return _pin_version(context, tls)


def check_resumed(resume: bool, resumed: int, count: int) -> None:
    """The handshake rows measure what they say: with ``resume``, every timed
    handshake resumed the previous connection's session; without, none did."""
    expected = count if resume else 0
    if resumed != expected:
        raise BenchError(f"{resumed} of {count} handshakes resumed a session, not {expected}")


def check_echoed(echoed: int, count: int) -> None:
    """Every one of the *count* connections got its byte back."""
    if echoed != count:
        raise BenchError(f"{echoed} of {count} connections echoed the byte")


def latency_summary(rounds: int, elapsed: float, latencies_ns: list[int]) -> dict[str, float]:
    ordered = sorted(latencies_ns)

    def percentile(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] / 1000

    return {"rtps": rounds / elapsed, "p50_us": percentile(0.50), "p99_us": percentile(0.99)}


class Announcer:
    """Counts a server's connections; prints ``ACCEPTED n`` at the idle target."""

    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target

    def __call__(self) -> None:
        self.count += 1
        if self.count == self.target:
            say(f"ACCEPTED {self.count}")


def lines_payload(count: int) -> bytes:
    """The readline benchmark's *count* lines (see ``bench_spec.line_length``)."""
    text = LINE_TEXT.encode()
    return b"".join(
        text[index % 26 : index % 26 + line_length(index) - 1] + b"\n" for index in range(count)
    )


def check_lines(count: int, lines: int, size: int) -> None:
    """The reader got the *count* lines the sender sent, *size* bytes in all."""
    if lines != count or size != lines_bytes(count):
        raise BenchError(f"read {lines} lines of {size} bytes, not {count} of {lines_bytes(count)}")


def _http_reply(connection: bytes) -> bytes:
    body = b"Hello, world!"
    return (
        b"HTTP/1.1 200 OK\r\nConnection: %s\r\nContent-Length: %d\r\n"
        b"Content-Type: text/plain\r\n\r\n%s" % (connection, len(body), body)
    )


#: The http rows' one reply, with the connection kept alive or closed after it.
#: ``Connection: keep-alive`` is what ``ab -k`` (HTTP/1.0) needs to keep it.
HTTP_KEEP_ALIVE = _http_reply(b"keep-alive")
HTTP_CLOSE = _http_reply(b"close")


def http_keeps_alive(head: bytes | bytearray) -> bool:
    """Whether the connection stays open after the request whose head (request
    line and headers, without the blank line) is *head*: HTTP/1.1 unless it
    says ``Connection: close``; HTTP/1.0 only if it says ``Connection:
    keep-alive`` (as ``ab -k`` does)."""
    line_end = head.find(b"\r\n")
    if line_end < 0:
        return head.endswith(b"HTTP/1.1")
    headers = head[line_end:].lower()
    if head.endswith(b"HTTP/1.1", 0, line_end):
        return b"\r\nconnection: close" not in headers
    return b"\r\nconnection: keep-alive" in headers


def http_replies(buffer: bytearray) -> tuple[bytes, bool]:
    """The http rows' server, with no I/O: take every complete request (a
    head ending in a blank line; wrk and ab send no body) off the front of
    *buffer*, and answer them. Returns the replies, in order, and whether
    the connection ends after them (then the requests after that one are
    left unanswered); ``(b"", False)`` while no request is complete."""
    replies: list[bytes] = []
    start = 0
    while (end := buffer.find(b"\r\n\r\n", start)) >= 0:
        keep_alive = http_keeps_alive(buffer[start:end])
        start = end + 4
        if not keep_alive:
            replies.append(HTTP_CLOSE)
            del buffer[:start]
            return b"".join(replies), True
        replies.append(HTTP_KEEP_ALIVE)
    del buffer[:start]
    return b"".join(replies), False
