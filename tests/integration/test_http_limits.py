"""Request bodies cannot exhaust the daemon's memory (attack tests).

An attacker without a token opens many connections that each declare a
large body and send it slowly. Before, every such body was read into
memory before a handler looked at the token: 96 connections took the
daemon from 38 MiB to 3 GiB. Now /cp authenticates from the request head
and never reads a stranger's body, bodies kept in memory (previews, XRPC)
count against a budget per client address and in total, and a /cp upload
streams to disk. Each test watches the daemon's resident memory
(/proc/PID/status VmRSS) while it is attacked.

One daemon per module; clients come from several loopback addresses
(127.0.0.x), as different machines would.
"""
import gzip
import hashlib
import http.client
import json
import os
import selectors
import socket
import tarfile
import threading
import time

import pytest

from conftest import wait_for
from test_daemon import serving

RSS_SLACK = 64 << 20  # what the attacks may add to the daemon's memory
CP_BODY = 32 << 20     # a declared /cp body (what the daemon once kept in memory)
PREVIEW_BODY = 10 << 20  # the proxy keeps up to 10 MiB of a body in memory


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("limits")) as d:
        # A running sandbox with an exposed port: a preview whose owner's
        # bodies the proxy takes into memory (after the token opened it).
        st, sb = d.call("io.pocketenv.sandbox.createSandbox",
                        body={"base": "busybox", "name": "x"})
        assert st == 200, sb
        d.wait_status("x", ["RUNNING"])
        st, out = d.call("io.pocketenv.sandbox.exposePort", {"id": "x"}, {"port": 8080})
        assert st == 200, out
        d.preview = f"/p/{sb['id']}/8080/"
        yield d


def rss(d):
    with open(f"/proc/{d.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def buffered(d):
    """The daemon's own count of request-body bytes held in memory."""
    c = http.client.HTTPConnection(d.url[len("http://"):], timeout=10)
    c.request("GET", "/metrics", headers={"Authorization": f"Bearer {d.token}"})
    text = c.getresponse().read().decode()
    c.close()
    for line in text.splitlines():
        if line.startswith("pocketenv_http_body_bytes_buffered "):
            return int(line.split()[1])
    raise AssertionError("no pocketenv_http_body_bytes_buffered in /metrics")


def open_head(d, src, path, length, token=None):
    """A connection from src that sends a POST head declaring length bytes
    and nothing of the body."""
    port = int(d.url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(src, 0))
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/gzip",
            f"Content-Length: {length}"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    return s


def answers(socks, timeout):
    """For each socket, the answer's status and body if one came within
    timeout (else None); reads until the head and Content-Length body."""
    sel = selectors.DefaultSelector()
    got = {s: b"" for s in socks}
    done = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while len(done) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                chunk = b""
            got[s] += chunk
            head, sep, body = got[s].partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if len(body) >= length:
                    done[s] = (int(head.split()[1]), head.decode(), body[:length])
            if s in done or not chunk:
                sel.unregister(s)
                done.setdefault(s, None)
    sel.close()
    for s in socks:
        s.setblocking(True)
    return [done.get(s) for s in socks]


def pump(socks, seconds, chunk=256 << 10):
    """Keep sending body bytes on every socket, slowly, as an attacker
    would; errors (a socket the daemon closed) are the point."""
    data = b"\0" * chunk
    end = time.monotonic() + seconds
    alive = list(socks)
    while alive and time.monotonic() < end:
        for s in list(alive):
            try:
                s.setblocking(False)
                s.send(data)
            except BlockingIOError:
                pass
            except OSError:
                alive.remove(s)
        time.sleep(0.2)


def close_all(socks):
    for s in socks:
        s.close()


def test_bodies_without_a_token_are_never_read(daemon):
    d = daemon
    base = rss(d)
    cp = [open_head(d, "127.0.0.2", "/cp", CP_BODY) for _ in range(64)]
    preview = [open_head(d, "127.0.0.3", d.preview, PREVIEW_BODY) for _ in range(64)]
    # Not a byte of any body was sent: /cp answers from the head alone.
    got = answers(cp, 15)
    for a in got:
        assert a is not None, "a /cp request without a token waited for its body"
        status, head, body = a
        assert status == 401 and json.loads(body)["error"] == "AuthenticationRequired", a
        assert "Connection: close" in head
    # A preview judges the credentials from the head too: no body is read.
    got = answers(preview, 5)
    for a in got:
        assert a is not None, "a preview request without a token waited for its body"
        assert a[0] == 401 and json.loads(a[2])["error"] == "AuthenticationRequired", a
    # Then the bodies come, slowly, on every connection.
    pump(cp + preview, 4)
    grown = rss(d) - base
    close_all(cp + preview)
    assert grown < RSS_SLACK, f"the daemon grew by {grown >> 20} MiB"
    wait_for(lambda: buffered(d) == 0, 10, "buffered body bytes to be given back")
    assert d.healthy()


def test_valid_token_bodies_are_budgeted(daemon):
    d = daemon
    base = rss(d)
    # One address: its 16 MiB share admits one 10 MiB body, the rest 429.
    socks = [open_head(d, "127.0.0.4", d.preview, PREVIEW_BODY, d.token) for _ in range(32)]
    got = answers(socks, 5)
    refused = [a for a in got if a is not None]
    assert len(refused) >= 31, got
    for status, head, body in refused:
        assert status == 429 and json.loads(body)["error"] == "RateLimitExceeded", body
        assert "Retry-After: " in head
    # Many addresses: the 64 MiB total admits six, the rest 503.
    spread = [open_head(d, f"127.0.1.{i}", d.preview, PREVIEW_BODY, d.token)
              for i in range(1, 11)]
    got = answers(spread, 5)
    refused = [a for a in got if a is not None]
    assert len(refused) >= 4, got
    for status, head, body in refused:
        assert status == 503 and json.loads(body)["error"] == "NotEnoughResources", body
        assert "Retry-After: " in head
    assert buffered(d) <= 64 << 20
    pump(socks + spread, 3)
    grown = rss(d) - base
    close_all(socks + spread)
    assert grown < RSS_SLACK + (64 << 20), f"the daemon grew by {grown >> 20} MiB"
    wait_for(lambda: buffered(d) == 0, 10, "buffered body bytes to be given back")


class RandomReader:
    """A file-like source of size random bytes, never all in memory."""

    def __init__(self, size):
        self.left = size

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


def test_big_upload_streams_to_disk(daemon, tmp_path):
    d = daemon
    size = 300 << 20
    path = tmp_path / "big.tar.gz"
    # Random data, stored (gzip level 0): the archive is as big as its data.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as t:
        ti = tarfile.TarInfo("noise")
        ti.size = size
        t.addfile(ti, RandomReader(size))
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    want = sha.hexdigest()
    base = rss(d)
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], rss(d))
            time.sleep(0.05)
    watcher = threading.Thread(target=watch)
    watcher.start()
    # As upstream's CLI sends it: multipart/form-data, field "file".
    boundary = "pocketenv-test-boundary"
    pre = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
           f"filename=\"big.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n").encode()
    post = f"\r\n--{boundary}--\r\n".encode()
    total = len(pre) + os.path.getsize(path) + len(post)
    conn = http.client.HTTPConnection(d.url[len("http://"):], timeout=300)
    try:
        conn.putrequest("POST", "/cp")
        conn.putheader("Authorization", f"Bearer {d.token}")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(total))
        conn.endheaders()
        conn.send(pre)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                conn.send(chunk)
        conn.send(post)
        r = conn.getresponse()
        status, out = r.status, json.loads(r.read())
    finally:
        stop.set()
        watcher.join()
        conn.close()
    assert status == 200, out
    assert peak[0] - base < RSS_SLACK, f"the daemon grew by {(peak[0] - base) >> 20} MiB"
    # The object is the upload, byte for byte.
    conn = http.client.HTTPConnection(d.url[len("http://"):], timeout=300)
    conn.request("GET", f"/cp/{out['uuid']}", headers={"Authorization": f"Bearer {d.token}"})
    r = conn.getresponse()
    assert r.status == 200
    got = hashlib.sha256()
    while chunk := r.read(1 << 20):
        got.update(chunk)
    conn.close()
    assert got.hexdigest() == want
    assert [n for n in os.listdir(os.path.join(d.data, "cp"))] == []


def test_upload_cap_is_configurable(tmp_path):
    with serving(tmp_path, extra=["--cp-max", "1m"]) as d:
        port = int(d.url.rsplit(":", 1)[1])

        def post(length, body=b""):
            s = open_head(d, "127.0.0.1", "/cp", length, d.token)
            if body:
                try:
                    s.sendall(body)
                except OSError:
                    pass
            a = answers([s], 30)[0]
            s.close()
            return a
        status, _, body = post((1 << 20) + 1)  # declared: refused before it is read
        assert (status, json.loads(body)["error"]) == (413, "PayloadTooLarge")
        # chunked: refused once it passes the cap (the rest, up to 1 MiB
        # more, is read and dropped so that the answer can go out)
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(("POST /cp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   f"Authorization: Bearer {d.token}\r\n\r\n").encode())
        try:
            for _ in range(24):
                s.sendall(b"10000\r\n" + b"\0" * 0x10000 + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        status, _, body = answers([s], 30)[0]
        s.close()
        assert (status, json.loads(body)["error"]) == (413, "PayloadTooLarge")
        # its temporary file goes with the request
        wait_for(lambda: os.listdir(os.path.join(d.data, "cp")) == [], 10,
                 "the refused upload's file to be removed")
