'use strict';
// A small Node.js peer for the trio_netstream interop tests.
//
//   node peer.js server <mode> <tcp|PATH> [CONFIG_JSON]
//       listens on 127.0.0.1 (random port) or on the UNIX socket PATH, prints
//       {"listening": PORT_OR_PATH} once listening, serves ONE connection.
//   node peer.js client <mode> <PORT|PATH> [CONFIG_JSON]
//       connects to 127.0.0.1:PORT or to the UNIX socket PATH.
//
// Either way the peer prints ONE final JSON line when its socket emits
// 'close': the events it saw in order (consecutive 'data' collapsed into
// one), byte counts and sha256 digests of what it sent and received, the
// error it saw (code, syscall) and mode-specific observations.
// CONFIG_JSON.tls = {ca, cert, key} (file paths) switches to the tls module.
// Only Node's own modules are used (net, tls, crypto, fs, string_decoder).

const net = require('net');
const tls = require('tls');
const fs = require('fs');
const crypto = require('crypto');
const { StringDecoder } = require('string_decoder');

const [role, mode, address, configJson] = process.argv.slice(2);
const cfg = configJson ? JSON.parse(configJson) : {};
const MiB = 1024 * 1024;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function errorInfo(err) {
  return err ? { code: err.code || null, syscall: err.syscall || null, message: String(err.message) } : null;
}

// -- one report per connection -----------------------------------------------------

function makeReport() {
  const rep = {
    role, mode, events: [], received: 0, sent: 0,
    error: null, errors: [], extra: {},
  };
  rep.push = (name) => {
    if (name === 'data' && rep.events[rep.events.length - 1] === 'data') return;
    rep.events.push(name);
  };
  return rep;
}

function watch(sock, rep, { recvHash = true } = {}) {
  const hash = crypto.createHash('sha256');
  const chunks = [];
  sock.on('data', (d) => {
    rep.push('data');
    rep.received += d.length;
    if (recvHash) hash.update(d);
    if (rep.keepText) chunks.push(Buffer.from(d));
  });
  sock.on('end', () => rep.push('end'));
  sock.on('finish', () => rep.push('finish'));
  sock.on('error', (err) => {
    rep.push('error:' + (err.code || err.message));
    rep.errors.push(errorInfo(err));
    if (!rep.error) rep.error = errorInfo(err);
  });
  sock.on('close', (hadError) => {
    rep.push('close:' + hadError);
    rep.received_sha256 = hash.digest('hex');
    if (rep.keepText) rep.text = Buffer.concat(chunks).toString('utf8');
    rep.bytesRead = sock.bytesRead;
    rep.bytesWritten = sock.bytesWritten;
    if (rep.sentHash) rep.sent_sha256 = rep.sentHash.digest('hex');
    delete rep.sentHash;
    out(rep);
    if (server) server.close();
  });
}

function applyOptions(sock, rep) {
  if (cfg.no_delay) {
    rep.extra.setNoDelay_returns_socket = sock.setNoDelay(true) === sock;
  }
  if (cfg.keep_alive) {
    rep.extra.setKeepAlive_returns_socket = sock.setKeepAlive(true, cfg.keep_alive_ms || 1000) === sock;
  }
}

// -- modes: what to do on an established connection (either role) ------------------

// Writes cfg.message (utf8) in pieces, ends, reads until the peer ends.
function send(sock, rep) {
  rep.keepText = true;
  watch(sock, rep);
  const msg = Buffer.from(cfg.message, 'utf8');
  const step = cfg.piece || msg.length;
  for (let i = 0; i < msg.length; i += step) {
    sock.write(msg.subarray(i, i + step));
    rep.sent += Math.min(step, msg.length - i);
  }
  sock.end();
  rep.extra.readyStateAfterEnd = sock.readyState;
}

// Writes cfg.message, waits until all of it came back, THEN ends.
function ping(sock, rep) {
  rep.keepText = true;
  watch(sock, rep);
  const size = Buffer.byteLength(cfg.message);
  rep.sent = size;
  sock.write(cfg.message);
  sock.on('data', () => {
    if (rep.received >= size && !sock.writableEnded) sock.end();
  });
}

// Echoes every byte back; ends after the peer's end.
function echo(sock, rep) {
  watch(sock, rep);
  sock.on('data', (d) => { rep.sent += d.length; sock.write(d); });
  sock.on('end', () => {
    rep.extra.readyStateAtEnd = sock.readyState;
    sock.end();
  });
}

// Reads until the peer's 'end', THEN writes cfg.after (a list of strings),
// one per timer tick, then ends: half-open on Node's side.
function writeAfterEnd(sock, rep) {
  rep.keepText = true;
  watch(sock, rep);
  sock.on('end', () => {
    rep.extra.readyStateAtEnd = sock.readyState;
    rep.extra.writableAtEnd = sock.writable;
    const parts = cfg.after.slice();
    const results = [];
    const next = () => {
      if (!parts.length) {
        rep.extra.writeResults = results;
        sock.end();
        return;
      }
      const part = parts.shift();
      rep.sent += Buffer.byteLength(part);
      results.push(sock.write(part));
      setTimeout(next, 2);
    };
    next();
  });
}

// Receives everything, pausing for cfg.pause_ms after every cfg.pause_every
// bytes; counts 'data' events that arrive while paused (must be none).
function sink(sock, rep) {
  watch(sock, rep);
  let paused = false;
  let nextPause = cfg.pause_every || Infinity;
  rep.extra.pauses = 0;
  rep.extra.dataWhilePaused = 0;
  rep.extra.isPausedSeen = true;
  sock.on('data', () => {
    if (paused) rep.extra.dataWhilePaused += 1;
    if (rep.received >= nextPause) {
      nextPause += cfg.pause_every;
      paused = true;
      rep.extra.pauses += 1;
      sock.pause();
      if (!sock.isPaused()) rep.extra.isPausedSeen = false;
      setTimeout(() => { paused = false; sock.resume(); }, cfg.pause_ms || 20);
    }
  });
  sock.on('end', () => sock.end());
}

// Sends cfg.size random bytes honouring write()'s backpressure, then ends.
function source(sock, rep) {
  watch(sock, rep);
  rep.sentHash = crypto.createHash('sha256');
  rep.extra.writeFalse = 0;
  rep.extra.drains = 0;
  sock.on('drain', () => { rep.extra.drains += 1; });
  const size = cfg.size;
  const pump = () => {
    while (rep.sent < size) {
      const chunk = crypto.randomBytes(Math.min(MiB, size - rep.sent));
      rep.sentHash.update(chunk);
      rep.sent += chunk.length;
      if (!sock.write(chunk)) {
        rep.extra.writeFalse += 1;
        sock.once('drain', pump);
        return;
      }
    }
    sock.end();
  };
  pump();
}

// Writes as fast as the socket takes it, never ends: until an error/close.
function flood(sock, rep) {
  watch(sock, rep);
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  let stopped = false;
  sock.on('close', () => { stopped = true; });
  sock.on('error', () => { stopped = true; });
  const pump = () => {
    while (!stopped && !sock.destroyed) {
      rep.sent += chunk.length;
      if (!sock.write(chunk)) { sock.once('drain', pump); return; }
    }
  };
  pump();
}

// Reads until cfg.limit bytes arrived, pauses for cfg.settle_ms (the peer's
// writes block on full buffers), then destroy() with data unread.
function destroyAfterRead(sock, rep) {
  watch(sock, rep);
  let done = false;
  sock.on('data', () => {
    if (rep.received >= cfg.limit && !done) {
      done = true;
      sock.pause();
      setTimeout(() => {
        rep.push('destroy()');
        sock.destroy();
      }, cfg.settle_ms || 0);
    }
  });
}

// Queues cfg.size bytes in one write, then destroy() after cfg.delay_ms
// while most of it is still queued.
function destroyWhileSending(sock, rep) {
  watch(sock, rep);
  rep.sent = cfg.size;
  sock.write(Buffer.alloc(cfg.size, 0x62));
  setTimeout(() => {
    rep.extra.writableLengthAtDestroy = sock.writableLength;
    rep.push('destroy()');
    sock.destroy();
  }, cfg.delay_ms || 50);
}

// Writes cfg.payload_hex as slices at odd offsets (odd sizes, some corked
// together, a few ms apart), then ends. Reports Node's own decoding of the
// whole buffer and what a StringDecoder makes of the same slices.
function slices(sock, rep) {
  watch(sock, rep);
  sock.setNoDelay(true);
  const buf = Buffer.from(cfg.payload_hex, 'hex');
  const sizes = [1, 2, 3, 5, 7, 1, 11, 13, 2, 17, 1, 19, 23, 3];
  const cuts = [];
  for (let i = 0, k = 0; i < buf.length; k++) {
    const n = Math.min(sizes[k % sizes.length], buf.length - i);
    cuts.push([i, i + n]);
    i += n;
  }
  rep.extra.whole = {};
  rep.extra.stringDecoder = {};
  for (const enc of cfg.encodings) {
    rep.extra.whole[enc] = buf.toString(enc);
    const dec = new StringDecoder(enc);
    rep.extra.stringDecoder[enc] = cuts.map(([a, b]) => dec.write(buf.subarray(a, b))).join('') + dec.end();
  }
  rep.extra.slices = cuts.length;
  let k = 0;
  const next = () => {
    if (k >= cuts.length) { sock.end(); return; }
    const corked = k % 3 === 1;
    if (corked) sock.cork();
    const group = corked ? 3 : 1;
    for (let j = 0; j < group && k < cuts.length; j++, k++) {
      const [a, b] = cuts[k];
      rep.sent += b - a;
      sock.write(buf.subarray(a, b));
    }
    if (corked) process.nextTick(() => sock.uncork());
    setTimeout(next, k % 5 === 0 ? 3 : 1);
  };
  next();
}

// STARTTLS, client side: plaintext HELLO/HI, STARTTLS/GO, then
// tls.connect({socket}) over the same socket, echo cfg.message over TLS.
function starttlsClient(sock, rep) {
  let plain = '';
  let stage = 0;
  const onPlain = (d) => {
    plain += d.toString('latin1');
    if (stage === 0 && plain === 'HI\n') {
      rep.push('plain:HI');
      plain = '';
      stage = 1;
      sock.write('STARTTLS\n');
    } else if (stage === 1 && plain.startsWith('GO\n')) {
      rep.push('plain:GO');
      rep.extra.plainAfterGo = plain.slice(3);
      sock.removeListener('data', onPlain);
      upgrade();
    }
  };
  sock.on('data', onPlain);
  sock.on('error', (err) => { rep.push('plain-error:' + err.code); rep.error = errorInfo(err); });
  sock.write('HELLO\n');

  function upgrade() {
    const t = tls.connect({
      socket: sock,
      ca: fs.readFileSync(cfg.tls.ca),
      servername: 'localhost',
    });
    rep.keepText = true;
    watch(t, rep);
    t.on('secureConnect', () => {
      rep.push('secureConnect');
      rep.extra.authorized = t.authorized;
      rep.extra.authorizationError = t.authorizationError || null;
      rep.extra.encrypted = t.encrypted === true;
      rep.extra.peerSubjectCN = (t.getPeerCertificate().subject || {}).CN || null;
      rep.sent += Buffer.byteLength(cfg.message);
      t.write(cfg.message);
    });
    t.on('data', () => {
      if (rep.received >= Buffer.byteLength(cfg.message) && !t.writableEnded) t.end();
    });
  }
}

// STARTTLS, server side: answers HELLO, on STARTTLS writes GO and wraps the
// socket in a server TLSSocket; echoes over TLS and ends after the peer.
function starttlsServer(sock, rep) {
  let plain = '';
  const onPlain = (d) => {
    plain += d.toString('latin1');
    if (plain === 'HELLO\n') {
      rep.push('plain:HELLO');
      plain = '';
      sock.write('HI\n');
    } else if (plain.startsWith('STARTTLS\n')) {
      rep.push('plain:STARTTLS');
      rep.extra.plainAfterStarttls = plain.slice(9);
      sock.removeListener('data', onPlain);
      sock.write('GO\n');
      const t = new tls.TLSSocket(sock, {
        isServer: true,
        key: fs.readFileSync(cfg.tls.key),
        cert: fs.readFileSync(cfg.tls.cert),
      });
      watch(t, rep);
      t.on('secure', () => { rep.push('secure'); rep.extra.encrypted = t.encrypted === true; });
      t.on('data', (d) => { rep.sent += d.length; t.write(d); });
      t.on('end', () => t.end());
    }
  };
  sock.on('data', onPlain);
}

const MODES = {
  send, ping, echo, write_after_end: writeAfterEnd, sink, source, flood,
  destroy_after_read: destroyAfterRead, destroy_while_sending: destroyWhileSending,
  slices, starttls_client: starttlsClient, starttls_server: starttlsServer,
};

// -- wiring -------------------------------------------------------------------------

let server = null;
const run = MODES[mode];
if (!run) throw new Error('unknown mode ' + mode);
const useTls = Boolean(cfg.tls) && !mode.startsWith('starttls');

let current = null; // the report of the connection, for the watchdog
setTimeout(() => {
  out({ watchdog: true, role, mode, report: current });
  process.exit(2);
}, cfg.watchdog_ms || 30000).unref();

function onConnection(sock, first) {
  const rep = makeReport();
  current = rep;
  rep.events.push(first);
  if (useTls && role === 'client') {
    rep.extra.authorized = sock.authorized;
    rep.extra.authorizationError = sock.authorizationError || null;
    rep.extra.protocol = sock.getProtocol();
  }
  if (useTls && role === 'server') {
    rep.extra.protocol = sock.getProtocol();
  }
  if (cfg.record_address && sock.remoteAddress) {
    rep.extra.remoteFamily = sock.remoteFamily;
  }
  applyOptions(sock, rep);
  run(sock, rep);
}

const baseOptions = { allowHalfOpen: cfg.allow_half_open !== false };

if (role === 'server') {
  const handler = (sock) => {
    server.close(); // one connection only; the process exits after it closes
    onConnection(sock, useTls ? 'secureConnection' : 'connection');
  };
  if (useTls) {
    server = tls.createServer({
      ...baseOptions,
      key: fs.readFileSync(cfg.tls.key),
      cert: fs.readFileSync(cfg.tls.cert),
    }, handler);
  } else {
    server = net.createServer(baseOptions, handler);
  }
  server.on('error', (err) => { out({ serverError: errorInfo(err) }); process.exit(3); });
  const onListening = () => {
    const a = server.address();
    out({ listening: typeof a === 'string' ? a : a.port });
  };
  if (address === 'tcp') server.listen(0, '127.0.0.1', onListening);
  else server.listen(address, onListening);
} else if (role === 'client') {
  const where = /^\d+$/.test(address) ? { port: Number(address), host: '127.0.0.1' } : { path: address };
  if (useTls) {
    const sock = tls.connect({
      ...baseOptions, ...where,
      ca: fs.readFileSync(cfg.tls.ca),
      servername: 'localhost',
    });
    sock.once('secureConnect', () => onConnection(sock, 'secureConnect'));
    sock.once('error', (err) => { if (!sock.listenerCount('close')) { out({ connectError: errorInfo(err) }); } });
  } else {
    const sock = net.connect({ ...baseOptions, ...where });
    sock.once('connect', () => onConnection(sock, 'connect'));
    sock.once('error', (err) => { if (!sock.listenerCount('close')) { out({ connectError: errorInfo(err) }); } });
  }
} else {
  throw new Error('role must be server or client');
}
