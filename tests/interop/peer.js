#!/usr/bin/env node
// Node `ws` peer for silverback's interop tests (tests/interop.rs).
//
//     peer.js server PORT MODE   echo server on 127.0.0.1:PORT (0: any free port)
//     peer.js client URL MODE    sends the fixed message sequence, checks the echoes
//
// MODE: none, default, server_no_context_takeover, client_no_context_takeover,
// both_no_context_takeover, server_window_10, client_window_10.
//
// Lines on stdout:
//     PEER ws <version> node <version>   first, always
//     READY <port>                       server: listening
//     EXT <header value or none>         the Sec-WebSocket-Extensions of the
//                                        handshake response (server: sent, per
//                                        connection; client: received)
//     CLOSED <code> <reason>             server: a connection ended
//     ERROR <what>                       server: a connection failed
//     OK <n> messages                    client: every echo matched
// Failures go to stderr; the client then exits non-zero.
//
// The message sequence is the same in peer.py and tests/interop.rs: keep the
// three in step (the Rust side checks what it receives against its own copy).

'use strict';

let WebSocket, WebSocketServer, wsVersion;
try {
  ({ WebSocket, WebSocketServer } = require('ws'));
  wsVersion = require('ws/package.json').version;
} catch (e) {
  process.stderr.write(`MISSING node ws (${e.message}): run scripts/interop-deps.sh\n`);
  process.exit(3);
}

const TIMEOUT_MS = 20000; // an upper bound for any single step

// perMessageDeflate options per mode; false: no compression at all. The
// threshold is 0 so that small messages are compressed too (ws leaves
// messages under 1 KiB alone by default), which is what makes context
// takeover matter for the repeated small messages.
const common = { threshold: 0 };
const MODES = {
  none: false,
  // The client offers client_max_window_bits without a value.
  default: { ...common },
  server_no_context_takeover: { ...common, serverNoContextTakeover: true },
  client_no_context_takeover: { ...common, clientNoContextTakeover: true },
  both_no_context_takeover: { ...common, serverNoContextTakeover: true, clientNoContextTakeover: true },
  server_window_10: { ...common, serverMaxWindowBits: 10 },
  client_window_10: { ...common, clientMaxWindowBits: 10 },
};

function out(line) {
  process.stdout.write(line + '\n');
}

// --- the message sequence (same as peer.py and tests/interop.rs) ----------

const WORDS = [
  'alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel',
  'india', 'juliett', 'kilo', 'lima', 'mike', 'november', 'oscar', 'papa',
  'quebec', 'romeo', 'sierra', 'tango', 'uniform', 'victor', 'whiskey', 'xray',
  'yankee', 'zulu', 'ünïcödé', 'naïve', 'café', 'smørrebrød', '✓', '🦀',
];
const SMALL = 'context takeover: the same small message, sent again and again';

function xorshift32(seed) {
  let x = seed >>> 0;
  return () => {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    return x;
  };
}

// About 200 KiB: numbered lines (compressible in any window), then a
// 4000-byte block of random words repeated (matches 4 KiB back, beyond a
// 10-bit window).
function bigText() {
  let lines = '';
  for (let i = 0; i < 1422; i++) {
    lines += `${String(i).padStart(5, '0')} the quick brown fox jumps over the lazy dog; ünïcödé ✓ 🦀\n`;
  }
  const next = xorshift32(0x1234567);
  let block = '';
  while (Buffer.byteLength(block) < 4000) {
    block += WORDS[next() % WORDS.length] + ' ';
  }
  return lines + block.repeat(25);
}

function randomBytes(n, seed) {
  const next = xorshift32(seed);
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = next() >>> 24;
  return buf;
}

// The sequence: { binary, data: Buffer }.
function messages() {
  const text = (s) => ({ binary: false, data: Buffer.from(s, 'utf8') });
  const bin = (b) => ({ binary: true, data: Buffer.from(b) });
  const seq = [
    text('Hello, silverback! ünïcödé ✓ 🦀'),
    bin([...Array(256).keys()]),
    text(''),
    bin([]),
    text(bigText()),
    bin(randomBytes(100 * 1024, 0x9e3779b9)),
  ];
  for (let i = 0; i < 12; i++) seq.push(text(SMALL));
  for (let i = 0; i < 12; i++) seq.push(bin(Buffer.from(SMALL, 'utf8')));
  seq.push(text('bye'));
  return seq;
}

// --- server ----------------------------------------------------------------

function runServer(port, mode) {
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port,
    perMessageDeflate: MODES[mode],
    maxPayload: 0,
  });
  wss.on('headers', (headers) => {
    const ext = headers.find((h) => /^sec-websocket-extensions:/i.test(h));
    out(`EXT ${ext ? ext.slice(ext.indexOf(':') + 1).trim() : 'none'}`);
  });
  wss.on('listening', () => out(`READY ${wss.address().port}`));
  wss.on('error', (e) => {
    process.stderr.write(`server error: ${e.stack || e}\n`);
    process.exit(1);
  });
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', (e) => out(`ERROR ${e.code || ''} ${e.message}`));
    ws.on('close', (code, reason) => out(`CLOSED ${code} ${reason.toString()}`));
  });
}

// --- client ----------------------------------------------------------------

function describe(binary, data) {
  return `${binary ? 'binary' : 'text'} of ${data.length} bytes`;
}

function fail(why) {
  process.stderr.write(`FAIL ${why}\n`);
  process.exit(1);
}

function runClient(url, mode) {
  const seq = messages();
  const timer = setTimeout(() => fail(`no progress within ${TIMEOUT_MS} ms`), TIMEOUT_MS);
  const progress = () => timer.refresh();
  const ws = new WebSocket(url, { perMessageDeflate: MODES[mode], maxPayload: 0 });
  let next = 0;
  const send = () => {
    const m = seq[next];
    ws.send(m.data, { binary: m.binary }, (err) => err && fail(`sending message ${next}: ${err.message}`));
  };
  ws.on('upgrade', (res) => out(`EXT ${res.headers['sec-websocket-extensions'] || 'none'}`));
  ws.on('open', send);
  ws.on('message', (data, isBinary) => {
    progress();
    const m = seq[next];
    if (!m) fail(`an unexpected message after the sequence: ${describe(isBinary, data)}`);
    if (isBinary !== m.binary || !data.equals(m.data)) {
      fail(`message ${next}: sent ${describe(m.binary, m.data)}, echo is ${describe(isBinary, data)} and differs`);
    }
    next += 1;
    if (next < seq.length) {
      send();
    } else {
      ws.close(1000, 'done');
    }
  });
  ws.on('error', (e) => fail(`${e.code || 'error'}: ${e.message}`));
  ws.on('close', (code, reason) => {
    if (next < seq.length) fail(`closed after ${next} of ${seq.length} messages: ${code} ${reason}`);
    if (code !== 1000) fail(`the server answered the close with ${code} ${reason}, not 1000`);
    clearTimeout(timer);
    out(`OK ${seq.length} messages`);
    process.exit(0);
  });
}

function main() {
  const [role, where, mode] = process.argv.slice(2);
  if (!['server', 'client'].includes(role) || where === undefined || !(mode in MODES)) {
    process.stderr.write('usage: peer.js server PORT MODE | peer.js client URL MODE\n');
    process.exit(2);
  }
  out(`PEER ws ${wsVersion} node ${process.version}`);
  if (role === 'server') {
    runServer(Number(where), mode);
  } else {
    runClient(where, mode);
  }
}

if (require.main === module) {
  main();
} else {
  module.exports = { messages };
}
