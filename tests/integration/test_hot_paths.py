"""The daemon's hot paths (issue 21).

Reads: getSandbox answered from the daemon's read cache on its loop
thread, never stale after a write of the daemon and never one user's
answer to another. Every check reads a sandbox twice before a write, so the
second read is a cache hit (the /metrics counter says so), then reads it
back once, right after the write was answered: that read must show it.

Exec: the process is started without a copy of the daemon (a helper in the
daemon's memory starts it as the daemon's child and exits) and is as
isolated as ever: the sandbox's namespaces and cgroup, seccomp, no new
privileges.

One daemon for the module (test_daemon's `serving`).
"""
import json
import os
import re
import subprocess
import threading
import urllib.request

from conftest import BIN, wait_for

import pytest

from test_daemon import serving


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("hot")) as d:
        yield d


def metric(d, name):
    req = urllib.request.Request(d.url + "/metrics",
                                 headers={"Authorization": f"Bearer {d.token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^" + re.escape(name) + r" (\d+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return int(m.group(1))


def get(d, ident, token="owner"):
    return d.sandbox("getSandbox", ident, token=token)


def warm(d, ident, token="owner"):
    """Two reads, the second from the cache; returns its answer."""
    first = get(d, ident, token)
    hits = metric(d, "pocketenv_read_cache_hits_total")
    second = get(d, ident, token)
    assert second == first
    assert metric(d, "pocketenv_read_cache_hits_total") == hits + 1, "not a cache hit"
    return second


def test_repeated_read_is_a_cache_hit(daemon):
    st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "busybox", "name": "hot-hit"})
    assert st == 200, sb
    daemon.wait_status("hot-hit", ["RUNNING"])
    for ident in (sb["id"], "hot-hit"):  # by id and by name, each its own entry
        st, out = warm(daemon, ident)
        assert st == 200 and out["sandbox"]["id"] == sb["id"]
    assert metric(daemon, "pocketenv_read_cache_entries") >= 2
    assert daemon.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_read_after_write_is_never_stale(daemon):
    st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "busybox", "name": "hot-rw"})
    assert st == 200, sb
    daemon.wait_status("hot-rw", ["RUNNING"])
    for ident in (sb["id"], "hot-rw"):
        warm(daemon, ident)
        assert daemon.sandbox("stopSandbox", ident)[0] == 200
        assert get(daemon, ident)[1]["sandbox"]["status"] == "STOPPED"

        warm(daemon, ident)
        st, _ = daemon.sandbox("startSandbox", ident, {"keepAlive": True})
        assert st == 200
        got = get(daemon, ident)[1]["sandbox"]
        assert got["status"] == "RUNNING" and got["keepAlive"] is True

        warm(daemon, ident)
        assert daemon.sandbox("startSandbox", ident, {"keepAlive": False})[0] == 200
        assert get(daemon, ident)[1]["sandbox"]["keepAlive"] is False

    warm(daemon, sb["id"])
    warm(daemon, "hot-rw")
    assert daemon.sandbox("deleteSandbox", sb["id"])[0] == 200
    for ident in (sb["id"], "hot-rw"):
        st, out = get(daemon, ident)
        assert (st, out["error"]) == (404, "SandboxNotFound"), out

    # A new sandbox under the freed name: the name reads the new one.
    st, again = daemon.call("io.pocketenv.sandbox.createSandbox",
                            body={"base": "busybox", "name": "hot-rw"})
    assert st == 200
    assert get(daemon, "hot-rw")[1]["sandbox"]["id"] == again["id"]
    daemon.wait_status("hot-rw", ["RUNNING"])
    assert daemon.sandbox("deleteSandbox", "hot-rw")[0] == 200


def test_cached_answer_is_never_another_users(daemon):
    other = daemon.token_for("did:key:zHotReadOther")
    daemon.others = getattr(daemon, "others", []) + [other]
    st, mine = daemon.call("io.pocketenv.sandbox.createSandbox",
                           body={"base": "busybox", "name": "hot-same"})
    assert st == 200
    st, theirs = daemon.call("io.pocketenv.sandbox.createSandbox",
                             body={"base": "busybox", "name": "hot-same"}, token=other)
    assert st == 200, theirs
    daemon.wait_status("hot-same", ["RUNNING"])
    daemon.wait_status("hot-same", ["RUNNING"], token=other)

    # The owner's answers are cached; the other user asks the same keys.
    warm(daemon, mine["id"])
    warm(daemon, "hot-same")
    st, out = get(daemon, mine["id"], token=other)
    assert (st, out["error"]) == (404, "SandboxNotFound"), out
    assert get(daemon, "hot-same", token=other)[1]["sandbox"]["id"] == theirs["id"]
    # And the other way round, with theirs cached now.
    warm(daemon, "hot-same", token=other)
    assert get(daemon, "hot-same")[1]["sandbox"]["id"] == mine["id"]
    st, out = get(daemon, theirs["id"])
    assert (st, out["error"]) == (404, "SandboxNotFound"), out
    # No token, or a bad one, gets no cached answer either.
    for tok in (None, "not-a-jwt"):
        st, out = get(daemon, mine["id"], token=tok)
        assert st == 401, out
    assert daemon.sandbox("deleteSandbox", mine["id"])[0] == 200
    assert daemon.sandbox("deleteSandbox", theirs["id"], token=other)[0] == 200


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_exec_runs_without_a_copy_of_the_daemon_and_fully_isolated(daemon):
    st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "busybox", "name": "hot-exec"})
    assert st == 200, sb
    daemon.wait_status("hot-exec", ["RUNNING"])
    p = subprocess.run([BIN, "--data", daemon.data, "runtime", "inspect", sb["id"]],
                       capture_output=True, text=True, check=True)
    init = json.loads(p.stdout)["pid"]
    marker = "hot-exec-marker"
    result = {}
    # The command waits for a file the test creates: it is alive while we look.
    cmd = f"while [ ! -e /tmp/go ]; do sleep 0.05; done; echo {marker}"
    call = threading.Thread(target=lambda: result.update(
        answer=daemon.sandbox("exec", sb["id"], {"command": cmd})))
    call.start()
    try:
        def find():
            for d in os.listdir("/proc"):
                try:
                    with open(f"/proc/{d}/cmdline", "rb") as f:
                        if marker.encode() in f.read() and \
                                os.readlink(f"/proc/{d}/ns/pid") == \
                                os.readlink(f"/proc/{init}/ns/pid"):
                            return int(d)
                except OSError:
                    pass
            return None
        pid = wait_for(find, 30, "the exec'd shell")
        for ns in ("mnt", "pid", "net", "ipc", "uts", "user", "cgroup"):
            assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{init}/ns/{ns}"), ns
        with open(f"/proc/{pid}/cgroup") as a, open(f"/proc/{init}/cgroup") as b:
            assert a.read() == b.read()
        me = proc_status(pid)
        assert me["Seccomp"].strip() == "2" and me["NoNewPrivs"].strip() == "1", me
        assert proc_status(init)["CapBnd"] == me["CapBnd"]
        # No helper, no waiter and no copy of the daemon: the sandbox's init
        # started the shell (its spawner, lib/runtime/spawn-init.c), and
        # every process in the sandbox is a few hundred KiB, not the
        # daemon's megabytes.
        assert int(me["PPid"]) == init
        assert int(proc_status(daemon.proc.pid)["VmRSS"].split()[0]) > 4096
        in_sandbox = []
        for d in os.listdir("/proc"):
            try:
                if d.isdigit() and os.readlink(f"/proc/{d}/ns/pid") == \
                        os.readlink(f"/proc/{init}/ns/pid"):
                    in_sandbox.append(proc_status(int(d)))
            except OSError:
                pass
        assert len(in_sandbox) >= 2, in_sandbox  # init and the shell at least
        for st_ in in_sandbox:
            assert int(st_.get("VmRSS", "0 kB").split()[0]) < 2048, st_
    finally:
        subprocess.run([BIN, "--data", daemon.data, "runtime", "exec", sb["id"], "--",
                        "touch", "/tmp/go"], check=True)
        call.join(timeout=60)
    st, out = result["answer"]
    assert st == 200 and out == {"stdout": marker + "\n", "stderr": "", "exitCode": 0}, out
    # Exit codes, a missing command and a killed process come back as before.
    assert daemon.sandbox("exec", sb["id"], {"command": "exit 7"})[1]["exitCode"] == 7
    assert daemon.sandbox("exec", sb["id"], {"command": "nosuchcmd"})[1]["exitCode"] == 127
    assert daemon.sandbox("exec", sb["id"], {"command": "kill -9 $$"})[1]["exitCode"] == 137
    assert daemon.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_init_holds_nothing_of_the_daemon(daemon):
    """A sandbox's init is cloned in the daemon's own memory (CLONE_VM,
    lib/runtime/spawn.c) and sets the sandbox up there before it execs
    pocketenv-init. From inside the sandbox, as its root, look at PID 1 for
    anything of the daemon: a mapping of its binary or libraries, its
    heap, an fd it had open. Only pocketenv-init (from its memfd), its own
    small heap and stack, stdio and the sync socket may be there."""
    st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "busybox", "name": "hot-init"})
    assert st == 200, sb
    daemon.wait_status("hot-init", ["RUNNING"])
    st, out = daemon.sandbox("exec", sb["id"], {
        "command": "cat /proc/1/maps; echo ==; cd /proc/1/fd && for f in *; do"
                   " echo $f $(readlink $f); done; echo ==;"
                   " grep -E '^(Name|VmRSS)' /proc/1/status"})
    assert st == 200 and out["exitCode"] == 0, out
    maps, fds, status = out["stdout"].split("==\n")
    files = {line.split()[5] for line in maps.splitlines() if len(line.split()) > 5}
    assert files and all(f.startswith("/memfd:pocketenv-init") or f.startswith("[")
                         for f in files), maps
    # stdio on /dev/null; the sync socket (3), the spawn socket (4), its
    # signalfd (5) and this exec's connection; for a moment after the
    # spawn, this exec's own stdio pipes. Nothing the daemon had open. A pipe
    # init closes between the glob and its readlink prints no target: it was
    # gone before it could be read, so there is nothing of it to check.
    fd = dict(line.split(" ", 1) for line in fds.splitlines() if " " in line)
    assert [fd[k] for k in ("0", "1", "2")] == ["/dev/null"] * 3, fds
    assert fd["3"].startswith("socket:") and fd["4"].startswith("socket:"), fds
    assert fd["5"] == "anon_inode:[signalfd]", fds
    assert all(v.startswith(("socket:", "pipe:")) for k, v in fd.items() if int(k) > 5), fds
    assert "pocketenv-init" in status, status
    rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    assert rss_kib < 2048, status
    assert daemon.sandbox("deleteSandbox", sb["id"])[0] == 200
