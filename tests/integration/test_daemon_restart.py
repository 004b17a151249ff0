"""The daemon dies and comes back; sandboxes go idle; systemd is told.

Each test runs its own daemon (it kills or restarts it), on a free
loopback port with its own data directory and the busybox image.
"""
import json
import os
import signal
import socket
import subprocess
import threading
import urllib.request

import pytest

from conftest import BIN, cgroups_left, idmap_claims, our_cgroups, sandbox_processes, wait_for
from test_daemon import Daemon, free_port


class Served:
    """A daemon that can be killed and started again on the same data."""

    def __init__(self, tmp, extra=(), env=None):
        self.tmp = tmp
        self.data = str(tmp / "data")
        self.extra = list(extra)
        self.env = env
        self.d = Daemon(self.data, free_port(), str(tmp / "token.json"))
        self.starts = 0
        subprocess.run([BIN, "--data", self.data, "image", "build", "busybox"], check=True,
                       capture_output=True, text=True)

    def start(self):
        self.starts += 1
        self.log_path = self.tmp / f"daemon-{self.starts}.log"
        self.log = open(self.log_path, "w")
        self.d.proc = subprocess.Popen(
            [BIN, "serve", "--listen", self.d.url[len("http://"):], "--data", self.data,
             "--token-file", self.d.token_file, "--rate-limit", "0"] + self.extra,
            stderr=self.log, env=self.env)
        wait_for(lambda: self.d.healthy() or self.d.proc.poll() is not None, 15, "/healthz")
        assert self.d.proc.poll() is None, self.log_text()
        with open(self.d.token_file) as f:
            self.d.token = json.load(f)["token"]
        return self.d

    def log_text(self):
        self.log.flush()
        return open(self.log_path).read()

    def kill9(self):
        self.d.proc.send_signal(signal.SIGKILL)
        self.d.proc.wait(10)
        self.log.close()

    def stop(self):
        self.d.proc.send_signal(signal.SIGTERM)
        rc = self.d.proc.wait(30)
        self.log.close()
        assert rc == 0, open(self.log_path).read()

    def sandboxes(self):
        st, o = self.d.call("io.pocketenv.actor.getActorSandboxes",
                            {"did": "owner.local", "limit": 100})
        assert st == 200, o
        return o["sandboxes"]

    def runtime_names(self):
        p = subprocess.run([BIN, "--data", self.data, "runtime", "ls", "--json"],
                           capture_output=True, text=True, check=True)
        return {s["name"]: s for s in json.loads(p.stdout)}


@pytest.fixture
def served(tmp_path):
    before_procs = set(sandbox_processes(str(tmp_path / "data")))
    before_cgroups = set(our_cgroups())
    made = []

    def make(extra=(), env=None):
        s = Served(tmp_path, extra, env)
        made.append(s)
        return s
    yield make
    sandbox_processes(str(tmp_path / "data"))  # remembers its sandboxes' keys before they go
    for s in made:
        if s.d.proc and s.d.proc.poll() is None:
            for sb in s.sandboxes():
                s.d.sandbox("deleteSandbox", sb["id"])
            s.stop()
        assert s.runtime_names() == {}
        # nothing half-made is left: no staging directory, no user id range
        sbdir = os.path.join(s.data, "sandboxes")
        assert not os.path.isdir(sbdir) or os.listdir(sbdir) == []
        assert idmap_claims(s.data) == []
    wait_for(lambda: not set(sandbox_processes(str(tmp_path / "data"))) - before_procs, 10,
             "sandbox processes to exit")
    assert cgroups_left(str(tmp_path / "data"), before_cgroups) == set()


def create(d, name, **kw):
    st, sb = d.call("io.pocketenv.sandbox.createSandbox",
                    body={"base": "busybox", "name": name, **kw})
    assert st == 200, sb
    return sb


def test_kill_9_during_concurrent_creates_loses_nothing(served):
    s = served(["--sandbox-net", "none"])
    d = s.start()
    acked, lock = [], threading.Lock()
    first = threading.Event()

    def one(i):
        try:
            st, sb = d.call("io.pocketenv.sandbox.createSandbox",
                            body={"base": "busybox", "name": f"crash-{i}"})
        except OSError:
            return  # the daemon died under this request: not acknowledged
        if st == 200:
            with lock:
                acked.append(sb["id"])
            first.set()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    assert first.wait(20), "no create was answered"
    s.kill9()  # creates are now answered, queued, or half-way through the runtime
    for t in threads:
        t.join(30)
    assert acked

    d = s.start()
    # Every acknowledged create ends RUNNING; no row is stuck INITIALIZING.
    for ident in acked:
        assert d.wait_status(ident, ["RUNNING", "FAILED"], timeout=30)["status"] == "RUNNING"
    rows = s.sandboxes()
    assert {r["id"] for r in rows} >= set(acked)
    wait_for(lambda: all(r["status"] == "RUNNING" for r in s.sandboxes()), 30,
             "every row RUNNING")
    for r in s.sandboxes():
        st, out = d.sandbox("exec", r["id"], {"command": "echo alive"})
        assert st == 200 and out["stdout"] == "alive\n", out
    # The runtime holds exactly the store's sandboxes: nothing half-made left.
    assert set(s.runtime_names()) == {r["id"] for r in s.sandboxes()}


def test_restart_adopts_running_and_notices_dead(served):
    s = served(["--sandbox-net", "none"])
    d = s.start()
    a = create(d, "adopted")
    b = create(d, "victim")
    for sb in (a, b):
        d.wait_status(sb["id"], ["RUNNING"])
    s.kill9()
    # While the daemon is down, b's init dies.
    pid = s.runtime_names()[b["id"]]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: s.runtime_names()[b["id"]]["status"] == "stopped", 10, "b stopped")

    d = s.start()
    assert d.sandbox("getSandbox", a["id"])[1]["sandbox"]["status"] == "RUNNING"
    st, out = d.sandbox("exec", a["id"], {"command": "echo still here"})
    assert st == 200 and out["stdout"] == "still here\n"
    got = d.sandbox("getSandbox", b["id"])[1]["sandbox"]
    assert got["status"] == "STOPPED" and "not running" in got["statusReason"], got
    assert d.sandbox("startSandbox", b["id"], {})[0] == 200
    assert d.sandbox("exec", b["id"], {"command": "echo back"})[1]["stdout"] == "back\n"
    # Adopted sandboxes stop cleanly though the new daemon is not their parent.
    assert d.sandbox("stopSandbox", a["id"])[0] == 200
    assert s.runtime_names()[a["id"]]["status"] == "stopped"


def test_init_exit_is_noticed_while_running(served):
    s = served(["--sandbox-net", "none", "--tick", "0.2"])
    d = s.start()
    sb = create(d, "shortlived")
    d.wait_status(sb["id"], ["RUNNING"])
    os.kill(s.runtime_names()[sb["id"]]["pid"], signal.SIGKILL)
    got = d.wait_status(sb["id"], ["STOPPED"], timeout=10)
    assert "exited" in got["statusReason"]


def test_idle_sandboxes_stop_unless_kept_alive_or_busy(served):
    s = served(["--sandbox-net", "none", "--idle-timeout", "3", "--tick", "0.2"])
    d = s.start()
    busy = create(d, "busy")
    idle = create(d, "idle")
    kept = create(d, "kept", keepAlive=True)
    # On a loaded host the idle one may already have stopped again when
    # this first looks; busy's exec starts as soon as it runs.
    d.wait_status(busy["id"], ["RUNNING"])
    result = {}
    t = threading.Thread(target=lambda: result.update(
        out=d.sandbox("exec", busy["id"], {"command": "sleep 4; echo done"})))
    t.start()
    d.wait_status(kept["id"], ["RUNNING"])
    got = d.wait_status(idle["id"], ["STOPPED"], timeout=15)
    assert "without activity" in got["statusReason"], got
    # idle was stopped although all three started together
    assert d.sandbox("getSandbox", kept["id"])[1]["sandbox"]["status"] == "RUNNING"
    t.join(30)
    # A sandbox in use is never idle: the long exec ran to its end.
    assert result["out"] == (200, {"stdout": "done\n", "stderr": "", "exitCode": 0})
    # ... and after it, its idle clock starts over and it stops too.
    d.wait_status(busy["id"], ["STOPPED"], timeout=15)
    assert d.sandbox("getSandbox", kept["id"])[1]["sandbox"]["status"] == "RUNNING"


def test_metrics_count_sandboxes_by_status(served):
    s = served(["--sandbox-net", "none", "--tick", "0.2"])
    d = s.start()
    for n in ("m1", "m2"):
        d.wait_status(create(d, n)["id"], ["RUNNING"])
    assert d.sandbox("stopSandbox", "m2")[0] == 200

    def counts():
        req = urllib.request.Request(d.url + "/metrics",
                                     headers={"Authorization": f"Bearer {d.token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            text = r.read().decode()
        return {l.split('"')[1]: int(l.split()[-1]) for l in text.splitlines()
                if l.startswith("pocketenv_sandboxes{")}
    wait_for(lambda: counts().get("RUNNING") == 1 and counts().get("STOPPED") == 1, 10,
             "metrics to show 1 running, 1 stopped")


def test_deleted_sandboxes_leave_the_daemons_memory(served):
    # The daemon keeps each used sandbox's last use for the idle policies.
    # A delete must take it away: before, every sandbox ever used stayed,
    # and every exec scanned them all (bench/README.md).
    s = served(["--sandbox-net", "none", "--tick", "0.2"])
    d = s.start()

    def tracked():
        req = urllib.request.Request(d.url + "/metrics",
                                     headers={"Authorization": f"Bearer {d.token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            text = r.read().decode()
        return [int(l.split()[-1]) for l in text.splitlines()
                if l.startswith("pocketenv_activity_tracked ")][0]
    ids = []
    for n in ("used-1", "used-2", "used-3"):
        ids.append(create(d, n)["id"])
        d.wait_status(ids[-1], ["RUNNING"])
        assert d.sandbox("exec", ids[-1], {"command": "true"})[0] == 200
    assert tracked() == 3
    # Deleted through the API while an exec still holds it: gone once the
    # exec ends (the delete ends it).
    held = {}
    t = threading.Thread(target=lambda: held.update(
        out=d.sandbox("exec", ids[0], {"command": "touch /tmp/up; sleep 60"})))
    t.start()
    wait_for(lambda: d.sandbox("exec", ids[0], {"command": "test -e /tmp/up"})[1].get(
        "exitCode") == 0, 15, "the long exec to start")
    assert d.sandbox("deleteSandbox", ids[0])[0] == 200
    t.join(30)
    assert not t.is_alive()
    assert d.sandbox("deleteSandbox", ids[1])[0] == 200
    assert tracked() == 1
    # A row deleted behind this daemon's back (as another daemon sharing
    # the store does): the next tick's pass drops it.
    import sqlite3
    db = sqlite3.connect(os.path.join(s.data, "pocketenv.db"), timeout=30, isolation_level=None)
    db.execute("DELETE FROM sandboxes WHERE id = ?", (ids[2],))
    db.close()
    subprocess.run([BIN, "--data", s.data, "runtime", "rm", ids[2]], check=True,
                   capture_output=True)
    wait_for(lambda: tracked() == 0, 10, "the tick to drop the deleted row's sandbox")


def test_sd_notify_ready_and_stopping(served, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    env = dict(os.environ, NOTIFY_SOCKET=path)
    s = served(["--sandbox-net", "none"], env=env)
    s.start()
    msg = sock.recv(4096).decode()
    assert "READY=1" in msg.split("\n"), msg
    s.d.proc.send_signal(signal.SIGTERM)
    msg = sock.recv(4096).decode()
    assert "STOPPING=1" in msg.split("\n"), msg
    assert s.d.proc.wait(30) == 0
    s.log.close()
    sock.close()
