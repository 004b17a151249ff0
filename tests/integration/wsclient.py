"""Loopback clients for the terminal gateways, standard library only:
a WebSocket client (handshake, masked frames out, frames in; able to send
broken frames on purpose) and an event-stream (SSE) client over a raw
socket. Used by tests/integration/test_terminal.py and bench/terminal.py.
"""
import base64
import json
import os
import re
import socket
import time


class WS:
    """A WebSocket client: handshake, masked frames out, frames in."""

    def __init__(self, port, path, headers=None, src=None, timeout=10, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout,
                                             source_address=(src, 0) if src else None)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.head = head.decode()
        self.status = int(self.head.split(" ")[1]) if self.head.startswith("HTTP/") else 0
        self.body = b""
        if self.status != 101:
            self.body = self.buf
        self.closed = None  # (code, reason) once a close frame came

    def send(self, payload, opcode=None, fin=True, mask=True):
        if isinstance(payload, str):
            payload = payload.encode()
            opcode = 1 if opcode is None else opcode
        opcode = 2 if opcode is None else opcode
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            head += bytes([mbit | n])
        elif n < 65536:
            head += bytes([mbit | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([mbit | 127]) + n.to_bytes(8, "big")
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) \
                if n < 4096 else _mask_fast(payload, key)
            head += key
        self.sock.sendall(head + payload)

    def send_raw(self, head, payload=b""):
        """A frame exactly as given: head bytes (broken on purpose), then a
        zero masking key and the payload (so masked with itself)."""
        self.sock.sendall(bytes(head) + b"\0\0\0\0" + payload)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("websocket read timed out")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                raise TimeoutError("websocket read timed out")
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def recv(self, timeout=10):
        """Next frame: (opcode, payload bytes)."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert b1 & 0x80 == 0, "server frames are never masked"
        n, off = b1 & 0x7f, 2
        if n == 126:
            self._need(4, deadline)
            n, off = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            self._need(10, deadline)
            n, off = int.from_bytes(self.buf[2:10], "big"), 10
        self._need(off + n, deadline)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        op = b0 & 0x0f
        if op == 8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.closed = (code, payload[2:].decode())
        return op, payload

    def read_until(self, needle, timeout=15):
        """Collect output (text frames decoded strictly, binary raw) until
        it contains needle. Returns the collected output."""
        deadline = time.monotonic() + timeout
        needle = needle.encode() if isinstance(needle, str) else needle
        chunks, tail = [], b""
        while needle not in tail:
            op, p = self.recv(max(0.01, deadline - time.monotonic()))
            if op == 1:
                p.decode("utf-8")  # strict: text frames must be valid UTF-8
            elif op == 8:
                raise EOFError(f"closed {self.closed} while waiting; got {tail[-300:]!r}")
            if op in (1, 2):
                chunks.append(p)
                tail = tail[-len(needle):] + p
        return b"".join(chunks)

    def read_match(self, pattern, timeout=15):
        """Read output until the regex matches it; the match."""
        deadline = time.monotonic() + timeout
        out = b""
        while not (m := re.search(pattern, out)):
            op, p = self.recv(max(0.01, deadline - time.monotonic()))
            if op in (1, 2):
                out = out[-4096:] + p
            elif op == 8:
                raise EOFError(f"closed {self.closed} while waiting; got {out[-300:]!r}")
        return m

    def wait_close(self, timeout=15):
        """Frames until the close frame; (code, reason, frames before it)."""
        deadline = time.monotonic() + timeout
        frames = []
        while self.closed is None:
            try:
                frames.append(self.recv(max(0.01, deadline - time.monotonic())))
            except EOFError:
                return (None, None, frames)
        return self.closed + (frames,)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _mask_fast(payload, key):
    k = int.from_bytes((key * (len(payload) // 4 + 1))[:len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(len(payload), "big")


class SSE:
    """An event-stream client over a raw socket (chunked encoding)."""

    def __init__(self, port, path, headers=None, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), 10)
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.raw = b""
        while b"\r\n\r\n" not in self.raw:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.raw += chunk
        head, _, self.raw = self.raw.partition(b"\r\n\r\n")
        self.head = head.decode()
        self.status = int(self.head.split(" ")[1])
        self.text = b""  # de-chunked body
        self.ended = False

    def _pump(self, deadline):
        while True:
            # de-chunk what we have
            while True:
                line, sep, rest = self.raw.partition(b"\r\n")
                if not sep:
                    break
                size = int(line.split(b";")[0], 16)
                if len(rest) < size + 2:
                    break
                self.text += rest[:size]
                self.raw = rest[size + 2:]
                if size == 0:
                    self.ended = True
                    return
            if b"\n\n" in self.text:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("event stream read timed out")
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                self.ended = True
                return
            self.raw += chunk

    def raw_events(self, timeout=15):
        """Yield (event, data text or None) until the stream ends or the
        deadline; "message" for a block without an event: line."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n\n" in self.text:
                block, _, self.text = self.text.partition(b"\n\n")
                ev, data = "message", []
                for line in block.decode().split("\n"):
                    if line.startswith("event: "):
                        ev = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                    elif line.startswith(":"):
                        ev = "comment"
                if ev != "comment":
                    yield ev, "\n".join(data) if data else None
            if self.ended:
                return
            self._pump(deadline)

    def events(self, timeout=15):
        """Yield (event, data parsed as JSON) until the stream ends or the
        deadline."""
        for ev, data in self.raw_events(timeout):
            yield ev, json.loads(data) if data is not None else None

    def read_output_until(self, needle, timeout=15):
        out = ""
        for ev, data in self.events(timeout):
            if ev == "output":
                out += data["data"]
                if needle in out:
                    return out
        raise AssertionError(f"stream ended before {needle!r}: {out[-300:]!r}")

    def close(self):
        self.sock.close()
