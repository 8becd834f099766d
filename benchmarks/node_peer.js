// The Node.js peer of trio_netstream's benchmark suite (benchmarks/bench.py).
//
//   node node_peer.js server|client|proxy '<json config>'
//
// It speaks the suite's line protocol on stdout (python_peer.py describes
// it): a server, or a proxy once its target's port came on stdin, prints
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
const readline = require('readline');
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

// The sendfile rows' server: the file piped to the socket (the 'api' row:
// Node's way to send a file, it has no zero-copy send), or read in
// cfg.chunk pieces (blocking: the file is in the page cache), each written,
// waiting for 'drain' when write() returns false. The receiver's one-byte
// answer (every byte came) ends the socket.
function sendFile(socket) {
  socket.once('data', () => socket.end());
  if (cfg.by === 'api') {
    fs.createReadStream(cfg.file).pipe(socket, { end: false });
    return;
  }
  const fd = fs.openSync(cfg.file, 'r');
  socket.on('close', () => fs.closeSync(fd));
  function pump() {
    for (;;) {
      const chunk = Buffer.allocUnsafe(cfg.chunk);
      const size = fs.readSync(fd, chunk, 0, cfg.chunk, null);
      if (size === 0) return;
      if (!socket.write(size === cfg.chunk ? chunk : chunk.subarray(0, size))) return;
    }
  }
  socket.on('drain', pump);
  pump();
}

// The http rows' server (as peer_common.http_replies): the requests each
// 'data' completes (a head ending in a blank line; wrk and ab send no body)
// answered in one write(); end() after a "Connection: close" (later requests
// unread), or at the client's end. Node's `net`, not its `http` module.
function httpReply(connection) {
  const body = 'Hello, world!';
  return Buffer.from(
    `HTTP/1.1 200 OK\r\nConnection: ${connection}\r\nContent-Length: ${body.length}\r\n` +
      `Content-Type: text/plain\r\n\r\n${body}`,
  );
}
const HTTP_KEEP_ALIVE = httpReply('keep-alive');
const HTTP_CLOSE = httpReply('close');

// HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with "Connection: keep-alive".
function keepsAlive(head) {
  const lineEnd = head.indexOf('\r\n');
  if (lineEnd < 0) return head.endsWith('HTTP/1.1');
  const headers = head.slice(lineEnd).toLowerCase();
  if (head.slice(0, lineEnd).endsWith('HTTP/1.1')) {
    return !headers.includes('\r\nconnection: close');
  }
  return headers.includes('\r\nconnection: keep-alive');
}

function serveHttp(socket) {
  let buffer = Buffer.alloc(0);
  function onData(data) {
    buffer = buffer.length ? Buffer.concat([buffer, data]) : data;
    const replies = [];
    let start = 0;
    let end;
    while ((end = buffer.indexOf('\r\n\r\n', start)) >= 0) {
      const keepAlive = keepsAlive(buffer.toString('latin1', start, end));
      start = end + 4;
      replies.push(keepAlive ? HTTP_KEEP_ALIVE : HTTP_CLOSE);
      if (!keepAlive) {
        socket.removeListener('data', onData);
        socket.end(Buffer.concat(replies));
        return;
      }
    }
    buffer = buffer.subarray(start);
    if (replies.length) socket.write(replies.length === 1 ? replies[0] : Buffer.concat(replies));
  }
  socket.on('data', onData);
}

function server() {
  const sink = cfg.mode === 'sink';
  let accepted = 0;
  function onConnection(socket) {
    if (cfg.no_delay) socket.setNoDelay(true);
    socket.on('error', () => {});
    if (cfg.mode === 'sendfile') {
      sendFile(socket);
      return;
    }
    if (cfg.mode === 'http') {
      serveHttp(socket);
    } else if (sink) {
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

// The Node-style churn client (cfg.style 'destroy'): write on connect,
// destroy() on the echo (no wait for the server's end), the next connection
// on 'close'. Resolves to whether the byte came back.
function churnDestroyOne() {
  return new Promise((resolve, reject) => {
    let echoed = false;
    const socket = net.connect({ host: HOST, port: cfg.port }, () => socket.write('x'));
    socket.once('data', (data) => {
      echoed = data.toString() === 'x';
      socket.destroy();
    });
    socket.on('close', () => resolve(echoed));
    socket.on('error', reject);
  });
}

async function churn() {
  const destroy = cfg.style === 'destroy';
  let echoed = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < cfg.count; i++) {
    if (!destroy) await churnOne();
    else if (await churnDestroyOne()) echoed += 1;
  }
  const elapsed = seconds(start);
  if (destroy && echoed !== cfg.count) {
    throw new Error(`${echoed} of ${cfg.count} connections echoed the byte`);
  }
  result({ cps: cfg.count / elapsed });
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

// The proxy row's proxy (its target's port from stdin, as cfg.target): the
// canonical Node.js proxy, two pipes per connection.
function proxy() {
  const server = net.createServer((client) => {
    client.setNoDelay(true);
    const upstream = net.connect({ host: HOST, port: cfg.target });
    upstream.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  server.on('error', fail);
  server.listen({ host: HOST, port: 0, backlog: BACKLOG }, () => {
    say('READY ' + server.address().port);
  });
}

// The readline row's reader: readline.createInterface and its 'line' event.
function readLines() {
  const start = process.hrtime.bigint();
  const socket = net.connect({ host: HOST, port: cfg.port });
  const rl = readline.createInterface({ input: socket, crlfDelay: Infinity });
  let lines = 0;
  let size = 0;
  rl.on('line', (line) => {
    lines += 1;
    size += line.length + 1; // its '\n' (the lines are ASCII)
    if (lines !== cfg.lines) return;
    const elapsed = seconds(start);
    if (size !== cfg.bytes) fail(new Error(`read ${size} bytes, not ${cfg.bytes}`));
    result({ seconds: elapsed, lps: lines / elapsed });
    rl.close();
    socket.end();
  });
  socket.on('error', fail);
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

// Once the first line of stdin (a port) came: run(port). The orchestrator
// closes stdin when it is done with us (the idle client holds its
// connections until then).
function withPort(run) {
  let input = '';
  let started = false;
  process.stdin.on('data', (data) => {
    if (started) return;
    input += data;
    const newline = input.indexOf('\n');
    if (newline < 0) return;
    started = true;
    Promise.resolve(run(parseInt(input.slice(0, newline), 10))).catch(fail);
  });
  process.stdin.on('end', () => process.exit(started ? 0 : 1));
}

function client() {
  const kinds = { bulk, pingpong, churn, idle, handshake, readline: readLines };
  const run = kinds[cfg.kind];
  if (!run) fail(new Error('unknown client kind ' + cfg.kind));
  withPort((port) => {
    cfg.port = port; // the server's, once it listens
    return run();
  });
}

if (role === 'server') server();
else if (role === 'client') client();
else if (role === 'proxy') {
  withPort((port) => {
    cfg.target = port; // the sink's, once it listens
    proxy();
  });
} else fail(new Error('usage: node node_peer.js server|client|proxy <json config>'));
