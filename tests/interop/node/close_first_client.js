'use strict';
// A Node.js client that closes first, for tests/interop/test_tls_clean_close.py.
//
//   node close_first_client.js <tls|tcp> <PORT> <COUNT> <end|destroy> [CA_PEM]
//
// Runs COUNT sessions one after the other against 127.0.0.1:PORT (Node's own
// tls module, or net): each connects, writes one line, waits for the
// server's echo of it, then closes first: end() (close_notify and FIN, then
// it waits for the server's end) or destroy() (the socket is closed at
// once). When the last session has emitted 'close' it prints ONE JSON line:
// {"sessions": [{"events": [...], "errors": [...]}, ...]}, the events each
// client socket saw in order (consecutive 'data' collapsed). A watchdog ends
// the process (status 2, {"watchdog": ...}) if the sessions take too long.
// Only Node's own modules are used.

const net = require('net');
const tls = require('tls');
const fs = require('fs');

const [kind, portText, countText, how, caPath] = process.argv.slice(2);
const port = Number(portText);
const count = Number(countText);
const LINE = 'hello from node\n';
const sessions = [];

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

setTimeout(() => {
  out({ watchdog: true, sessions });
  process.exit(2);
}, 30000).unref();

const ca = kind === 'tls' ? fs.readFileSync(caPath) : null;

function session(index) {
  if (index === count) {
    out({ sessions });
    return;
  }
  const rep = { events: [], errors: [] };
  sessions.push(rep);
  const push = (name) => {
    if (name === 'data' && rep.events[rep.events.length - 1] === 'data') return;
    rep.events.push(name);
  };
  let received = '';
  let closing = false;
  const onUp = () => {
    push(kind === 'tls' ? 'secureConnect' : 'connect');
    sock.write(LINE);
  };
  const sock = kind === 'tls'
    ? tls.connect({ port, host: '127.0.0.1', ca, servername: 'localhost' }, onUp)
    : net.connect({ port, host: '127.0.0.1' }, onUp);
  sock.setEncoding('utf8');
  sock.on('data', (chunk) => {
    push('data');
    received += chunk;
    if (!closing && received.includes(LINE)) {
      closing = true;
      if (how === 'end') sock.end();
      else sock.destroy();
    }
  });
  sock.on('end', () => push('end'));
  sock.on('error', (err) => {
    push('error');
    rep.errors.push({ code: err.code || null, syscall: err.syscall || null, message: String(err.message) });
  });
  sock.on('close', (hadError) => {
    push(`close(${hadError})`);
    rep.received = received;
    setImmediate(() => session(index + 1));
  });
}

session(0);
