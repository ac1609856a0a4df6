#!/usr/bin/env node
// WebSockets over HTTP/2 (RFC 8441) with Node's own `http2` module, for
// tests/http2_node.rs. Only Node's built-in modules are used: the WebSocket
// framing (RFC 6455) and permessage-deflate (RFC 7692, on `zlib`) are
// written out here, independently of silverback (and of the `ws` package).
//
//     h2_peer.js server [OPTIONS]
//         An echo server on 127.0.0.1 (any free port): every extended
//         CONNECT with `:protocol` websocket is answered 200 and its stream
//         speaks WebSocket; each data message is echoed, fragmented when
//         larger than 16 KiB (with a ping between two of its fragments).
//         --tls CERT KEY           TLS with ALPN h2 (default: cleartext, h2c)
//         --no-connect-protocol    leave SETTINGS_ENABLE_CONNECT_PROTOCOL off
//         --protocols A,B          the subprotocols to accept
//         --deflate MODE           none (default), no-takeover, takeover
//         --greet                  send `welcome to <path>` and a ping right
//                                  behind the 200
//         --force-protocol P       answer with subprotocol P, offered or not
//         --force-extension E      answer with extensions E, offered or not
//         --window N               SETTINGS_INITIAL_WINDOW_SIZE N: the
//                                  client may send N bytes on a stream
//                                  before the server's WINDOW_UPDATE
//     A text message `please ping P` makes the server send a ping with
//     payload P before the echo; `please close` makes it start the close
//     handshake (1000 "server bye") instead of echoing; `please reset`
//     makes it reset the stream (RST_STREAM CANCEL) instead; `please
//     goaway` makes it close the session gracefully (GOAWAY: the streams
//     open go on, no new ones) before the echo. A request for the path
//     /refuse/STATUS is answered with STATUS and a short body.
//
//     h2_peer.js client URL [OPTIONS]
//         Opens an HTTP/2 session to URL (http: or https:), waits for the
//         server's SETTINGS to enable the extended CONNECT protocol, tries
//         requests that must be refused (a wrong Sec-WebSocket-Version:
//         426; another :protocol: 400; a plain CONNECT: not 2xx), opens a
//         WebSocket (path <URL path>/abort) and resets its stream part way
//         through a frame, then runs
//         its cases (runCases: echoes of every size, a fragmented message
//         with a ping inside, a ping, the close handshake) on several
//         WebSockets at once on the session.
//         --ca FILE                trust this certificate (https:)
//         --streams N              WebSockets at once (default 3)
//         --protocols A,B          subprotocols to offer
//         --expect-protocol P      the one the server must choose (or none)
//         --deflate MODE           none (default), no-takeover, takeover
//         --greeted                expect `welcome to <path>` from the
//                                  server before the first echo
//         --window N               SETTINGS_INITIAL_WINDOW_SIZE N (the
//                                  server's sending window on each stream)
//
// MODE for permessage-deflate:
//     none         no offer / no acceptance;
//     no-takeover  the client offers, and the server answers,
//                  `permessage-deflate; server_no_context_takeover;
//                  client_no_context_takeover`: every message is compressed
//                  on its own (one-shot zlib calls);
//     takeover     the client offers `permessage-deflate;
//                  client_max_window_bits`, and the server accepts the first
//                  offer it can honour with context takeover wherever the
//                  offer allows it (streaming zlib contexts, kept across
//                  messages).
//
// Lines on stdout (the Rust side reads them):
//     PEER node-http2 node <version>         first, always
//     READY <port>                           server: listening
//     SESSION <n>                            server: the n-th HTTP/2 session
//     OPEN <path> scheme=<s> authority=<a> protocol=<p|none> ext=<answer|none>
//                                            server: a WebSocket accepted
//     PONG <path> <payload>                  server: a pong to its ping
//     RESET <path>, GOAWAY <path>            server: as asked
//     ENDED <path> fin=<bool> rst=<code>     server: a stream closed; fin:
//                                            the client's END_STREAM came;
//                                            rst: the RST_STREAM code (0:
//                                            none, or NO_ERROR)
//     CLOSED <path> <code> by=<client|server> messages=<n> compressed=<n>
//            frames=<n> fragmented=<n> pings=<n> pongs=<n> repeat=<bytes>
//            reason=<text>
//                                            server: a WebSocket closed (1006:
//                                            without a close frame); messages
//                                            received, how many compressed,
//                                            the most frames one came in,
//                                            echoes sent in fragments, pings
//                                            sent and pongs received, the
//                                            payload bytes of the last message
//                                            that repeated the one before (0:
//                                            none)
//     ERROR <path> <what>                    server: a WebSocket failed
//     SETTINGS enableConnectProtocol=<bool>  client: the server's SETTINGS
//     OK <case>                              client: a case passed
//     EXT <stream> <answer|none>             client: the server's answer
//     DONE <streams> streams <n> messages    client: all passed
//     FAIL <what>: <why>                     client: a case failed (exit 1)
//
// H2_PEER_DEBUG=1 in the environment logs every frame in and out on stderr.

'use strict';

const http2 = require('http2');
const zlib = require('zlib');
const crypto = require('crypto');
const fs = require('fs');

const STEP_MS = 30000; // an upper bound for any single step
const FRAGMENT = 16 * 1024; // the server echoes larger messages in fragments
const MAX_MESSAGE = 64 * 1024 * 1024;

function out(line) {
  process.stdout.write(line + '\n');
}

// H2_PEER_DEBUG=1: every frame in and out, on stderr.
const DEBUG = Boolean(process.env.H2_PEER_DEBUG);
function debug(line) {
  if (DEBUG) process.stderr.write(`${line}\n`);
}

// --- WebSocket framing (RFC 6455 §5) ----------------------------------------

const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa };
const OP_NAMES = { 0: 'continuation', 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };

class ProtocolError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function encodeFrame({ fin = true, rsv1 = false, opcode, payload, mask }) {
  const len = payload.length;
  const extra = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const header = Buffer.alloc(2 + extra + (mask ? 4 : 0));
  header[0] = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode;
  let off = 2;
  if (len < 126) {
    header[1] = len;
  } else if (len < 65536) {
    header[1] = 126;
    header.writeUInt16BE(len, 2);
    off = 4;
  } else {
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(len), 2);
    off = 10;
  }
  if (!mask) return Buffer.concat([header, payload]);
  header[1] |= 0x80;
  const key = crypto.randomBytes(4);
  key.copy(header, off);
  const masked = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) masked[i] = payload[i] ^ key[i & 3];
  return Buffer.concat([header, masked]);
}

// Parses frames as bytes arrive. `masked`: whether the peer must mask (it is
// a client). Throws a ProtocolError on anything RFC 6455 forbids.
class FrameParser {
  constructor(masked) {
    this.masked = masked;
    this.chunks = [];
    this.length = 0;
  }

  push(chunk) {
    this.chunks.push(chunk);
    this.length += chunk.length;
    const frames = [];
    for (;;) {
      const frame = this.next();
      if (!frame) return frames;
      frames.push(frame);
    }
  }

  peek(n) {
    if (this.chunks.length > 1 && this.chunks[0].length < n) {
      this.chunks = [Buffer.concat(this.chunks)];
    }
    return this.chunks[0];
  }

  take(n) {
    if (n === 0) return Buffer.alloc(0);
    const buf = this.peek(n);
    const taken = Buffer.from(buf.subarray(0, n));
    const rest = buf.subarray(n);
    if (rest.length) this.chunks[0] = rest;
    else this.chunks.shift();
    this.length -= n;
    return taken;
  }

  next() {
    if (this.length < 2) return null;
    let b = this.peek(Math.min(this.length, 14));
    const fin = (b[0] & 0x80) !== 0;
    const rsv1 = (b[0] & 0x40) !== 0;
    const opcode = b[0] & 0x0f;
    const masked = (b[1] & 0x80) !== 0;
    let len = b[1] & 0x7f;
    let off = 2;
    if (b[0] & 0x30) throw new ProtocolError(1002, 'RSV2 or RSV3 set');
    if (!(opcode in OP_NAMES)) throw new ProtocolError(1002, `reserved opcode ${opcode}`);
    if (masked !== this.masked) {
      throw new ProtocolError(1002, masked ? 'a masked frame from the server' : 'an unmasked frame from the client');
    }
    if (len === 126) {
      if (this.length < 4) return null;
      len = b.readUInt16BE(2);
      off = 4;
      if (len < 126) throw new ProtocolError(1002, `a 16-bit length for ${len} bytes`);
    } else if (len === 127) {
      if (this.length < 10) return null;
      const big = b.readBigUInt64BE(2);
      if (big >> 63n) throw new ProtocolError(1002, 'the most significant bit of a 64-bit length is set');
      if (big > BigInt(MAX_MESSAGE)) throw new ProtocolError(1009, `a ${big}-byte frame`);
      len = Number(big);
      off = 10;
      if (len < 65536) throw new ProtocolError(1002, `a 64-bit length for ${len} bytes`);
    }
    if (opcode >= 0x8) {
      if (!fin) throw new ProtocolError(1002, `a fragmented ${OP_NAMES[opcode]} frame`);
      if (len > 125) throw new ProtocolError(1002, `a ${len}-byte ${OP_NAMES[opcode]} frame`);
      if (rsv1) throw new ProtocolError(1002, `RSV1 on a ${OP_NAMES[opcode]} frame`);
    }
    const keyLen = masked ? 4 : 0;
    if (this.length < off + keyLen + len) return null;
    const head = this.take(off + keyLen);
    const payload = this.take(len);
    if (masked) {
      const key = head.subarray(off, off + 4);
      for (let i = 0; i < len; i++) payload[i] ^= key[i & 3];
    }
    return { fin, rsv1, opcode, payload };
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

function isValidUtf8(buf) {
  try {
    UTF8.decode(buf);
    return true;
  } catch (_) {
    return false;
  }
}

function validCloseCode(code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

// --- permessage-deflate (RFC 7692) on zlib -------------------------------------

const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);
const { Z_SYNC_FLUSH } = zlib.constants;

// A streaming zlib object that keeps its context from one message to the
// next: each message is written, then flushed with Z_SYNC_FLUSH, and what
// came out by the flush's callback is the message's output (the same use
// of zlib as the `ws` package's). One message at a time.
class ZlibContext {
  constructor(z) {
    this.z = z;
    this.output = [];
    this.error = null;
    this.reject = null;
    z.on('data', (data) => this.output.push(data));
    z.on('error', (e) => {
      this.error = e;
      if (this.reject) this.reject(e);
    });
  }

  run(chunks) {
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      this.reject = reject;
      for (const chunk of chunks) this.z.write(chunk);
      this.z.flush(Z_SYNC_FLUSH, () => {
        this.reject = null;
        if (this.error) return reject(this.error);
        const output = Buffer.concat(this.output);
        this.output = [];
        resolve(output);
      });
    });
  }

  close() {
    this.z.close();
  }
}

// Compresses messages: with `takeover` the LZ77 window is kept from one
// message to the next (one zlib stream), without it each message starts
// afresh (one-shot calls).
class Compressor {
  constructor(takeover, windowBits) {
    this.takeover = takeover;
    this.windowBits = windowBits;
    this.context = takeover ? new ZlibContext(zlib.createDeflateRaw({ windowBits })) : null;
  }

  async compress(data) {
    const deflated = this.takeover
      ? await this.context.run([data])
      : zlib.deflateRawSync(data, { windowBits: this.windowBits, finishFlush: Z_SYNC_FLUSH });
    // RFC 7692 §7.2.1: the sync flush's empty stored block ends in
    // 00 00 ff ff, which is left out.
    if (deflated.length < 4 || !deflated.subarray(-4).equals(TAIL)) {
      throw new Error(`deflate output does not end with 00 00 ff ff: ${deflated.toString('hex')}`);
    }
    return deflated.subarray(0, -4);
  }

  close() {
    if (this.context) this.context.close();
  }
}

// Decompresses messages; `takeover`: the peer may refer back to earlier
// messages, so one inflate stream is kept.
class Decompressor {
  constructor(takeover) {
    this.takeover = takeover;
    this.context = takeover ? new ZlibContext(zlib.createInflateRaw({ windowBits: 15 })) : null;
  }

  async decompress(data) {
    if (this.takeover) return this.context.run([data, TAIL]);
    return zlib.inflateRawSync(Buffer.concat([data, TAIL]), { windowBits: 15, finishFlush: Z_SYNC_FLUSH });
  }

  close() {
    if (this.context) this.context.close();
  }
}

// Parses a Sec-WebSocket-Extensions value into [{ name, params: Map }].
function parseExtensions(value) {
  if (!value) return [];
  return value.split(',').map((offer) => {
    const [name, ...rest] = offer.split(';').map((s) => s.trim());
    const params = new Map();
    for (const p of rest) {
      const eq = p.indexOf('=');
      if (eq < 0) params.set(p, true);
      else params.set(p.slice(0, eq).trim(), p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1'));
    }
    return { name, params };
  });
}

function windowBits(value) {
  const n = Number(value);
  return Number.isInteger(n) && n >= 8 && n <= 15 ? n : null;
}

// The server's choice among the client's offers: { answer, deflate } or null.
function acceptDeflate(header, mode) {
  if (mode === 'none') return null;
  for (const { name, params } of parseExtensions(header)) {
    if (name !== 'permessage-deflate') continue;
    let ok = true;
    let serverBits = 15;
    for (const [key, value] of params) {
      if (key === 'server_no_context_takeover' || key === 'client_no_context_takeover') {
        ok = ok && value === true;
      } else if (key === 'server_max_window_bits') {
        serverBits = windowBits(value);
        // zlib makes a raw deflate window of 2^8 one of 2^9: decline.
        ok = ok && serverBits !== null && serverBits >= 9;
      } else if (key === 'client_max_window_bits') {
        ok = ok && (value === true || windowBits(value) !== null);
      } else {
        ok = false;
      }
    }
    if (!ok) continue;
    let serverTakeover = !params.has('server_no_context_takeover');
    let clientTakeover = !params.has('client_no_context_takeover');
    if (mode === 'no-takeover') {
      serverTakeover = false;
      clientTakeover = false;
    }
    let answer = 'permessage-deflate';
    if (!serverTakeover) answer += '; server_no_context_takeover';
    if (!clientTakeover) answer += '; client_no_context_takeover';
    if (params.has('server_max_window_bits')) answer += `; server_max_window_bits=${serverBits}`;
    return {
      answer,
      deflate: { compressor: new Compressor(serverTakeover, serverBits), decompressor: new Decompressor(clientTakeover) },
    };
  }
  return null;
}

// The client's reading of the server's answer to OFFERS[mode]: the
// { compressor, decompressor } to use, null without permessage-deflate;
// throws on an answer the offer does not allow.
function clientDeflate(header, mode) {
  const accepted = parseExtensions(header);
  if (mode === 'none' || accepted.length === 0) {
    if (accepted.length) throw new Error(`the server accepted ${header}, nothing was offered`);
    if (mode !== 'none') throw new Error('the server declined permessage-deflate');
    return null;
  }
  if (accepted.length !== 1 || accepted[0].name !== 'permessage-deflate') {
    throw new Error(`the server accepted ${header}`);
  }
  const params = accepted[0].params;
  let clientBits = 15;
  for (const [key, value] of params) {
    if (key === 'server_no_context_takeover' || key === 'client_no_context_takeover') {
      if (value !== true) throw new Error(`${key} with a value in ${header}`);
    } else if (key === 'server_max_window_bits') {
      if (windowBits(value) === null) throw new Error(`bad ${key} in ${header}`);
    } else if (key === 'client_max_window_bits') {
      clientBits = windowBits(value);
      if (mode !== 'takeover' || clientBits === null || clientBits < 9) {
        throw new Error(`client_max_window_bits not offered, or unusable, in ${header}`);
      }
    } else {
      throw new Error(`unknown parameter ${key} in ${header}`);
    }
  }
  if (mode === 'no-takeover' && !params.has('server_no_context_takeover')) {
    throw new Error(`the server dropped server_no_context_takeover: ${header}`);
  }
  const clientTakeover = mode === 'takeover' && !params.has('client_no_context_takeover');
  return {
    compressor: new Compressor(clientTakeover, clientBits),
    decompressor: new Decompressor(!params.has('server_no_context_takeover')),
  };
}

const OFFERS = {
  none: null,
  'no-takeover': 'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
  takeover: 'permessage-deflate; client_max_window_bits',
};

// --- a WebSocket on an HTTP/2 stream ---------------------------------------

// One WebSocket on `stream` (a Duplex: an Http2Stream). Received frames
// are handled in order on one promise chain, sent frames leave in order on
// another; the handlers get whole (inflated) messages.
//
//   onMessage(opcode, data, { compressed, frames, wire })
//                                                     a data message (wire:
//                                                     its payload bytes)
//   onPong(payload)
//   onClose(code, reason, byUs)                       the handshake is over
//                                                     (code 1006: no close frame)
//   onError(what)                                     a protocol violation
class WebSocketStream {
  constructor(stream, { name, client, deflate, handlers }) {
    this.name = name;
    this.stream = stream;
    this.client = client;
    this.deflate = deflate;
    this.handlers = handlers;
    this.parser = new FrameParser(!client);
    this.message = null;
    this.recv = Promise.resolve();
    this.send = Promise.resolve();
    this.closeSent = false;
    this.closeReceived = false;
    this.done = false;
    stream.on('data', (chunk) => this.onData(chunk));
    stream.on('end', () => this.enqueue(() => this.finish(1006, 'the stream ended without a close frame', false)));
    stream.on('error', (e) => {
      if (!this.done) this.fail(`stream error: ${e.code || ''} ${e.message}`);
    });
    stream.on('close', () => {
      if (!this.done) this.enqueue(() => this.finish(1006, `the stream closed (rst ${stream.rstCode})`, false));
    });
  }

  enqueue(task) {
    this.recv = this.recv.then(task).catch((e) => this.violation(e));
  }

  violation(e) {
    if (this.done) return;
    if (e instanceof ProtocolError) {
      this.fail(`protocol error ${e.code}: ${e.message}`);
      this.writeClose(e.code, e.message.slice(0, 100)).finally(() => this.stream.end());
    } else {
      this.fail(`${e.stack || e}`);
    }
  }

  fail(what) {
    if (this.done) return;
    this.done = true;
    this.handlers.onError(what);
    if (this.deflate) {
      this.deflate.compressor.close();
      this.deflate.decompressor.close();
    }
  }

  onData(chunk) {
    debug(`${this.name} data ${chunk.length}`);
    if (this.done) return;
    let frames;
    try {
      frames = this.parser.push(chunk);
    } catch (e) {
      this.enqueue(() => {
        throw e;
      });
      return;
    }
    for (const frame of frames) {
      debug(`${this.name} <- ${OP_NAMES[frame.opcode]} fin=${frame.fin} rsv1=${frame.rsv1} ${frame.payload.length}`);
      this.enqueue(() => this.onFrame(frame));
    }
  }

  async onFrame(f) {
    if (this.done) return;
    if (this.closeReceived) throw new ProtocolError(1002, `a ${OP_NAMES[f.opcode]} frame after the close frame`);
    switch (f.opcode) {
      case OP.PING:
        if (!this.closeSent) await this.writeFrames([{ opcode: OP.PONG, payload: f.payload }]);
        return;
      case OP.PONG:
        this.handlers.onPong(f.payload);
        return;
      case OP.CLOSE:
        return this.onCloseFrame(f.payload);
      case OP.CONT:
        if (!this.message) throw new ProtocolError(1002, 'a continuation frame outside a message');
        if (f.rsv1) throw new ProtocolError(1002, 'RSV1 on a continuation frame');
        break;
      default:
        if (this.message) throw new ProtocolError(1002, 'a new data frame inside a fragmented message');
        if (f.rsv1 && !this.deflate) throw new ProtocolError(1002, 'RSV1 without permessage-deflate');
        this.message = { opcode: f.opcode, compressed: f.rsv1, parts: [], size: 0, frames: 0 };
    }
    const m = this.message;
    m.parts.push(f.payload);
    m.size += f.payload.length;
    m.frames += 1;
    if (m.size > MAX_MESSAGE) throw new ProtocolError(1009, `a message of more than ${MAX_MESSAGE} bytes`);
    if (!f.fin) return;
    this.message = null;
    let data = Buffer.concat(m.parts);
    if (m.compressed) {
      try {
        data = await this.deflate.decompressor.decompress(data);
      } catch (e) {
        throw new ProtocolError(1007, `cannot inflate a message: ${e.message}`);
      }
    }
    if (m.opcode === OP.TEXT && !isValidUtf8(data)) throw new ProtocolError(1007, 'a text message that is not UTF-8');
    await this.handlers.onMessage(m.opcode, data, { compressed: m.compressed, frames: m.frames, wire: m.size });
  }

  async onCloseFrame(payload) {
    this.closeReceived = true;
    let code = 1005;
    let reason = '';
    if (payload.length === 1) throw new ProtocolError(1002, 'a close frame of one byte');
    if (payload.length >= 2) {
      code = payload.readUInt16BE(0);
      if (!validCloseCode(code)) throw new ProtocolError(1002, `close code ${code}`);
      const rest = payload.subarray(2);
      if (!isValidUtf8(rest)) throw new ProtocolError(1007, 'a close reason that is not UTF-8');
      reason = rest.toString('utf8');
    }
    const byUs = this.closeSent;
    if (!this.closeSent) await this.writeClose(code === 1005 ? null : code, '');
    this.stream.end();
    this.finish(code, reason, byUs);
  }

  finish(code, reason, byUs) {
    if (this.done) return;
    this.done = true;
    if (this.deflate) {
      this.deflate.compressor.close();
      this.deflate.decompressor.close();
    }
    this.handlers.onClose(code, reason, byUs);
  }

  // Queues frames, or functions that give frames (one or an array, maybe
  // later); they leave in order, after everything queued before.
  writeFrames(frames) {
    const mask = this.client;
    const write = async () => {
      const resolved = [];
      for (const f of frames) {
        const got = typeof f === 'function' ? await f() : f;
        if (Array.isArray(got)) resolved.push(...got);
        else resolved.push(got);
      }
      for (const f of resolved) {
        debug(`${this.name} -> ${OP_NAMES[f.opcode]} fin=${f.fin !== false} rsv1=${Boolean(f.rsv1)} ${f.payload.length}`);
        if (!this.stream.destroyed && this.stream.writable) this.stream.write(encodeFrame({ ...f, mask }));
      }
    };
    const sent = this.send.then(write);
    // A failed write fails its caller; the frames queued after it still go.
    this.send = sent.catch(() => {});
    return sent;
  }

  writeClose(code, reason) {
    if (this.closeSent) return this.send;
    this.closeSent = true;
    let payload = Buffer.alloc(0);
    if (code !== null) {
      payload = Buffer.concat([Buffer.alloc(2), Buffer.from(reason, 'utf8')]);
      payload.writeUInt16BE(code, 0);
    }
    return this.writeFrames([{ opcode: OP.CLOSE, payload }]);
  }

  // Sends a data message, compressed when permessage-deflate was agreed, in
  // `pieces` fragments at most; `between`, if given, is the payload of a
  // ping sent between the first two fragments (when there are two), and
  // `onBetween` is then called.
  sendMessage(opcode, data, { pieces = 1, between = null, onBetween = () => {} } = {}) {
    const deflate = this.deflate;
    return this.writeFrames([
      async () => {
        const payload = deflate ? await deflate.compressor.compress(data) : data;
        const size = Math.ceil(payload.length / pieces) || 1;
        const frames = [];
        let off = 0;
        do {
          const part = payload.subarray(off, off + size);
          off += part.length;
          frames.push({
            fin: off >= payload.length,
            rsv1: Boolean(deflate) && frames.length === 0,
            opcode: frames.length === 0 ? opcode : OP.CONT,
            payload: part,
          });
          if (frames.length === 1 && between !== null && off < payload.length) {
            frames.push({ opcode: OP.PING, payload: between });
            onBetween();
          }
        } while (off < payload.length);
        return frames;
      },
    ]).then(() => undefined);
  }
}


// --- server ----------------------------------------------------------------------

function runServer(options) {
  const settings = options.connectProtocol ? { enableConnectProtocol: true } : {};
  if (options.window !== null) settings.initialWindowSize = options.window;
  const server = options.tls
    ? http2.createSecureServer({ cert: fs.readFileSync(options.tls[0]), key: fs.readFileSync(options.tls[1]), settings })
    : http2.createServer({ settings });
  let sessions = 0;
  server.on('session', () => {
    sessions += 1;
    out(`SESSION ${sessions}`);
  });
  server.on('stream', (stream, headers) => {
    const path = headers[':path'] || '?';
    stream.on('error', () => {}); // reported by the WebSocket, if one runs
    // RFC 8441 §5: an orderly close is END_STREAM both ways (a TCP FIN),
    // an abort RST_STREAM CANCEL (a TCP RST).
    stream.on('close', () => out(`ENDED ${path} fin=${stream.readableEnded} rst=${stream.rstCode}`));
    const refuse = (status, why) => {
      stream.respond({ ':status': status, 'content-type': 'text/plain' });
      stream.end(`refused by node: ${why}\n`);
    };
    const refusal = /^\/refuse\/(\d{3})$/.exec(path);
    if (refusal) return refuse(Number(refusal[1]), 'as asked');
    if (headers[':method'] !== 'CONNECT' || headers[':protocol'] !== 'websocket') {
      return refuse(400, `${headers[':method']} with :protocol ${headers[':protocol']}`);
    }
    if (headers['sec-websocket-version'] !== '13') {
      stream.respond({ ':status': 426, 'sec-websocket-version': '13' });
      return stream.end();
    }
    // RFC 8441 §5: no key (and so no accept) over HTTP/2.
    if (headers['sec-websocket-key'] !== undefined) {
      out(`ERROR ${path} the extended CONNECT carries Sec-WebSocket-Key`);
      return refuse(400, 'Sec-WebSocket-Key over HTTP/2');
    }
    const offered = (headers['sec-websocket-protocol'] || '').split(',').map((p) => p.trim()).filter(Boolean);
    const protocol = offered.find((p) => options.protocols.includes(p)) || null;
    const accepted = acceptDeflate(headers['sec-websocket-extensions'], options.deflate);
    const response = { ':status': 200 };
    if (protocol) response['sec-websocket-protocol'] = protocol;
    if (accepted) response['sec-websocket-extensions'] = accepted.answer;
    // Answers the client's checks must refuse: a subprotocol or an
    // extension it did not offer.
    if (options.forceProtocol) response['sec-websocket-protocol'] = options.forceProtocol;
    if (options.forceExtension) response['sec-websocket-extensions'] = options.forceExtension;
    stream.respond(response);
    const { ':scheme': scheme, ':authority': authority } = headers;
    const ext = accepted ? accepted.answer : 'none';
    out(`OPEN ${path} scheme=${scheme} authority=${authority} protocol=${protocol || 'none'} ext=${ext}`);

    const stats = { messages: 0, compressed: 0, frames: 0, fragmented: 0, pings: 0, pongs: 0, repeat: 0 };
    let previous = null;
    const ws = new WebSocketStream(stream, {
      name: `server ${path}`,
      client: false,
      deflate: accepted && accepted.deflate,
      handlers: {
        onMessage: (opcode, data, info) => {
          stats.messages += 1;
          if (info.compressed) stats.compressed += 1;
          stats.frames = Math.max(stats.frames, info.frames);
          // The payload size of a message that repeats the one before: tiny
          // when the sender compresses with the context of the one before.
          if (previous !== null && data.length > 0 && data.equals(previous)) stats.repeat = info.wire;
          previous = data;
          const text = opcode === OP.TEXT ? data.toString('utf8') : null;
          if (text === 'please close') return ws.writeClose(1000, 'server bye');
          if (text === 'please reset') {
            out(`RESET ${path}`);
            return stream.close(http2.constants.NGHTTP2_CANCEL);
          }
          if (text === 'please goaway') {
            // GOAWAY: no new streams; this one goes on, and the session
            // ends when its last stream does.
            out(`GOAWAY ${path}`);
            stream.session.close();
          }
          if (text !== null && text.startsWith('please ping ')) {
            stats.pings += 1;
            ws.writeFrames([{ opcode: OP.PING, payload: Buffer.from(text.slice('please ping '.length)) }]);
          }
          // Larger messages go back in fragments (as many as 16 KiB pieces
          // of the message, whatever the size compressed), with a ping
          // between the first two.
          return ws.sendMessage(opcode, data, {
            pieces: Math.ceil(data.length / FRAGMENT) || 1,
            between: Buffer.from(`between ${stats.messages}`),
            onBetween: () => {
              stats.pings += 1;
              stats.fragmented += 1;
            },
          });
        },
        onPong: (payload) => {
          stats.pongs += 1;
          out(`PONG ${path} ${payload.toString('utf8')}`);
        },
        onClose: (code, reason, byUs) => {
          const { messages, compressed, frames, fragmented, pings, pongs, repeat } = stats;
          out(
            `CLOSED ${path} ${code} by=${byUs ? 'server' : 'client'} messages=${messages} ` +
              `compressed=${compressed} frames=${frames} fragmented=${fragmented} pings=${pings} pongs=${pongs} ` +
              `repeat=${repeat} reason=${reason}`,
          );
        },
        onError: (what) => out(`ERROR ${path} ${what}`),
      },
    });
    // With --greet, a message and a ping right behind the 200, in the same
    // tick (so usually in the same TCP segment), before anything from the
    // client.
    if (options.greet) {
      ws.sendMessage(OP.TEXT, Buffer.from(`welcome to ${path}`));
      ws.writeFrames([{ opcode: OP.PING, payload: Buffer.from('greeting') }]);
      stats.pings += 1;
    }
  });
  server.on('error', (e) => {
    process.stderr.write(`server error: ${e.stack || e}\n`);
    process.exit(1);
  });
  server.listen(0, '127.0.0.1', () => out(`READY ${server.address().port}`));
}

// --- client ----------------------------------------------------------------------

const WORDS = ['alpha', 'bravo', 'charlie', 'delta', 'ünïcödé', 'naïve', 'smørrebrød', '✓', '🦀'];
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

function randomBytes(n, seed) {
  const next = xorshift32(seed);
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = next() >>> 24;
  return buf;
}

// About 200 KiB of text: numbered lines, then random words.
function bigText(seed) {
  const parts = [];
  let size = 0;
  const add = (s) => {
    parts.push(s);
    size += Buffer.byteLength(s);
  };
  for (let i = 0; i < 2000; i++) add(`${String(i).padStart(5, '0')} the quick brown fox; ünïcödé ✓ 🦀\n`);
  const next = xorshift32(seed);
  while (size < 200 * 1024) add(WORDS[next() % WORDS.length] + ' ');
  return Buffer.from(parts.join(''), 'utf8');
}

class Failure extends Error {}

// Waits for the WebSocket's events in order.
class Events {
  constructor(name) {
    this.name = name;
    this.queue = [];
    this.waiting = null;
  }

  push(event) {
    if (this.waiting) {
      const { resolve } = this.waiting;
      this.waiting = null;
      resolve(event);
    } else {
      this.queue.push(event);
    }
  }

  next(what) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = null;
        reject(new Failure(`no ${what} within ${STEP_MS} ms`));
      }, STEP_MS);
      this.waiting = {
        resolve: (event) => {
          clearTimeout(timer);
          resolve(event);
        },
      };
    });
  }
}

function describe(opcode, data) {
  return `${OP_NAMES[opcode]} of ${data.length} bytes`;
}

function withTimeout(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Failure(`no ${what} within ${STEP_MS} ms`)), STEP_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Sends an extended CONNECT; resolves with { req, headers } once the
// response's headers are in.
function connectRequest(session, url, path, extra) {
  const headers = {
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':scheme': url.protocol.slice(0, -1),
    ':path': path,
    ':authority': url.host,
    'sec-websocket-version': '13',
    ...extra,
  };
  const req = session.request(headers, { endStream: false });
  return withTimeout(
    new Promise((resolve, reject) => {
      req.once('response', (response) => resolve({ req, headers: response }));
      req.once('error', reject);
    }),
    `response to the CONNECT for ${path}`,
  );
}

// The cases on one WebSocket; returns the number of data messages sent.
async function runCases(ws, events, tag, deflateMode, ok, greeting) {
  let sent = 0;
  let lastWire = 0;
  const nextEvent = async (what) => {
    const event = await events.next(what);
    if (event.type === 'error') throw new Failure(`${what}: the WebSocket failed: ${event.what}`);
    return event;
  };
  const expectMessage = async (name, opcode, data) => {
    const event = await nextEvent(`the echo of ${name}`);
    lastWire = event.wire;
    if (event.type !== 'message') throw new Failure(`${name}: expected its echo, got a ${event.type}`);
    if (event.opcode !== opcode || !event.data.equals(data)) {
      let first = 0;
      while (first < data.length && first < event.data.length && data[first] === event.data[first]) first++;
      const echo = describe(event.opcode, event.data);
      throw new Failure(`${name}: sent ${describe(opcode, data)}, the echo is ${echo} (first difference at ${first})`);
    }
    if (deflateMode !== 'none' && !event.compressed) throw new Failure(`${name}: the echo was not compressed`);
    if (deflateMode === 'none' && event.compressed) throw new Failure(`${name}: a compressed echo without deflate`);
  };
  const echo = async (name, opcode, data) => {
    await ws.sendMessage(opcode, data);
    sent += 1;
    await expectMessage(name, opcode, data);
    ok(`${tag} ${name}`);
  };

  if (greeting !== null) {
    // Sent by the server right after the upgrade, before anything of ours.
    await expectMessage('greeting', OP.TEXT, Buffer.from(greeting, 'utf8'));
    ok(`${tag} greeting`);
  }
  await echo('text', OP.TEXT, Buffer.from(`Hello from ${tag}! ünïcödé ✓ 🦀`, 'utf8'));
  await echo('binary', OP.BINARY, Buffer.from([...Array(256).keys()]));
  await echo('empty-text', OP.TEXT, Buffer.alloc(0));
  await echo('empty-binary', OP.BINARY, Buffer.alloc(0));
  for (const n of [125, 126, 65535, 65536]) await echo(`binary-${n}`, OP.BINARY, randomBytes(n, n));
  await echo('large-text', OP.TEXT, bigText(tag.length));
  await echo('large-binary', OP.BINARY, randomBytes(100 * 1024, 0x9e3779b9));
  for (let i = 0; i < 6; i++) await echo(`small-${i}`, OP.TEXT, Buffer.from(SMALL, 'utf8'));
  // The sixth echo of the same 62 bytes: a few bytes when the server
  // compresses with the context of the ones before, 40 or more afresh.
  const serverTakeover = ws.deflate !== null && ws.deflate.decompressor.takeover;
  if (serverTakeover ? lastWire > 16 : lastWire < 30) {
    const how = serverTakeover ? 'may keep its context' : 'may not keep its context';
    throw new Failure(`small-5: the server ${how}, and its echo took ${lastWire} bytes`);
  }
  ok(`${tag} context-takeover`);

  // A text message in three fragments, a ping between the first two.
  const fragmented = bigText(7).subarray(0, 3000);
  const between = Buffer.from(`between ${tag}`);
  await ws.sendMessage(OP.TEXT, fragmented, { pieces: 3, between });
  sent += 1;
  const first = await nextEvent('the pong to the ping between fragments');
  if (first.type !== 'pong' || !first.payload.equals(between)) {
    throw new Failure(`fragmented: expected the pong ${between}, got a ${first.type}`);
  }
  await expectMessage('fragmented', OP.TEXT, fragmented);
  ok(`${tag} fragmented`);

  const ping = Buffer.from(`ping from ${tag}`);
  await ws.writeFrames([{ opcode: OP.PING, payload: ping }]);
  const pong = await nextEvent('a pong');
  if (pong.type !== 'pong' || !pong.payload.equals(ping)) throw new Failure(`ping: got a ${pong.type}`);
  ok(`${tag} ping`);

  await ws.writeClose(1000, 'done');
  const closed = await nextEvent('the close handshake');
  if (closed.type !== 'close') throw new Failure(`close: expected the close, got a ${closed.type}`);
  if (closed.code !== 1000) throw new Failure(`close: the server answered ${closed.code} ${closed.reason}`);
  ok(`${tag} close`);
  return sent;
}

async function runClient(urlText, options) {
  const url = new URL(urlText);
  const connectOptions = options.ca ? { ca: fs.readFileSync(options.ca) } : {};
  if (options.window !== null) connectOptions.settings = { initialWindowSize: options.window };
  const session = http2.connect(url.origin, connectOptions);
  session.on('error', (e) => {
    out(`FAIL session: ${e.code || ''} ${e.message}`);
    process.exit(1);
  });
  const settings = await withTimeout(
    new Promise((resolve) => session.once('remoteSettings', resolve)),
    "the server's SETTINGS",
  );
  out(`SETTINGS enableConnectProtocol=${Boolean(settings.enableConnectProtocol)}`);
  if (!settings.enableConnectProtocol) throw new Failure('settings: SETTINGS_ENABLE_CONNECT_PROTOCOL is not 1');
  const ok = (what) => out(`OK ${what}`);
  ok('settings');

  // A wrong version is refused before any WebSocket is opened.
  {
    const { req, headers } = await connectRequest(session, url, '/wrong-version', { 'sec-websocket-version': '8' });
    if (headers[':status'] !== 426) throw new Failure(`refused-version: status ${headers[':status']}, not 426`);
    if (!String(headers['sec-websocket-version'] || '').includes('13')) {
      throw new Failure(`refused-version: the refusal does not name version 13: ${JSON.stringify(headers)}`);
    }
    req.close();
    ok('refused-version');
  }
  // Another :protocol is not a WebSocket: 400 (RFC 8441 §4 leaves it to the
  // server; silverback answers 400).
  {
    const { req, headers } = await connectRequest(session, url, '/wrong-protocol', { ':protocol': 'not-websocket' });
    if (headers[':status'] !== 400) throw new Failure(`refused-protocol: status ${headers[':status']}, not 400`);
    req.close();
    ok('refused-protocol');
  }
  // Nor is a plain CONNECT (no :protocol, a tunnel request): anything but
  // a 2xx.
  {
    const req = session.request({ ':method': 'CONNECT', ':authority': url.host }, { endStream: false });
    const headers = await withTimeout(
      new Promise((resolve, reject) => {
        req.once('response', resolve);
        req.once('error', reject);
      }),
      'the response to a plain CONNECT',
    );
    const status = headers[':status'];
    if (status >= 200 && status < 300) throw new Failure(`refused-plain-connect: status ${status}`);
    req.close();
    ok('refused-plain-connect');
  }

  // A WebSocket aborted part way through a frame (RST_STREAM CANCEL, a TCP
  // RST in RFC 8441 §5's terms): the server must see its end.
  {
    const path = `${url.pathname.replace(/\/$/, '')}/abort`;
    const { req, headers } = await connectRequest(session, url, path, {});
    if (headers[':status'] !== 200) throw new Failure(`abort: status ${headers[':status']}`);
    const frame = encodeFrame({ opcode: OP.TEXT, payload: Buffer.alloc(100, 0x61), mask: true });
    await new Promise((resolve) => req.write(frame.subarray(0, 40), resolve));
    req.close(http2.constants.NGHTTP2_CANCEL);
    ok('abort');
  }

  const extra = {};
  if (options.protocols.length) extra['sec-websocket-protocol'] = options.protocols.join(', ');
  if (OFFERS[options.deflate]) extra['sec-websocket-extensions'] = OFFERS[options.deflate];
  const run = async (i) => {
    const tag = `ws${i}`;
    const path = `${url.pathname.replace(/\/$/, '')}/${tag}`;
    const { req, headers } = await connectRequest(session, url, path, extra);
    if (headers[':status'] !== 200) throw new Failure(`${tag} open: status ${headers[':status']}`);
    if (headers['sec-websocket-accept'] !== undefined) {
      throw new Failure(`${tag} open: Sec-WebSocket-Accept in an HTTP/2 response (RFC 8441 §5)`);
    }
    const protocol = headers['sec-websocket-protocol'] || 'none';
    if (protocol !== options.expectProtocol) {
      throw new Failure(`${tag} open: subprotocol ${protocol}, expected ${options.expectProtocol}`);
    }
    const answer = headers['sec-websocket-extensions'];
    out(`EXT ${tag} ${answer || 'none'}`);
    let deflate;
    try {
      deflate = clientDeflate(answer, options.deflate);
    } catch (e) {
      throw new Failure(`${tag} open: ${e.message}`);
    }
    ok(`${tag} open`);
    const events = new Events(tag);
    const ws = new WebSocketStream(req, {
      name: `client ${tag}`,
      client: true,
      deflate,
      handlers: {
        onMessage: (opcode, data, { compressed, wire }) => events.push({ type: 'message', opcode, data, compressed, wire }),
        onPong: (payload) => events.push({ type: 'pong', payload }),
        onClose: (code, reason) => events.push({ type: 'close', code, reason }),
        onError: (what) => events.push({ type: 'error', what }),
      },
    });
    const greeting = options.greeted ? `welcome to ${path}` : null;
    const sent = await runCases(ws, events, tag, options.deflate, ok, greeting);
    await withTimeout(
      new Promise((resolve) => (req.closed ? resolve() : req.once('close', resolve))),
      `the end of ${tag}'s stream`,
    );
    // RFC 8441 §5: an orderly close ends the stream with END_STREAM, not
    // RST_STREAM.
    if (!req.readableEnded || req.rstCode !== http2.constants.NGHTTP2_NO_ERROR) {
      throw new Failure(`${tag} end: END_STREAM ${req.readableEnded}, RST_STREAM code ${req.rstCode}`);
    }
    ok(`${tag} end`);
    return sent;
  };
  const counts = await Promise.all([...Array(options.streams).keys()].map(run));
  if (new Set(counts).size !== 1) throw new Failure(`streams sent different numbers of messages: ${counts}`);
  await new Promise((resolve) => session.close(resolve));
  out(`DONE ${options.streams} streams ${counts[0]} messages`);
}

// --- main ------------------------------------------------------------------------

function usage(why) {
  process.stderr.write(`${why}\nusage: h2_peer.js server [OPTIONS] | h2_peer.js client URL [OPTIONS]\n`);
  process.exit(2);
}

function parseOptions(args) {
  const options = {
    tls: null,
    connectProtocol: true,
    protocols: [],
    deflate: 'none',
    ca: null,
    streams: 3,
    expectProtocol: 'none',
    greet: false,
    greeted: false,
    window: null,
    forceProtocol: null,
    forceExtension: null,
  };
  for (let i = 0; i < args.length; i++) {
    const value = () => {
      if (i + 1 >= args.length) usage(`${args[i]} needs a value`);
      return args[++i];
    };
    switch (args[i]) {
      case '--tls':
        options.tls = [value(), value()];
        break;
      case '--no-connect-protocol':
        options.connectProtocol = false;
        break;
      case '--greet':
        options.greet = true;
        break;
      case '--greeted':
        options.greeted = true;
        break;
      case '--force-protocol':
        options.forceProtocol = value();
        break;
      case '--force-extension':
        options.forceExtension = value();
        break;
      case '--protocols':
        options.protocols = value().split(',').filter(Boolean);
        break;
      case '--expect-protocol':
        options.expectProtocol = value();
        break;
      case '--deflate':
        options.deflate = value();
        if (!(options.deflate in OFFERS)) usage(`unknown deflate mode ${options.deflate}`);
        break;
      case '--ca':
        options.ca = value();
        break;
      case '--window':
        options.window = Number(value());
        break;
      case '--streams':
        options.streams = Number(value());
        break;
      default:
        usage(`unknown option ${args[i]}`);
    }
  }
  return options;
}

function main() {
  const [role, ...rest] = process.argv.slice(2);
  out(`PEER node-http2 node ${process.version}`);
  if (role === 'server') {
    runServer(parseOptions(rest));
  } else if (role === 'client' && rest.length >= 1) {
    runClient(rest[0], parseOptions(rest.slice(1))).then(
      () => process.exit(0),
      (e) => {
        out(`FAIL ${e instanceof Failure ? e.message : e.stack || e}`);
        process.exit(1);
      },
    );
  } else {
    usage('no role');
  }
}

main();
