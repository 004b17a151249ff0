#!/usr/bin/env python3
"""Terminal gateway benchmark (issue 6), run by bench/run-terminal.sh.

Against a real `pocketenv serve` on loopback with one busybox sandbox:

1. keystroke -> echo latency over the WebSocket (/tty/:id/ws): one byte
   sent, time until its echo comes back, with `cat >/dev/null` reading the
   terminal (so the echo is the PTY's own). Floor: the same on a host PTY
   (os.openpty + cat), which has no sandbox, daemon or socket in between.
2. output throughput: `cat` of a large file in the sandbox to 1 and to 10
   viewers (Cloudflare protocol: binary frames, nothing decoded), time from
   the command to the last viewer seeing the end marker. Floor: bench/ptycat,
   the same command on a PTY started the way the daemon starts shells,
   read directly.

3. with --sessions N (issue 21): N WebSocket sessions open at once (spread
   over loopback source addresses, 50 each, as distinct machines would
   be), then --soak seconds of API traffic (getSandbox and exec `true` in
   a loop on a thread of its own) while the sessions are echo-checked one
   after the other; the daemon's VmRSS sampled every 5 s. Reports memory
   idle, with the sessions open, its peak during the soak and after the
   sessions closed, per session, and every failure.

Prints markdown. Measures and prints only; asserts nothing (STYLE rule 21).
"""
import argparse
import json
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from wsclient import WS  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, pe, data, extra=()):
        self.pe, self.data = pe, data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tf = os.path.join(data, "token.json")
        self.log = open(os.path.join(data, "daemon.log"), "w")
        self.proc = subprocess.Popen([pe, "serve", "--listen", f"127.0.0.1:{self.port}",
                                      "--data", data, "--token-file", tf] + list(extra),
                                     stderr=self.log)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("daemon did not start")
                time.sleep(0.05)
        with open(tf) as f:
            self.token = json.load(f)["token"]

    def xrpc(self, nsid, params=None, body=None):
        q = "?" + "&".join(f"{k}={v}" for k, v in (params or {}).items()) if params else ""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/xrpc/{nsid}{q}", data=data,
                                     method="POST" if data is not None else "GET")
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=120) as r:
            text = r.read()
        return json.loads(text) if text else None

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def keystroke_latency(ws, n):
    ws.send("cat >/dev/null\n")
    ws.read_until("cat >/dev/null\r\n")
    # The shell may flush input typed while it hands the terminal to cat:
    # probe until an echo comes back, then measure.
    for _ in range(100):
        ws.send(b"x")
        try:
            ws.read_until(b"x", timeout=0.2)
            break
        except TimeoutError:
            pass
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        ws.send(b"x")
        ws.read_until(b"x")
        samples.append(time.perf_counter() - t0)
        if i % 100 == 99:
            ws.send(b"\n")
            ws.read_until(b"\r\n")
    ws.send(b"\x03")  # Ctrl-C ends cat
    return samples


def host_pty_latency(n):
    master, slave = os.openpty()
    p = subprocess.Popen(["cat"], stdin=slave, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    os.close(slave)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        os.write(master, b"x")
        got = b""
        while b"x" not in got:
            got += os.read(master, 4096)
        samples.append(time.perf_counter() - t0)
        if i % 100 == 99:
            os.write(master, b"\n")
            got = b""
            while b"\n" not in got:
                got += os.read(master, 4096)
    p.kill()
    p.wait()
    os.close(master)
    return samples


def viewer_proc(port, path, conn):
    """One viewer in its own process (no GIL shared with the others):
    attach, sync, then read binary frames until the end marker."""
    ws = WS(port, path)
    while ws.recv()[0] != 1:  # {"type":"ready"}
        pass
    conn.send("attached")
    ws.read_until(b"ready\r\n")
    conn.send("synced")
    total, tail, marker = 0, b"", b"END\r\n"
    while marker not in tail:
        op, p = ws.recv(timeout=300)
        if op == 8:
            conn.send(("closed", ws.closed))
            return
        total += len(p)
        tail = tail[-len(marker):] + p
    conn.send((total, time.perf_counter()))  # CLOCK_MONOTONIC: same clock in every process
    ws.close()


def post_input(d, sid, session, data):
    req = urllib.request.Request(f"{d.url}/tty/{sid}/input?sessionId={session}", data=data,
                                 method="POST")
    req.add_header("Authorization", f"Bearer {d.token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 204


def throughput(d, sid, viewers, session):
    path = f"/v1/sandboxes/{sid}/ws/terminal?session={session}&t={d.token}"
    procs, conns = [], []
    for _ in range(viewers):
        parent, child = multiprocessing.Pipe()
        p = multiprocessing.Process(target=viewer_proc, args=(d.port, path, child))
        p.start()
        procs.append(p)
        conns.append(parent)
    for c in conns:
        assert c.recv() == "attached"
    post_input(d, sid, session, b"echo re''ady\n")
    for c in conns:
        assert c.recv() == "synced"
    t0 = time.perf_counter()
    post_input(d, sid, session, b"cat /tmp/big; echo E''ND; exit\n")
    results = [c.recv() for c in conns]
    for p in procs:
        p.join()
    dropped = [r for r in results if r[0] == "closed"]
    if dropped:
        raise SystemExit(f"{len(dropped)} of {viewers} viewers were dropped: {dropped[0][1]}")
    return min(b for b, _ in results), max(t for _, t in results) - t0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def api_traffic(d, sid, stop, counts):
    while not stop.is_set():
        for nsid, params, body in (("io.pocketenv.sandbox.getSandbox", {"id": sid}, None),
                                   ("io.pocketenv.sandbox.exec", {"id": sid},
                                    {"command": "true"})):
            try:
                d.xrpc(nsid, params, body)
                counts["ok"] += 1
            except Exception as e:  # noqa: BLE001 - counted and reported
                counts["failed"] += 1
                counts["last"] = repr(e)


def start_sandbox(d):
    sid = d.xrpc("io.pocketenv.sandbox.createSandbox", body={"base": "busybox"})["id"]
    deadline = time.monotonic() + 60
    while d.xrpc("io.pocketenv.sandbox.getSandbox", {"id": sid})["sandbox"]["status"] \
            != "RUNNING":
        if time.monotonic() > deadline:
            raise SystemExit("sandbox did not start")
        time.sleep(0.05)
    return sid


def scale(d, sid, n, soak):
    """N sessions open + API traffic for soak seconds; prints a table."""
    pid = d.proc.pid
    sids = [sid] + [start_sandbox(d) for _ in range((n - 1) // 100)]
    rss = {"idle": rss_kib(pid)}
    t0 = time.monotonic()
    sessions = []
    for i in range(n):
        ws = WS(d.port, f"/tty/{sids[i % len(sids)]}/ws?sessionId=scale{i}&token={d.token}",
                src=f"127.0.0.{2 + i // 50}", timeout=60)
        if ws.status != 101:
            raise SystemExit(f"session {i}: HTTP {ws.status}: {ws.body[:200]!r}")
        sessions.append(ws)
    for i, ws in enumerate(sessions):
        ws.send(f"echo o''k{i}\n".encode())
    for i, ws in enumerate(sessions):
        ws.read_until(f"ok{i}\r\n".encode(), timeout=120)
    opened = time.monotonic() - t0
    rss["open"] = rss_kib(pid)
    stop, counts = threading.Event(), {"ok": 0, "failed": 0, "last": ""}
    api = threading.Thread(target=api_traffic, args=(d, sid, stop, counts))
    api.start()
    peak, checks, failed, k = rss["open"], 0, 0, 0
    end = time.monotonic() + soak
    next_sample = time.monotonic() + 5
    while time.monotonic() < end:
        ws = sessions[k % n]
        try:
            ws.send(f"echo c''k{k}\n".encode())
            ws.read_until(f"ck{k}\r\n".encode(), timeout=30)
            checks += 1
        except Exception:  # noqa: BLE001 - counted and reported
            failed += 1
        k += 1
        if time.monotonic() >= next_sample:
            peak = max(peak, rss_kib(pid))
            next_sample += 5
    stop.set()
    api.join()
    rss["soak end"] = rss_kib(pid)
    peak = max(peak, rss["soak end"])
    for ws in sessions:
        ws.send(b"exit\n")
    closed = sum(1 for ws in sessions if ws.wait_close(timeout=60))
    for ws in sessions:
        ws.close()
    time.sleep(1)  # let the daemon reap the shells before the last sample
    rss["closed"] = rss_kib(pid)
    print(f"\n{n} WebSocket sessions on {len(sids)} sandboxes, opened and each echo-checked in "
          f"{opened:.1f} s; then {soak} s of API traffic (getSandbox + exec `true`, one "
          f"client thread) while sessions were echo-checked in turn:\n")
    print("| figure | value |\n|---|---|")
    print(f"| API calls answered / failed | {counts['ok']} / {counts['failed']} |")
    print(f"| session echo checks / failed | {checks} / {failed} |")
    print(f"| sessions closed cleanly at the end | {closed} of {n} |")
    print(f"| daemon VmRSS before ({len(sids)} sandboxes, no session) | {rss['idle'] / 1024:.1f} MiB |")
    print(f"| … with {n} sessions open | {rss['open'] / 1024:.1f} MiB "
          f"(+{(rss['open'] - rss['idle']) / n:.1f} KiB per session) |")
    print(f"| … peak during the soak (5 s samples) | {peak / 1024:.1f} MiB |")
    print(f"| … at the end of the soak | {rss['soak end'] / 1024:.1f} MiB |")
    print(f"| … after the sessions closed | {rss['closed'] / 1024:.1f} MiB |")
    if counts["failed"]:
        print(f"\nlast API failure: {counts['last']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="directory with pocketenv and ptycat")
    ap.add_argument("--data", required=True)
    ap.add_argument("--keys", type=int, default=2000, help="latency samples")
    ap.add_argument("--mb", type=int, default=64, help="size of the file cat prints (MiB)")
    ap.add_argument("--reps", type=int, default=5, help="throughput repetitions")
    ap.add_argument("--sessions", type=int, default=0,
                    help="also N WebSocket sessions at once + API traffic (issue 21)")
    ap.add_argument("--soak", type=int, default=600, help="seconds of the --sessions run")
    ap.add_argument("--scale-only", action="store_true",
                    help="only the --sessions run (no latency or throughput)")
    a = ap.parse_args()
    if a.sessions:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, a.sessions * 2 + 256)),
                                                    hard))
    pe = os.path.join(a.bin, "pocketenv")
    subprocess.run([pe, "--data", a.data, "image", "build", "busybox"], check=True,
                   capture_output=True)
    extra = ["--terminals-per-user", str(a.sessions), "--rate-limit", "0"] if a.sessions \
        else []
    d = Daemon(pe, a.data, extra)
    try:
        sid = d.xrpc("io.pocketenv.sandbox.createSandbox", body={"base": "busybox"})["id"]
        deadline = time.monotonic() + 60
        while d.xrpc("io.pocketenv.sandbox.getSandbox", {"id": sid})["sandbox"]["status"] \
                != "RUNNING":
            if time.monotonic() > deadline:
                raise SystemExit("sandbox did not start")
            time.sleep(0.05)
        size = a.mb * 1024 * 1024
        d.xrpc("io.pocketenv.sandbox.exec", {"id": sid},
               {"command": "yes 'the quick brown fox jumps over the lazy dog 0123456789' | "
                           f"head -c {size} > /tmp/big"})

        print(f"## Terminal gateway ({os.uname().release}, {os.cpu_count()} CPUs)\n")
        if a.scale_only:
            scale(d, sid, a.sessions, a.soak)
            return
        ws = WS(d.port, f"/tty/{sid}/ws?sessionId=lat&token={d.token}")
        ws.send(b"echo re''ady\n")
        ws.read_until(b"ready\r\n")
        lat = keystroke_latency(ws, a.keys)
        ws.close()
        host = host_pty_latency(a.keys)
        print(f"Keystroke -> echo, {a.keys} keys, one at a time:\n")
        print("| path | p50 | p99 | max |\n|---|---|---|---|")
        for name, xs in [("WebSocket /tty/:id/ws (daemon + sandbox PTY)", lat),
                         ("host PTY, no daemon (floor)", host)]:
            print(f"| {name} | {pct(xs, 50) * 1e3:.3f} ms | {pct(xs, 99) * 1e3:.3f} ms "
                  f"| {max(xs) * 1e3:.3f} ms |")

        rows = {"ptycat (PTY read directly)": [], "1 viewer": [], "10 viewers": []}
        for rep in range(a.reps):
            # interleaved, so drift of the host affects every variant alike
            out = subprocess.run([os.path.join(a.bin, "ptycat"), a.data, sid, "cat", "/tmp/big"],
                                 capture_output=True, text=True, check=True).stdout.split()
            rows["ptycat (PTY read directly)"].append((int(out[0]), float(out[1])))
            rows["1 viewer"].append(throughput(d, sid, 1, f"tp1x{rep}"))
            rows["10 viewers"].append(throughput(d, sid, 10, f"tp10x{rep}"))
        print(f"\n`cat` of a {a.mb} MiB text file, median of {a.reps} interleaved runs "
              "(MB/s of terminal output each viewer received):\n")
        print("| reader | MB/s | vs direct |\n|---|---|---|")
        base = None
        for name, runs in rows.items():
            mbs = statistics.median(b / t / 1e6 for b, t in runs)
            base = base or mbs
            print(f"| {name} | {mbs:.0f} | {mbs / base * 100:.0f} % |")
        if a.sessions:
            scale(d, sid, a.sessions, a.soak)
    finally:
        d.stop()


if __name__ == "__main__":
    main()
