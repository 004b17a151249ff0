#!/usr/bin/env python3
"""The first exec of a new sandbox against the ones after it (issue 21).

    bench/first-exec.py -p PORT -T TOKEN_FILE [-B BASE] [-r ROUNDS] [-g SECONDS]

Per round, on one keep-alive connection: createSandbox of BASE, then three
execs of `true` in it back to back (the first retried until it is answered
200, as a client that does not poll getSandbox would), then, after a pause
of -g seconds, one exec into a sandbox created at the start (the same exec
on a CPU that was idle), then deleteSandbox and the pause again. Prints the
median of each step in ms. With a daemon started with --pool BASE=N the
creates are claims: what is left of the first exec over the second is what
a claim leaves undone; what the exec after the pause takes over the third
is what an idle CPU costs this host. Nothing is asserted.
"""
import argparse
import http.client
import json
import statistics
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-p", "--port", type=int, required=True)
    ap.add_argument("-T", "--token-file", required=True, help="the daemon's token.json")
    ap.add_argument("-B", "--base", default="busybox")
    ap.add_argument("-r", "--rounds", type=int, default=40, help="measured rounds (+3 warm-up)")
    ap.add_argument("-g", "--gap", type=float, default=0.05, help="the pause, seconds")
    a = ap.parse_args()
    with open(a.token_file) as f:
        token = json.load(f)["token"]
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}

    def call(nsid, query="", body=None):
        conn.request("POST", "/xrpc/" + nsid + ("?" + query if query else ""),
                     body=json.dumps(body) if body is not None else None, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()

    def create():
        status, data = call("io.pocketenv.sandbox.createSandbox", body={"base": a.base})
        if status != 200:
            raise SystemExit("createSandbox: %d %s" % (status, data[:200]))
        return json.loads(data)["id"]

    def exec_true(sid, retry):
        while True:
            status, data = call("io.pocketenv.sandbox.exec", "id=" + sid, {"command": "true"})
            if status == 200:
                return
            if not retry:
                raise SystemExit("exec: %d %s" % (status, data[:200]))

    steps = ("create", "first exec", "second", "third", "exec after the pause")
    samples = {k: [] for k in steps}
    made = [create()]
    try:
        deadline = time.monotonic() + 30
        while True:  # the long-lived sandbox runs before the rounds start
            try:
                exec_true(made[0], False)
                break
            except SystemExit:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        for i in range(a.rounds + 3):
            t = [time.perf_counter()]
            sid = create()
            made.append(sid)
            t.append(time.perf_counter())
            for k in range(3):
                exec_true(sid, k == 0)
                t.append(time.perf_counter())
            time.sleep(a.gap)
            t0 = time.perf_counter()
            exec_true(made[0], False)
            t.append(time.perf_counter() - t0 + t[-1])
            call("io.pocketenv.sandbox.deleteSandbox", "id=" + sid)
            made.pop()
            time.sleep(a.gap)
            if i >= 3:
                for k, name in enumerate(steps):
                    samples[name].append(t[k + 1] - t[k])
    finally:
        for sid in made:
            call("io.pocketenv.sandbox.deleteSandbox", "id=" + sid)
    print("%s, %d rounds, pause %.0f ms, p50 ms: %s" % (
        a.base, a.rounds, a.gap * 1000,
        ", ".join("%s %.2f" % (k, statistics.median(v) * 1000) for k, v in samples.items())))


if __name__ == "__main__":
    main()
