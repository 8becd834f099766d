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
'use strict';

const fs = require('fs');
const net = require('net');
const tls = require('tls');

const HOST = '127.0.0.1';
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
  const kinds = { bulk, pingpong, churn, idle };
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
