'use strict';
// Node.js's side of tests/reliability/test_happy_eyeballs_netns.py.
//
//   node happy_eyeballs.js client HOST PORT ATTEMPT_TIMEOUT_MS
//       net.connect({host, port, autoSelectFamily: true,
//       autoSelectFamilyAttemptTimeout}); records 'lookup',
//       'connectionAttempt', 'connectionAttemptFailed',
//       'connectionAttemptTimeout', 'connect', 'error' and 'close' with the
//       milliseconds since the call, destroys the socket at 'connect', and
//       prints ONE JSON line {events, connect_ms} at 'close'.
//   node happy_eyeballs.js reset-server
//       listens on 127.0.0.1 (random port), prints {"listening": PORT}, then
//       {"accepted": true} when ONE connection arrives, and at that socket's
//       'close' ONE JSON line {events, error_code}.
//
// Either way a watchdog prints {"watchdog": true} and exits with status 2
// if nothing ended within 20 s. Only Node's own net module is used.

const net = require('net');

const [role, ...args] = process.argv.slice(2);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

setTimeout(() => {
  out({ watchdog: true });
  process.exit(2);
}, 20000).unref();

function encode(value) {
  if (value instanceof Error) {
    return { type: value.name, code: value.code || null, message: String(value.message) };
  }
  return value === undefined ? null : value;
}

if (role === 'client') {
  const [host, port, attemptTimeout] = args;
  const started = process.hrtime.bigint();
  const ms = () => Number(process.hrtime.bigint() - started) / 1e6;
  const events = [];
  let connectMs = null;
  const socket = net.connect({
    host,
    port: Number(port),
    autoSelectFamily: true,
    autoSelectFamilyAttemptTimeout: Number(attemptTimeout),
  });
  for (const name of [
    'lookup', 'connectionAttempt', 'connectionAttemptFailed',
    'connectionAttemptTimeout', 'connect', 'error', 'close',
  ]) {
    socket.on(name, (...values) => {
      events.push({ event: name, ms: ms(), args: values.map(encode) });
    });
  }
  socket.on('connect', () => {
    connectMs = ms();
    socket.destroy();
  });
  socket.on('close', () => out({ events, connect_ms: connectMs }));
} else if (role === 'reset-server') {
  const server = net.createServer((socket) => {
    const events = [];
    let errorCode = null;
    out({ accepted: true });
    socket.on('data', () => events.push('data'));
    socket.on('end', () => events.push('end'));
    socket.on('error', (err) => {
      events.push('error:' + (err.code || err.message));
      errorCode = err.code || null;
    });
    socket.on('close', (hadError) => {
      events.push('close:' + hadError);
      out({ events, error_code: errorCode });
      server.close();
    });
  });
  server.listen(0, '127.0.0.1', () => out({ listening: server.address().port }));
} else {
  process.stderr.write(`unknown role ${role}\n`);
  process.exit(64);
}
