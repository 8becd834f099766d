"""The argument parser: the commands, their options and help, and the checks
argparse cannot express. A usage error exits with code 2 (argparse's own)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from .._encoding import normalize
from .._options import alpn_list, ip_version
from .._proxy import trusted_networks
from ._output import PROG
from ._starttls import DEFAULT_TIMEOUT

EXIT_CODES = """\
exit codes:
  0    success (also after SIGTERM)
  1    network or protocol error (connection refused, reset, name not found...)
  2    usage error (bad arguments)
  3    TLS or certificate error (handshake failed, certificate not verified,
       certificate or key file not loadable)
  130  interrupted (SIGINT, Ctrl-C)"""

_ECHO_DESCRIPTION = """\
The echo server of Node's original net docs: on connect it writes "hello\\r\\n", then echoes every
byte it receives; when the client ends, it writes "goodbye\\r\\n" and ends too.

It prints "listening on HOST:PORT (pid N)" once listening, then one line per
connection event: "[pid N] #K connection from HOST:PORT", "connect",
"secure", "data b'...'", "end", "error ...", "close(False)".

SIGTERM stops it gracefully: it stops accepting at once, lets the open
connections finish for up to --grace milliseconds (default 5000), then
destroys the rest ("[pid N] shutting down (grace 5000 ms)", then "[pid N]
shut down: K connections destroyed"), and exits with code 0. SIGINT, or a
second SIGTERM during the grace, stops it at once (connections are
destroyed; exit code 130 or 0).

--alpn h2,http/1.1 (with --tls-cert): the protocols the server accepts (ALPN,
RFC 7301), most preferred first; of those a client offers, the first in this
list is chosen. The "secure" line then names the result: "secure (ALPN h2)",
or "secure (ALPN none)" when the client offered none of them (the connection
goes on without a protocol).

--proxy-protocol: the server is behind a load balancer (HAProxy, a cloud
load balancer...) that starts every connection with a PROXY protocol
header (v1 text or v2 binary). The header is read before anything else and
names the real client: "[pid N] #K connection from 203.0.113.7:51234 (via
127.0.0.1:40000)", the balancer's own address in parentheses. A connection
without a valid header (or none within 120 s) is closed and logged as one
line: "[pid N] client error from 127.0.0.1:40000: PROXY protocol: ...
(ERR_PROXY_PROTOCOL)". --proxy-trusted NET [NET ...] (needs
--proxy-protocol) accepts headers only from balancers in those networks
(10.0.0.0/8, 127.0.0.1, ::1/128); a connection from anywhere else is closed
before anything is read ("... is not a trusted proxy (EACCES)").

--workers N starts N "echo --reuse-port" processes on one port (chosen first
when --port is 0); the first line is then "listening on HOST:PORT (pid N,
workers W1, W2...)", followed by the workers' lines. Every worker gets the
TLS and PROXY protocol options. If a worker dies, the others are stopped and
the command exits with code 1. SIGTERM is passed on to every worker, each
shuts down gracefully, and the command exits with code 0 once all have."""

_CONNECT_DESCRIPTION = """\
A netcat-like client: stdin goes to the socket, received data to stdout.
The end of stdin ends the writable side (a half-close: the answer is still
read); the command exits when the connection has closed. When the server
ends, the client ends too.

--tls      TLS from the first byte; the server's name is HOST.
--starttls SMTP-style STARTTLS (RFC 3207), then the relay: wait for the
           220 greeting, send "EHLO [<local address>]", wait for 250, send
           "STARTTLS", wait for 220, run the TLS handshake; stdin is read only
           once TLS is up (send EHLO again first, as SMTP requires). The
           plaintext replies are printed too. Any other reply (or a line
           that is no SMTP reply), plaintext after the final 220, the server
           closing before TLS, or TLS not up within --starttls-timeout
           seconds (default 10) aborts with exit code 1.

Certificates are verified against the system's CAs, or --ca-file; the
server's name must match (not for --unix).

--alpn h2,http/1.1 (with --tls or --starttls) offers those protocols (ALPN,
RFC 7301); the server picks one. After the handshake one line on stderr says
which: "ALPN: h2", or "ALPN: none" when the server agreed to none (it does
not do ALPN, or takes none of them). A server that refuses the connection
instead (a no_application_protocol alert) makes it a TLS error, exit code 3.

Connecting, as Node's net.connect(): a HOST name's addresses are tried in
turn, IPv6 and IPv4 interleaved (Happy Eyeballs, RFC 8305), the first to
connect wins; --family 4 or 6 tries only that IP version. --local-address
and --local-port choose the client's own end (default: the system's
choice). --connect-timeout MS gives up when no attempt has connected within
MS milliseconds (ETIMEDOUT, exit code 1); by default the system's own
timeout applies."""

_PROXY_DESCRIPTION = """\
A TCP proxy: it listens on LISTEN_PORT (on --host, default 127.0.0.1) and, for
each connection, connects to TARGET_HOST:TARGET_PORT and joins the two with
two pipes (client.pipe(upstream), upstream.pipe(client)): bytes flow both
ways with backpressure, and a half-close passes through (when one side ends,
the other is ended). A side that fails (reset, refused target) destroys the
other.

It prints "listening on HOST:PORT (pid N)" once listening, then per
connection "[pid N] #K connection from HOST:PORT", "upstream connected to
HOST:PORT", "client error ..." or "upstream error ...", and "close".

SIGTERM stops it gracefully, as echo: it stops accepting, lets the open
connections finish for up to --grace milliseconds (default 5000), then
destroys the rest; SIGINT, or a second SIGTERM, stops it at once."""


def _port(allow_zero: bool) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
        low = 0 if allow_zero else 1
        if not low <= value <= 65535:
            raise argparse.ArgumentTypeError(f"port must be in {low}..65535, not {value}")
        return value

    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of milliseconds, not {text}")
    return value


def _grace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds >= 0, not {text}")
    return value


def _network(text: str) -> str:
    """``10.0.0.0/8``, ``::1/128``, ``127.0.0.1``: a network (an address is
    a network of one), checked as ``proxy_trusted`` checks it."""
    try:
        trusted_networks([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a network: {text!r} ({exc})")
    return text


def _ip_address(text: str) -> str:
    if ip_version(text) is None:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}")
    return text


def _encoding(text: str) -> str:
    try:
        return normalize(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _alpn(text: str) -> tuple[str, ...]:
    """``h2,http/1.1``: ALPN protocol names, comma-separated, in order."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of protocol names, such as h2,http/1.1, not {text!r}"
        )
    try:
        checked = alpn_list(names)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    assert checked is not None  # not empty
    return checked


def build_parser() -> argparse.ArgumentParser:
    """The ``trio-netstream`` parser: the ``demo``, ``echo``, ``connect`` and ``proxy`` commands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Node.js net streams on Trio.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser(
        "demo",
        help="echo server and client on loopback, printing the event transcript",
        description="The echo server of Node's original net docs and a client on loopback,\n"
        "printing the event transcript of both sides.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _demo_options(run_demo)
    echo = commands.add_parser(
        "echo",
        help="the echo server of Node's original net docs, printing every connection event",
        description=_ECHO_DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _echo_options(echo)
    connect = commands.add_parser(
        "connect",
        help="netcat-like client: stdin to the socket, received data to stdout",
        description=_CONNECT_DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s (HOST PORT | --unix PATH) [options]",
    )
    _connect_options(connect)
    proxy = commands.add_parser(
        "proxy",
        help="TCP proxy: LISTEN_PORT to TARGET_HOST:TARGET_PORT, two pipes per connection",
        description=_PROXY_DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _proxy_options(proxy)
    for subparser in (run_demo, echo, connect, proxy):
        subparser.set_defaults(subparser=subparser)
    return parser


def _demo_options(run_demo: argparse.ArgumentParser) -> None:
    run_demo.add_argument("--host", default="127.0.0.1", help="address to listen on")
    run_demo.add_argument(
        "--port", type=_port(True), default=0, help="port (default 0: any free port)"
    )
    run_demo.add_argument(
        "--tls",
        action="store_true",
        help="TLS from the first byte, with a throwaway certificate ('secure' events)",
    )


def _echo_options(echo: argparse.ArgumentParser) -> None:
    echo.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    echo.add_argument(
        "--port",
        type=_port(True),
        default=8124,
        help="TCP port (default: 8124, the examples' port; 0: any free port)",
    )
    echo.add_argument("--unix", metavar="PATH", help="listen on a UNIX socket instead of TCP")
    echo.add_argument("--tls-cert", metavar="FILE", help="serve TLS: certificate chain (PEM)")
    echo.add_argument("--tls-key", metavar="FILE", help="private key (PEM; default: in --tls-cert)")
    echo.add_argument(
        "--alpn",
        type=_alpn,
        metavar="P1,P2",
        help="ALPN protocols to accept, most preferred first (e.g. h2,http/1.1; needs --tls-cert)",
    )
    _echo_proxy_options(echo)
    echo.add_argument(
        "--grace",
        type=_grace,
        default=5000.0,
        metavar="MS",
        help="on SIGTERM, let open connections finish for up to MS milliseconds, "
        "then destroy the rest (default: 5000; 0: at once)",
    )
    echo.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="N processes sharing the TCP port (SO_REUSEPORT; default 1)",
    )
    # Set by ``echo --workers N`` on its workers: only the parent's SIGINT
    # ends a graceful shutdown at once, not a second SIGTERM.
    echo.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    echo.add_argument(
        "--reuse-port",
        action="store_true",
        help="set SO_REUSEPORT, to share the port with other processes",
    )


def _echo_proxy_options(echo: argparse.ArgumentParser) -> None:
    echo.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="every connection starts with a PROXY protocol header (v1 or v2) "
        "naming the real client (behind a load balancer)",
    )
    echo.add_argument(
        "--proxy-trusted",
        type=_network,
        nargs="+",
        metavar="NET",
        help="accept PROXY headers only from these networks "
        "(e.g. 10.0.0.0/8 ::1/128; needs --proxy-protocol)",
    )


def _proxy_options(proxy: argparse.ArgumentParser) -> None:
    proxy.add_argument(
        "listen_port", type=_port(True), metavar="LISTEN_PORT", help="TCP port (0: any free port)"
    )
    proxy.add_argument("target_host", metavar="TARGET_HOST", help="host name or address to relay")
    proxy.add_argument("target_port", type=_port(False), metavar="TARGET_PORT", help="its TCP port")
    proxy.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    proxy.add_argument(
        "--grace",
        type=_grace,
        default=5000.0,
        metavar="MS",
        help="on SIGTERM, let open connections finish for up to MS milliseconds, "
        "then destroy the rest (default: 5000; 0: at once)",
    )


def _connect_options(connect: argparse.ArgumentParser) -> None:
    connect.add_argument("host", nargs="?", metavar="HOST", help="host name or address")
    connect.add_argument("port", nargs="?", type=_port(False), metavar="PORT", help="TCP port")
    connect.add_argument("--unix", metavar="PATH", help="connect to a UNIX socket")
    mode = connect.add_mutually_exclusive_group()
    mode.add_argument("--tls", action="store_true", help="TLS from the first byte")
    mode.add_argument("--starttls", action="store_true", help="SMTP-style STARTTLS (see above)")
    connect.add_argument(
        "--starttls-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="give up unless TLS is up within SECONDS: connection, dialogue and "
        f"handshake (default: {DEFAULT_TIMEOUT:g})",
    )
    trust = connect.add_mutually_exclusive_group()
    trust.add_argument("--ca-file", metavar="FILE", help="trust the CA certificates in FILE (PEM)")
    trust.add_argument(
        "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    connect.add_argument(
        "--alpn",
        type=_alpn,
        metavar="P1,P2",
        help="offer these ALPN protocols (e.g. h2,http/1.1) and print the one agreed on stderr",
    )
    connect.add_argument(
        "--encoding",
        type=_encoding,
        metavar="E",
        help="decode received data for output (utf8, latin1, hex, base64...); "
        "default: raw bytes. stdin is always sent as raw bytes",
    )
    _connecting_options(connect)
    connect.add_argument("-v", "--verbose", action="store_true", help="report progress on stderr")


def _connecting_options(connect: argparse.ArgumentParser) -> None:
    connect.add_argument(
        "--family",
        type=int,
        choices=(0, 4, 6),
        default=0,
        help="IP version of the addresses to try: 4, 6, or 0 for both (default: 0)",
    )
    connect.add_argument(
        "--local-address",
        type=_ip_address,
        metavar="ADDR",
        help="connect from the local IP address ADDR (default: the system's choice)",
    )
    connect.add_argument(
        "--local-port",
        type=_port(True),
        metavar="PORT",
        help="connect from the local port PORT (default: any free port)",
    )
    connect.add_argument(
        "--connect-timeout",
        type=_milliseconds,
        metavar="MS",
        help="give up unless connected within MS milliseconds (default: no limit)",
    )


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line (``sys.argv`` if *argv* is ``None``).

    An argument that no option takes is a usage error of the command it came
    with, reported with that command's usage rather than the top-level one
    (exit code 2, as every usage error).
    """
    args, unknown = build_parser().parse_known_args(None if argv is None else list(argv))
    if unknown:
        command: argparse.ArgumentParser = args.subparser
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    check(args)
    return args


def check(args: argparse.Namespace) -> None:
    """Checks argparse cannot express (they exit with code 2)."""
    parser: argparse.ArgumentParser = args.subparser
    if args.command == "echo":
        if args.tls_key is not None and args.tls_cert is None:
            parser.error("--tls-key needs --tls-cert")
        if args.alpn is not None and args.tls_cert is None:
            parser.error("--alpn needs --tls-cert (ALPN is part of the TLS handshake)")
        if args.unix is not None and args.workers > 1:
            parser.error("--workers needs TCP (SO_REUSEPORT), not --unix")
        if args.proxy_trusted is not None and not args.proxy_protocol:
            parser.error(
                "--proxy-trusted needs --proxy-protocol "
                "(it names the load balancers allowed to send PROXY headers)"
            )
    elif args.command == "connect":
        if args.unix is not None:
            if args.host is not None:
                parser.error("give either HOST PORT or --unix PATH, not both")
        elif args.host is None or args.port is None:
            parser.error("give HOST PORT, or --unix PATH")
        if (args.ca_file is not None or args.insecure) and not (args.tls or args.starttls):
            parser.error("--ca-file and --insecure need --tls or --starttls")
        if args.alpn is not None and not (args.tls or args.starttls):
            parser.error("--alpn needs --tls or --starttls (ALPN is part of the TLS handshake)")
        if args.starttls_timeout is not None and not args.starttls:
            parser.error("--starttls-timeout needs --starttls")
        _check_connecting(parser, args)


def _check_connecting(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """HOST, --family and --local-address must agree on the IP version (the
    library would refuse them with a ValueError when connecting)."""
    if args.unix is not None:
        if args.family or args.local_address is not None or args.local_port is not None:
            parser.error("--family, --local-address and --local-port need HOST PORT, not --unix")
        return
    family, host, local = args.family, args.host, args.local_address
    host_version = ip_version(host)
    local_version = None if local is None else ip_version(local)
    if host_version is not None and family not in (0, host_version):
        parser.error(f"HOST {host} is IPv{host_version}, but --family is {family}")
    if local_version is not None and family not in (0, local_version):
        parser.error(f"--local-address {local} is IPv{local_version}, but --family is {family}")
    if host_version is not None and local_version not in (None, host_version):
        parser.error(f"--local-address {local} is IPv{local_version}, but HOST {host} is not")
