"""``python -m trio_netstream`` / ``trio-netstream``: the command line.

Commands:

* ``demo [--tls]``: the echo server of Node's original ``net`` docs and a
  client on loopback, printing the event transcript of both sides (with
  ``--tls``: TLS from the first byte, with a throwaway certificate).
* ``echo``: the echo server of Node's original ``net`` docs, printing a
  line per connection event;
  ``--workers N`` runs N processes sharing one port (``SO_REUSEPORT``);
  ``--tls-cert`` serves TLS, ``--alpn h2,http/1.1`` accepts those ALPN
  protocols (``secure (ALPN h2)``); ``--proxy-protocol`` (and
  ``--proxy-trusted NET...``) reads a load balancer's PROXY header and logs
  the client it names (``connection from 1.2.3.4:1111 (via
  127.0.0.1:40000)``); SIGTERM shuts it down gracefully within ``--grace``
  ms (every worker too), a second SIGTERM or SIGINT at once.
* ``connect``: a netcat-like client: stdin to the socket, received data to
  stdout; ``--tls`` or SMTP-style ``--starttls``, ``--alpn h2,http/1.1``
  offering ALPN protocols (``ALPN: h2`` on stderr); ``--family``,
  ``--local-address``, ``--local-port`` and ``--connect-timeout`` say how
  it connects.
* ``proxy LISTEN_PORT TARGET_HOST TARGET_PORT``: a TCP proxy, two pipes per
  connection (``client.pipe(upstream)``, ``upstream.pipe(client)``), with
  backpressure and half-close; SIGTERM shuts it down gracefully within
  ``--grace`` ms, as ``echo``.

Exit codes (the same for every command): 0 success (and SIGTERM), 1 network
or protocol error, 2 usage error, 3 TLS or certificate error, 130 SIGINT.

The modules, one concern each: ``_main`` (:func:`main`: parse, run one
command, map failures to exit codes; SIGINT and SIGTERM cancel a running
command, but the first SIGTERM shuts ``echo`` down gracefully),
``_parser`` (the argparse tree and the checks it cannot express),
``_output`` (exit codes, printing, one-line descriptions of errors),
``_certs`` (throwaway certificates, TLS contexts from files), ``_demo``,
``_echo`` (the echo server), ``_workers`` (``echo --workers N``),
``_relay`` (the ``proxy`` command), ``_connect`` (the netcat-like client)
and ``_starttls`` (its SMTP-style STARTTLS dialogue).
"""

from __future__ import annotations

from ._certs import Certificates as Certificates
from ._certs import throwaway_certificates as throwaway_certificates
from ._connect import connect_client as connect_client
from ._demo import demo as demo
from ._echo import echo_server as echo_server
from ._main import main as main
from ._relay import proxy_server as proxy_server
from ._workers import echo_workers as echo_workers

__all__ = [
    "Certificates",
    "connect_client",
    "demo",
    "echo_server",
    "echo_workers",
    "main",
    "proxy_server",
    "throwaway_certificates",
]
