#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/seeds/<target>/.

Each seed is a small, meaningful input in the layout its target reads (see the
doc comment at the top of each fuzz_targets/*.rs and common/decoder.rs).
Run it again after changing a layout; the output is deterministic (for a given
zlib, which makes the deflate seeds).

    python3 fuzz/seeds/generate.py
"""
import os
import shutil
import struct
import zlib

ROOT = os.path.dirname(os.path.abspath(__file__))
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 section 5.7

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(opcode, payload=b"", fin=True, rsv=0, mask=None, long_form=None):
    """One frame; `long_form` forces a 16- or 64-bit length encoding."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    m = 0x80 if mask else 0
    if long_form == 64 or (long_form is None and n > 0xFFFF):
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    elif long_form == 16 or (long_form is None and n > 125):
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | n])
    if mask:
        head += mask
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return head + payload


def deflate_messages(messages, wbits=15, level=6, takeover=True):
    """Each message compressed as permessage-deflate sends it (sync flush, tail removed)."""
    out = []
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    for msg in messages:
        if not takeover:
            c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
        data = c.compress(msg) + c.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        out.append(data[:-4])
    return out


HELLO = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])  # RFC 7692 section 7.2.3.1
HELLO_AGAIN = bytes([0xF2, 0x00, 0x11, 0x00, 0x00])  # section 7.2.3.2, with context takeover
FOX = b"the quick brown fox jumps over the lazy dog. " * 8


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def frame_header():
    t = "frame_header"
    write(t, "text-hello-unmasked", frame(TEXT, b"Hello"))
    write(t, "text-hello-masked", frame(TEXT, b"Hello", mask=MASK))
    write(t, "binary-256-len16", frame(BINARY, bytes(256))[:4])
    write(t, "binary-64k-len64-masked", bytes([0x82, 0xFF]) + struct.pack(">Q", 65536) + MASK)
    write(t, "fragment-first", frame(TEXT, b"Hel", fin=False))
    write(t, "continuation-last", frame(CONT, b"lo"))
    write(t, "ping-masked", frame(PING, b"ping", mask=MASK))
    write(t, "pong", frame(PONG, b"pong"))
    write(t, "close-1000", frame(CLOSE, b"\x03\xe8bye", mask=MASK))
    write(t, "rsv1-compressed", frame(TEXT, HELLO, rsv=4))
    write(t, "non-minimal-len16", frame(BINARY, b"ab", long_form=16))
    write(t, "non-minimal-len64", frame(BINARY, b"ab", long_form=64))
    write(t, "reserved-opcode", bytes([0x83, 0x00]))
    write(t, "len64-top-bit", bytes([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]))


def decoder_config(read_limit=None, inflater=None, max_fragments=None, max_frame=None, rsv=None, chunks=(0, 0, 0, 0)):
    """The 14-byte configuration prefix of common/decoder.rs."""
    flags = 0
    if read_limit is not None:
        flags |= 1
    if inflater is not None:
        flags |= 2 | (4 if inflater == "no_takeover" else 0)
    if max_fragments is not None:
        flags |= 8
    if max_frame is not None:
        flags |= 16
    if rsv is not None:
        flags |= 32
    u24 = lambda v: struct.pack("<I", v or 0)[:3]
    return (
        bytes([flags, rsv or 0])
        + u24(read_limit)
        + struct.pack("<H", max_fragments or 0)
        + u24(max_frame)
        + bytes(chunks)
    )


def decoder(target, mask):
    f = lambda *a, **k: frame(*a, mask=mask, **k)
    plain = decoder_config()
    chunked = decoder_config(chunks=(1, 3, 7, 0))
    deflate = decoder_config(inflater="takeover")
    deflate_chunked = decoder_config(inflater="takeover", chunks=(2, 5, 1, 0))
    no_takeover = decoder_config(inflater="no_takeover", read_limit=4096)
    limits = decoder_config(read_limit=1000, max_fragments=3, max_frame=600, chunks=(16, 0, 0, 0))

    write(target, "text-hello", plain + f(TEXT, b"Hello"))
    write(target, "text-hello-chunked", chunked + f(TEXT, b"Hello"))
    fragmented = f(TEXT, b"Hel", fin=False) + f(PING, b"p") + f(CONT, b"", fin=False) + f(CONT, b"lo")
    write(target, "fragments-with-ping", chunked + fragmented)
    utf8 = "héllo wörld ✓ 𝄞".encode()
    write(target, "utf8-split-across-fragments", chunked + f(TEXT, utf8[:2], fin=False) + f(CONT, utf8[2:]))
    write(target, "binary-256", plain + f(BINARY, bytes(range(256))))
    write(target, "binary-len64-form", chunked + f(BINARY, b"abcde", long_form=64))
    write(target, "empty-messages", plain + f(TEXT, b"") + f(BINARY, b"", fin=False) + f(CONT, b""))
    write(target, "controls", plain + f(PING, b"hi") + f(PONG, b"") + f(CLOSE, b"\x03\xe8bye"))
    write(target, "close-no-code", plain + f(CLOSE, b""))
    write(target, "limits-ok", limits + f(BINARY, b"a" * 500, fin=False) + f(CONT, b"b" * 400, fin=False) + f(CONT, b"c"))
    write(target, "limits-too-many-fragments", limits + f(TEXT, b"", fin=False) + f(CONT, b"", fin=False) * 3)
    # RFC 7692 section 7.2.3: "Hello" twice with context takeover, then fragmented.
    hello_twice = f(TEXT, HELLO, rsv=4) + f(TEXT, HELLO_AGAIN, rsv=4)
    write(target, "deflate-hello-twice", deflate + hello_twice)
    write(target, "deflate-hello-twice-chunked", deflate_chunked + hello_twice)
    split = f(TEXT, HELLO[:3], fin=False, rsv=4) + f(PING, b"") + f(CONT, HELLO[3:])
    write(target, "deflate-fragmented", deflate_chunked + split)
    fox = deflate_messages([FOX, FOX], takeover=False)
    write(target, "deflate-no-takeover", no_takeover + f(TEXT, fox[0], rsv=4) + f(BINARY, fox[1], rsv=4))
    mixed = deflate_messages([b"compressed", b""])
    write(target, "deflate-mixed", deflate + f(TEXT, mixed[0], rsv=4) + f(BINARY, b"plain") + f(BINARY, mixed[1], rsv=4))
    bomb = deflate_messages([b"\x00" * 100000], level=9)[0]
    write(target, "deflate-expands-past-limit", no_takeover + f(BINARY, bomb, rsv=4))
    write(target, "rsv-override-no-inflater", decoder_config(rsv=4) + f(BINARY, b"raw", rsv=4))


def http_request():
    t = "http_request"
    rfc = (
        b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + KEY + b"\r\nOrigin: http://example.com\r\n"
        b"Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    write(t, "rfc6455-upgrade", bytes([32]) + rfc)
    same_origin = (
        b"GET /ws?room=1 HTTP/1.1\r\nHost: localhost:8080\r\nConnection: keep-alive, Upgrade\r\n"
        b"Upgrade: websocket\r\nOrigin: https://localhost:8080\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: " + KEY + b"\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        b"Sec-WebSocket-Protocol: v2\r\nSec-WebSocket-Protocol: v1\r\n\r\n"
    )
    write(t, "same-origin-with-extensions", bytes([32]) + same_origin)
    write(t, "early-frame-data", bytes([32]) + same_origin + frame(TEXT, b"Hello", mask=MASK))
    write(t, "too-many-headers", bytes([3]) + rfc)
    write(t, "post-http10", bytes([32]) + b"POST / HTTP/1.0\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
    write(t, "bad-key", bytes([32]) + rfc.replace(KEY, b"AAAAAAAAAAAAAAAAAAAAAAAAAAAA"))


def http_response():
    t = "http_response"
    ok = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n"
    )
    write(t, "rfc6455-101", bytes([32, 0]) + ok + b"\r\n")
    write(t, "101-subprotocol", bytes([32, 2]) + ok + b"Sec-WebSocket-Protocol: chat\r\n\r\n")
    write(
        t,
        "101-deflate-and-frame",
        bytes([32, 1])
        + ok
        + b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
        + frame(TEXT, HELLO, rsv=4),
    )
    write(t, "302-redirect", bytes([32, 0]) + b"HTTP/1.1 302 Found\r\nLocation: ws://elsewhere/\r\n\r\n")
    write(t, "403-body", bytes([32, 0]) + b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden")
    write(t, "wrong-accept", bytes([32, 0]) + ok.replace(ACCEPT, b"AAAAAAAAAAAAAAAAAAAAAAAAAAA=") + b"\r\n")


def extensions():
    t = "extensions"
    default = bytes([0, 7, 7])  # no flags, 15-bit windows both ways
    limited = bytes([1, 2, 4])  # server_no_context_takeover, server 10 bits, client 12 bits
    no_takeover = bytes([3, 7, 1])  # both no_context_takeover, client 9 bits
    raw = bytes([0, 0x80 | 20, 0x80])  # out-of-range windows: only "does not panic"
    # RFC 7692 sections 5 and 7.1.
    write(t, "bare", default + default + b"permessage-deflate")
    write(t, "client-max-window-bits", default + limited + b"permessage-deflate; client_max_window_bits")
    write(
        t,
        "two-offers",
        limited
        + default
        + b"permessage-deflate; client_max_window_bits; server_max_window_bits=10, "
        b"permessage-deflate; client_max_window_bits",
    )
    write(
        t,
        "no-context-takeover",
        no_takeover + no_takeover + b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    )
    write(t, "response-windows", default + limited + b"permessage-deflate; server_max_window_bits=10; client_max_window_bits=12")
    write(t, "quoted-value", default + default + b'permessage-deflate; client_max_window_bits="10"')
    write(t, "unknown-then-deflate", limited + no_takeover + b"x-webkit-deflate-frame\npermessage-deflate; client_max_window_bits=8")
    write(t, "invalid-params", default + default + b"permessage-deflate; server_max_window_bits=16; foo, permessage-deflate; x=\"a b\"")
    write(t, "out-of-range-config", raw + raw + b"permessage-deflate; server_max_window_bits=8")


def inflate():
    t = "inflate"
    # Inflate mode: flags, max_out-1 (u16 LE), first message length (u16 LE), piece size.
    two = HELLO + HELLO_AGAIN
    write(t, "rfc7692-hello-twice", bytes([0]) + struct.pack("<HH", 0xFFFF, len(HELLO)) + bytes([0]) + two)
    write(t, "hello-max-out-1", bytes([0]) + struct.pack("<HH", 0, len(HELLO)) + bytes([1]) + two)
    fox = deflate_messages([FOX, FOX], takeover=False)
    write(t, "fox-no-takeover", bytes([2]) + struct.pack("<HH", 99, len(fox[0])) + bytes([3]) + fox[0] + fox[1])
    bomb = deflate_messages([b"a" * 200000], level=9)[0]
    write(t, "expanding", bytes([0]) + struct.pack("<HH", 0x3FFF, len(bomb)) + bytes([0]) + bomb)
    write(t, "corrupt", bytes([0]) + struct.pack("<HH", 0xFFFF, 5) + bytes([0]) + b"\xff" * 5)
    final_block = zlib.compressobj(6, zlib.DEFLATED, -15)
    ended = final_block.compress(b"end") + final_block.flush(zlib.Z_FINISH)
    write(t, "final-block", bytes([0]) + struct.pack("<HH", 0xFFFF, len(ended)) + bytes([0]) + ended)
    # Round-trip mode: flags, level, window, max_out-1 (u16 LE), deflate piece,
    # inflate piece, new level, separator, then the messages.
    msgs = b"\n".join([b"Hello", b"Hello", b"", FOX, "héllo ✓".encode()])
    write(t, "round-trip-takeover", bytes([1, 6, 6]) + struct.pack("<H", 0xFFFF) + bytes([0, 0, 0, ord("\n")]) + msgs)
    write(t, "round-trip-no-takeover-9-bits", bytes([3, 9, 0]) + struct.pack("<H", 7) + bytes([7, 3, 2, ord("\n")]) + msgs)
    write(t, "round-trip-reset-level-0", bytes([1 | 4 | 8, 0, 3]) + struct.pack("<H", 100) + bytes([1, 0, 10, ord("\n")]) + msgs)


def close_frame():
    t = "close_frame"
    write(t, "empty", b"")
    write(t, "normal", b"\x03\xe8")
    write(t, "normal-bye", b"\x03\xe8bye")
    write(t, "app-code-utf8", b"\x0f\xa0" + "bye é".encode())
    write(t, "too-short", b"\x03")
    write(t, "no-status-1005", b"\x03\xed")
    write(t, "bad-utf8", b"\x03\xe8\xff")
    write(t, "long-reason", b"\x03\xe9" + ("é" * 70).encode())


def main():
    for target in ["frame_header", "decoder_server", "decoder_client", "http_request", "http_response", "extensions", "inflate", "close_frame"]:
        shutil.rmtree(os.path.join(ROOT, target), ignore_errors=True)
    frame_header()
    decoder("decoder_server", MASK)
    decoder("decoder_client", None)
    http_request()
    http_response()
    extensions()
    inflate()
    close_frame()


if __name__ == "__main__":
    main()
