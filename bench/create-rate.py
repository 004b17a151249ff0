#!/usr/bin/python3
"""Sustained create rate (issue 21), used by bench/run-create.sh.

  create-rate.py api PORT TOKEN_FILE N CONC BASE   createSandbox x N through the API
  create-rate.py bwrap ROOTFS N CONC               N detached bwrap sandboxes (the peer)
  create-rate.py keep PORT TOKEN_FILE N CONC BASE IDS   as api, but keep them: ids to IDS
  create-rate.py delete PORT TOKEN_FILE CONC IDS       delete the sandboxes listed in IDS

keep also prints the rate in each tenth of the run (per_s_by_tenth), which
shows whether creates slow down as the sandboxes alive grow.

api: CONC threads, each with one keep-alive HTTP/1.1 connection to
127.0.0.1:PORT, send createSandbox until N were sent, and poll getSandbox
(every 2 ms) until each is RUNNING; the clock stops when the last one runs.
Then every sandbox is deleted (timed separately). Any answer other than 200,
or a FAILED sandbox, counts as a failure and is printed.

bwrap: CONC threads start bwrap ... /bin/sleep 1000 (the same namespaces as
run-startup.sh's bwrap line) until N run, each counted once bwrap reports its
child's pid on --info-fd; then all are killed (SIGKILL to bwrap: --die-with-parent
takes the sleeper) and reaped.

Prints one JSON line. Measures and prints; it never judges.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time


def api(port, token_file, n, conc, base, keep_to=None):
    with open(token_file) as f:
        token = json.load(f)["token"]
    head = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    lock = threading.Lock()
    state = {"sent": 0, "ids": [], "fail": [], "claimed_now": 0, "running_at": []}

    def call(c, method, path, body=None):
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=head)
        r = c.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if state["sent"] >= n:
                    break
                state["sent"] += 1
            st, sb = call(c, "POST", "/xrpc/io.pocketenv.sandbox.createSandbox", {"base": base})
            if st != 200:
                with lock:
                    state["fail"].append(f"create: {st} {sb}")
                continue
            with lock:
                state["ids"].append(sb["id"])
                state["claimed_now"] += sb["status"] == "RUNNING"
            status = sb["status"]
            deadline = time.monotonic() + 120
            while status != "RUNNING":
                if status == "FAILED" or time.monotonic() > deadline:
                    with lock:
                        state["fail"].append(f"{sb['id']}: {status}")
                    break
                time.sleep(0.002)
                st, o = call(c, "GET", f"/xrpc/io.pocketenv.sandbox.getSandbox?id={sb['id']}")
                status = o["sandbox"]["status"] if st == 200 else f"HTTP {st}"
            if status == "RUNNING":
                with lock:
                    state["running_at"].append(time.monotonic())
        c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0

    ids = list(state["ids"])
    if keep_to:
        with open(keep_to, "w") as f:
            f.write("".join(i + "\n" for i in ids))
        print(json.dumps({"n": n, "failures": len(state["fail"]),
                          "first_failures": state["fail"][:5], "wall_s": wall, "per_s": n / wall,
                          "per_s_by_tenth": by_tenth(t0, sorted(state["running_at"]))}))
        return
    delete(port, token_file, conc, ids, n, state, wall)


def by_tenth(t0, times):
    """Sandboxes running per second in each tenth of the run, by the order
    they came up: whether creates slow down as more sandboxes are alive."""
    out, prev, k = [], t0, len(times) // 10
    for i in range(10 if k else 0):
        end = times[(i + 1) * k - 1]
        out.append(round(k / (end - prev), 1) if end > prev else None)
        prev = end
    return out


def delete(port, token_file, conc, ids, n=0, state=None, wall=0.0):
    with open(token_file) as f:
        token = json.load(f)["token"]
    head = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    state = state or {"fail": [], "claimed_now": 0}
    del_fail = []

    def call(c, method, path, body=None):
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=head)
        r = c.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None

    def deleter(part):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for i in part:
            st, o = call(c, "POST", f"/xrpc/io.pocketenv.sandbox.deleteSandbox?id={i}", {})
            if st != 200:
                del_fail.append(f"delete {i}: {st} {o}")
        c.close()

    t1 = time.monotonic()
    threads = [threading.Thread(target=deleter, args=(ids[k::conc],)) for k in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    del_wall = time.monotonic() - t1
    if not n:
        print(json.dumps({"deleted": len(ids) - len(del_fail), "failures": len(del_fail),
                          "first_failures": del_fail[:5], "wall_s": del_wall,
                          "per_s": len(ids) / del_wall if ids else 0}))
        return
    print(json.dumps({"n": n, "ok": len(ids) - len([f for f in state["fail"] if f.startswith("sbx_")]),
                      "failures": len(state["fail"]) + len(del_fail),
                      "first_failures": (state["fail"] + del_fail)[:5],
                      "answered_running": state["claimed_now"],
                      "wall_s": wall, "per_s": n / wall,
                      "delete_wall_s": del_wall, "delete_per_s": len(ids) / del_wall if ids else 0}))


def bwrap(rootfs, n, conc):
    lock = threading.Lock()
    state = {"sent": 0, "procs": [], "fail": []}
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", rootfs, "/",
            "--proc", "/proc", "--dev", "/dev"]

    def worker():
        while True:
            with lock:
                if state["sent"] >= n:
                    return
                state["sent"] += 1
            r, w = os.pipe()
            # Its own process group: bwrap's pid-1 process and the sleeper
            # stay in it, and killpg takes them all (killing bwrap alone left
            # half of them running, holding the caller's output pipe).
            p = subprocess.Popen(argv + ["--info-fd", str(w), "/bin/sleep", "1000"], pass_fds=(w,),
                                 stdin=subprocess.DEVNULL, start_new_session=True)
            os.close(w)
            info = os.read(r, 4096).decode()  # one write, once the child runs
            os.close(r)
            with lock:
                state["procs"].append(p)
                if "child-pid" not in info:
                    state["fail"].append(info)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    for p in state["procs"]:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in state["procs"]:
        p.wait()
    print(json.dumps({"n": n, "failures": len(state["fail"]), "wall_s": wall, "per_s": n / wall}))


if __name__ == "__main__":
    if sys.argv[1] == "api":
        api(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif sys.argv[1] == "keep":
        api(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6],
            sys.argv[7])
    elif sys.argv[1] == "delete":
        with open(sys.argv[5]) as f:
            delete(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), f.read().split())
    else:
        bwrap(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
