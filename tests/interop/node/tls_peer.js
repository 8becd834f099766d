'use strict';
// Node's tls module as an ALPN peer, for tests/interop/test_tls_interop_production.py.
//
//   node tls_peer.js client <PORT> <CA_PEM> <ALPN,LIST>
//       tls.connect() to 127.0.0.1:PORT (servername "localhost", verified
//       against CA_PEM) offering ALPNProtocols; on 'secureConnect' it prints
//       {"secureConnect": true, "alpnProtocol": ..., "protocol": ...}, writes
//       one line, and end()s once the server's echo of it came back.
//   node tls_peer.js server <CERT_PEM> <KEY_PEM> <ALPN,LIST>
//       tls.createServer({ALPNProtocols}) on 127.0.0.1, port chosen by the
//       kernel: prints {"listening": PORT}; serves ONE connection: on
//       'secureConnection' prints {"secureConnection": true,
//       "alpnProtocol": ..., "servername": ..., "protocol": ...}, echoes what
//       it receives and ends when the client ends.
//
// Either way, when the socket emits 'close' it prints one JSON report
// {"events": [...], "errors": [...], "received": "..."} and exits 0. A
// watchdog ends the process (status 2, {"watchdog": ...}) after 15 s. Only
// Node's own modules are used.

const tls = require('tls');
const fs = require('fs');

const [role, ...args] = process.argv.slice(2);
const LINE = 'hello over alpn\n';

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const rep = { events: [], errors: [], received: '' };

setTimeout(() => {
  out({ watchdog: true, report: rep });
  process.exit(2);
}, 15000).unref();

function watch(sock, onData) {
  const push = (name) => {
    if (name === 'data' && rep.events[rep.events.length - 1] === 'data') return;
    rep.events.push(name);
  };
  sock.setEncoding('utf8');
  sock.on('data', (chunk) => {
    push('data');
    rep.received += chunk;
    if (onData) onData(chunk);
  });
  sock.on('end', () => push('end'));
  sock.on('error', (err) => {
    push('error');
    rep.errors.push({ code: err.code || null, message: String(err.message) });
  });
  sock.on('close', (hadError) => {
    push(`close(${hadError})`);
    out(rep);
    process.exitCode = 0;
  });
  return push;
}

if (role === 'client') {
  const [portText, caPath, alpn] = args;
  const sock = tls.connect({
    port: Number(portText),
    host: '127.0.0.1',
    servername: 'localhost',
    ca: fs.readFileSync(caPath),
    ALPNProtocols: alpn.split(','),
  });
  let ended = false;
  const push = watch(sock, () => {
    if (!ended && rep.received.includes(LINE)) {
      ended = true;
      sock.end();
    }
  });
  sock.on('secureConnect', () => {
    push('secureConnect');
    out({
      secureConnect: true,
      alpnProtocol: sock.alpnProtocol,
      protocol: sock.getProtocol(),
      authorized: sock.authorized,
    });
    sock.write(LINE);
  });
} else if (role === 'server') {
  const [certPath, keyPath, alpn] = args;
  const server = tls.createServer({
    cert: fs.readFileSync(certPath),
    key: fs.readFileSync(keyPath),
    ALPNProtocols: alpn.split(','),
  });
  server.on('tlsClientError', (err) => {
    out({ tlsClientError: { code: err.code || null, message: String(err.message) } });
  });
  server.on('secureConnection', (sock) => {
    server.close(); // one connection only
    const push = watch(sock, (chunk) => sock.write(chunk));
    push('secureConnection');
    out({
      secureConnection: true,
      alpnProtocol: sock.alpnProtocol,
      servername: sock.servername,
      protocol: sock.getProtocol(),
    });
    sock.on('end', () => sock.end());
  });
  server.listen(0, '127.0.0.1', () => out({ listening: server.address().port }));
} else {
  process.stderr.write(`unknown role ${role}\n`);
  process.exit(64);
}
