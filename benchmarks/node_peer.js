// The Node.js peer of trio_netstream's benchmark suite (benchmarks/bench.py).
//
//   node node_peer.js server|client '<json config>'
//
// It speaks the suite's line protocol on stdout: a server prints
// "READY <port>" once listening (and "ACCEPTED <n>" once it holds the idle
// benchmark's n connections); a client prints "RESULT <json>", or
// "CONNECTED <n>" for the idle benchmark and then holds its connections
// until its stdin is closed. A client reads the server's port as the first
// line of its stdin. See the module docstring of bench.py for what
// each benchmark does; this file does the same with Node's `net` and `tls`.
// (A client that cannot do what a row measures prints "UNSUPPORTED
// <reason>" instead of RESULT; this one can do every row.)
'use strict';

const fs = require('fs');
const net = require('net');
const tls = require('tls');

const HOST = '127.0.0.1';
const TLS_NAME = 'localhost'; // bench_spec.TLS_NAME
const BACKLOG = 4096;
const IDLE_CONNECT_BATCH = 100;

const [role, blob] = process.argv.slice(2);
const cfg = JSON.parse(blob);

function say(line) {
  process.stdout.write(line + '\n');
}

function result(values) {
  say('RESULT ' + JSON.stringify(values));
}

function fail(err) {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
}

function seconds(start) {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function connect(onConnect) {
  if (cfg.tls) {
    const options = { host: HOST, port: cfg.port, ca: fs.readFileSync(cfg.tls.ca) };
    return tls.connect(options, onConnect);
  }
  return net.connect({ host: HOST, port: cfg.port }, onConnect);
}

// The one TLS version of the handshake rows (cfg.tls.version), on both sides.
function versions() {
  return cfg.tls && cfg.tls.version
    ? { minVersion: cfg.tls.version, maxVersion: cfg.tls.version }
    : {};
}

function server() {
  const sink = cfg.mode === 'sink';
  let accepted = 0;
  function onConnection(socket) {
    if (cfg.no_delay) socket.setNoDelay(true);
    socket.on('error', () => {});
    if (sink) {
      let received = 0;
      socket.on('data', (data) => {
        const before = received;
        received += data.length;
        if (before < cfg.bytes && received >= cfg.bytes) socket.write('k');
      });
    } else {
      socket.on('data', (data) => socket.write(data));
    }
    socket.on('end', () => socket.end());
    accepted += 1;
    if (accepted === cfg.connections) say('ACCEPTED ' + accepted);
  }
  const server = cfg.tls
    ? tls.createServer(
        {
          key: fs.readFileSync(cfg.tls.key),
          cert: fs.readFileSync(cfg.tls.cert),
          allowHalfOpen: true,
          ...versions(),
        },
        onConnection,
      )
    : net.createServer({ allowHalfOpen: true }, onConnection);
  server.on('error', fail);
  server.listen({ host: HOST, port: 0, backlog: BACKLOG }, () => {
    say('READY ' + server.address().port);
  });
}

function bulk() {
  const chunk = Buffer.alloc(cfg.chunk, 'x');
  const writes = Math.floor(cfg.bytes / cfg.chunk);
  const start = process.hrtime.bigint();
  let sent = 0;
  const socket = connect(pump);
  if (cfg.no_delay) socket.setNoDelay(true);
  function pump() {
    while (sent < writes) {
      sent += 1;
      if (!socket.write(chunk)) return; // wait for 'drain'
    }
  }
  socket.on('drain', pump);
  socket.once('data', () => {
    const elapsed = seconds(start);
    result({ seconds: elapsed, mbps: cfg.bytes / elapsed / 1e6 });
    socket.end();
  });
  socket.on('error', fail);
}

function pingpong() {
  const message = Buffer.alloc(cfg.size, 'p');
  const latencies = new Float64Array(cfg.rounds);
  let done = 0;
  let pending = 0;
  let sentAt = 0n;
  let start = 0n;
  const socket = net.connect({ host: HOST, port: cfg.port }, () => {
    start = process.hrtime.bigint();
    send();
  });
  socket.setNoDelay(true);
  function send() {
    sentAt = process.hrtime.bigint();
    socket.write(message);
  }
  socket.on('data', (data) => {
    pending += data.length;
    if (pending < message.length) return;
    pending -= message.length;
    latencies[done] = Number(process.hrtime.bigint() - sentAt);
    done += 1;
    if (done < cfg.rounds) {
      send();
      return;
    }
    const elapsed = seconds(start);
    const ordered = Array.from(latencies).sort((a, b) => a - b);
    const pct = (q) =>
      ordered[Math.min(ordered.length - 1, Math.round(q * (ordered.length - 1)))] / 1000;
    result({ rtps: cfg.rounds / elapsed, p50_us: pct(0.5), p99_us: pct(0.99) });
    socket.end();
  });
  socket.on('error', fail);
}

function churnOne() {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port: cfg.port }, () => socket.write('x'));
    socket.once('data', () => socket.end());
    socket.on('close', resolve);
    socket.on('error', reject);
  });
}

async function churn() {
  const start = process.hrtime.bigint();
  for (let i = 0; i < cfg.count; i++) await churnOne();
  result({ cps: cfg.count / seconds(start) });
}

// One connection of the handshake rows: the handshake, a byte and its echo,
// end() (close_notify and FIN), then the server's end and the close.
// Resolves to [resumed, session]: the session is the latest ticket's (TLS 1.3
// tickets come after the handshake, before the echo), or null if none came;
// asked for only when resuming (a 'session' listener makes Node deliver them).
function handshakeOne(context, session) {
  return new Promise((resolve, reject) => {
    const options = { host: HOST, port: cfg.port, servername: TLS_NAME, secureContext: context };
    if (session) options.session = session;
    const socket = tls.connect(options, () => socket.write('x'));
    socket.setNoDelay(true);
    let latest = null;
    let resumed = null;
    if (cfg.resume) socket.on('session', (ticket) => (latest = ticket));
    socket.once('data', (data) => {
      if (data.toString() === 'x') resumed = socket.isSessionReused();
      socket.end();
    });
    socket.on('close', () =>
      resumed === null ? reject(new Error('no echo')) : resolve([resumed, latest]),
    );
    socket.on('error', reject);
  });
}

async function handshake() {
  const context = tls.createSecureContext({ ca: fs.readFileSync(cfg.tls.ca), ...versions() });
  let session = null;
  if (cfg.resume) [, session] = await handshakeOne(context, null); // untimed: the first session
  let resumed = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < cfg.count; i++) {
    const [reused, ticket] = await handshakeOne(context, session);
    if (reused) resumed += 1;
    // A resumed connection may bring no new ticket (Node's server sends none):
    // then the session it resumed is still the latest.
    if (cfg.resume && ticket) session = ticket;
  }
  const elapsed = seconds(start);
  const expected = cfg.resume ? cfg.count : 0;
  if (resumed !== expected) {
    throw new Error(`${resumed} of ${cfg.count} handshakes resumed a session, not ${expected}`);
  }
  result({ hps: cfg.count / elapsed, resumed });
}

function idle() {
  const held = [];
  let connected = 0;
  function batch() {
    const target = Math.min(connected + IDLE_CONNECT_BATCH, cfg.connections);
    const size = target - held.length;
    for (let i = 0; i < size; i++) {
      const socket = net.connect({ host: HOST, port: cfg.port }, () => {
        connected += 1;
        if (connected === cfg.connections) {
          say('CONNECTED ' + connected);
        } else if (connected === target) {
          batch();
        }
      });
      socket.on('error', fail);
      held.push(socket);
    }
  }
  batch();
  // The connections are held until the orchestrator closes our stdin; then
  // the process exits at once (the kernel closes every socket).
}

function client() {
  const kinds = { bulk, pingpong, churn, idle, handshake };
  const run = kinds[cfg.kind];
  if (!run) fail(new Error('unknown client kind ' + cfg.kind));
  // The orchestrator sends the port on stdin once the server listens, and
  // closes stdin when it is done with us (the idle client holds its
  // connections until then).
  let input = '';
  let started = false;
  process.stdin.on('data', (data) => {
    if (started) return;
    input += data;
    const newline = input.indexOf('\n');
    if (newline < 0) return;
    started = true;
    cfg.port = parseInt(input.slice(0, newline), 10);
    Promise.resolve(run()).catch(fail);
  });
  process.stdin.on('end', () => process.exit(started ? 0 : 1));
}

if (role === 'server') server();
else if (role === 'client') client();
else fail(new Error('usage: node node_peer.js server|client <json config>'));
