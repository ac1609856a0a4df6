#!/usr/bin/env python3
"""Python `websockets` peer for silverback's interop tests (tests/interop.rs).

    peer.py server PORT MODE   echo server on 127.0.0.1:PORT (0: any free port)
    peer.py client URL MODE    sends the fixed message sequence, checks the echoes

MODE: none, default, server_no_context_takeover, client_no_context_takeover,
both_no_context_takeover, server_window_10, client_window_10, server_window_15
(server_max_window_bits=15 named explicitly: in the client's offer, and in
the server's response whether or not it was offered).

Lines on stdout (each flushed at once):
    PEER websockets <version>     first, always
    READY <port>                  server: listening
    EXT <header value or none>    the Sec-WebSocket-Extensions of the handshake
                                  response (server: sent, per connection;
                                  client: received)
    CLOSED <code> <reason>        server: a connection ended
    ERROR <what>                  server: a connection failed
    OK <n> messages               client: every echo matched
Failures go to stderr; the client then exits non-zero.

The message sequence is the same in peer.js and tests/interop.rs: keep the
three in step (the Rust side checks what it receives against its own copy).
"""

import asyncio
import sys

try:
    import websockets
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed
    from websockets.extensions.permessage_deflate import (
        ClientPerMessageDeflateFactory,
        ServerPerMessageDeflateFactory,
    )
except ImportError as e:  # pragma: no cover - reported to the Rust test
    print(f"MISSING python websockets ({e}): run scripts/interop-deps.sh", file=sys.stderr, flush=True)
    sys.exit(3)

TIMEOUT = 20.0  # seconds; an upper bound for any single step

# Factory arguments per mode; None: no compression at all.
SERVER_MODES = {
    "none": None,
    "default": {},
    "server_no_context_takeover": {"server_no_context_takeover": True},
    "client_no_context_takeover": {"client_no_context_takeover": True},
    "both_no_context_takeover": {"server_no_context_takeover": True, "client_no_context_takeover": True},
    "server_window_10": {"server_max_window_bits": 10},
    "client_window_10": {"client_max_window_bits": 10},
    "server_window_15": {"server_max_window_bits": 15},
}
CLIENT_MODES = {
    "none": None,
    # client_max_window_bits=True (the default): offered without a value.
    "default": {},
    "server_no_context_takeover": {"server_no_context_takeover": True},
    "client_no_context_takeover": {"client_no_context_takeover": True},
    "both_no_context_takeover": {"server_no_context_takeover": True, "client_no_context_takeover": True},
    "server_window_10": {"server_max_window_bits": 10},
    "client_window_10": {"client_max_window_bits": 10},
    # The server must answer with server_max_window_bits (RFC 7692 §7.1.2.1),
    # or websockets refuses the handshake.
    "server_window_15": {"server_max_window_bits": 15},
}


def out(line):
    print(line, flush=True)


# --- the message sequence (same as peer.js and tests/interop.rs) -----------

WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
    "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu", "ünïcödé", "naïve", "café", "smørrebrød", "✓", "🦀",
]
SMALL = "context takeover: the same small message, sent again and again"


class XorShift32:
    def __init__(self, seed):
        self.x = seed

    def next(self):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x


def big_text():
    """About 200 KiB: numbered lines (compressible in any window), then a
    4000-byte block of random words repeated (matches 4 KiB back, beyond a
    10-bit window)."""
    lines = "".join(
        f"{i:05d} the quick brown fox jumps over the lazy dog; ünïcödé ✓ 🦀\n" for i in range(1422)
    )
    rng = XorShift32(0x1234567)
    block = ""
    while len(block.encode()) < 4000:
        block += WORDS[rng.next() % len(WORDS)] + " "
    return lines + block * 25


def random_bytes(n, seed):
    rng = XorShift32(seed)
    return bytes(rng.next() >> 24 for _ in range(n))


def messages():
    """The sequence: str for text messages, bytes for binary ones."""
    seq = [
        "Hello, silverback! ünïcödé ✓ 🦀",
        bytes(range(256)),
        "",
        b"",
        big_text(),
        random_bytes(100 * 1024, 0x9E3779B9),
    ]
    seq += [SMALL] * 12
    seq += [SMALL.encode()] * 12
    seq.append("bye")
    return seq


# --- server ----------------------------------------------------------------


async def run_server(port, mode):
    args = SERVER_MODES[mode]
    extensions = None if args is None else [ServerPerMessageDeflateFactory(**args)]

    async def echo(ws):
        out(f"EXT {ws.response.headers.get('Sec-WebSocket-Extensions') or 'none'}")
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:
            pass
        except Exception as e:  # a bad frame, a failed inflate, ...
            out(f"ERROR {type(e).__name__}: {e}")
            raise
        out(f"CLOSED {ws.close_code} {ws.close_reason}")

    async with serve(
        echo,
        "127.0.0.1",
        port,
        compression=None,
        extensions=extensions,
        max_size=None,
        ping_interval=None,
    ) as server:
        out(f"READY {server.sockets[0].getsockname()[1]}")
        await server.serve_forever()


# --- client ----------------------------------------------------------------


def describe(message):
    kind = "text" if isinstance(message, str) else "binary"
    return f"{kind} of {len(message.encode() if isinstance(message, str) else message)} bytes"


async def run_client(url, mode):
    args = CLIENT_MODES[mode]
    extensions = None if args is None else [ClientPerMessageDeflateFactory(**args)]
    seq = messages()
    async with connect(
        url,
        compression=None,
        extensions=extensions,
        max_size=None,
        ping_interval=None,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        proxy=None,
    ) as ws:
        out(f"EXT {ws.response.headers.get('Sec-WebSocket-Extensions') or 'none'}")
        for i, message in enumerate(seq):
            await asyncio.wait_for(ws.send(message), TIMEOUT)
            echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
            if type(echo) is not type(message) or echo != message:
                fail(f"message {i}: sent {describe(message)}, echo is {describe(echo)} and differs")
        await asyncio.wait_for(ws.close(1000, "done"), TIMEOUT)
        if ws.close_code != 1000:
            fail(f"the server answered the close with {ws.close_code} {ws.close_reason!r}, not 1000")
    out(f"OK {len(seq)} messages")


class Failure(Exception):
    pass


def fail(why):
    raise Failure(why)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("server", "client") or sys.argv[3] not in SERVER_MODES:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    role, where, mode = sys.argv[1:]
    out(f"PEER websockets {websockets.__version__}")
    if role == "server":
        asyncio.run(run_server(int(where), mode))
    else:
        try:
            asyncio.run(run_client(where, mode))
        except Failure as e:
            print(f"FAIL {e}", file=sys.stderr, flush=True)
            sys.exit(1)
        except Exception as e:
            print(f"FAIL {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            sys.exit(1)


if __name__ == "__main__":
    main()
