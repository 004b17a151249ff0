"""Resource governance by attack: what one user can do to the others and to
the host through the API, and what the daemon must refuse.

- One user's long work (execs that sleep) never stalls another user's
  calls; a user's long jobs beyond their share wait, and beyond the bound
  of waiting ones are refused with 429.
- Every sandbox the daemon makes has limits (memory, CPUs, pids): the
  operator's defaults, or what the caller asks within the operator's
  maximum; absurd sizes are refused with 400, never multiplied into an
  overflow.
- Per-user quotas: number of sandboxes, memory of running sandboxes, disk
  (sandbox disk limits, backups): exceeding one is 403 QuotaExceeded and
  nothing is made.

Daemons run with the default flags unless a test is about a flag; users
other than the owner get tokens of their own (the owner is exempt from
quotas, not from the per-sandbox maximums or the concurrency limits).
"""
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
import uuid

import pytest

from conftest import BIN, wait_for
from test_daemon import serving
from test_resources import ResDaemon

SB = "io.pocketenv.sandbox."
GIB = 1 << 30


def delete_users_sandboxes(d):
    """Users' sandboxes outlive the daemon: delete them through the API."""
    for tok, did in d.users:
        st, out = d.call("io.pocketenv.actor.getActorSandboxes", {"did": did, "limit": 100},
                         token=tok)
        for sb in (out or {}).get("sandboxes", []):
            d.sandbox("deleteSandbox", sb["id"], token=tok)


@pytest.fixture(scope="module")
def gd(tmp_path_factory):
    """A daemon with the default limits and quotas."""
    with serving(tmp_path_factory.mktemp("govern"), ResDaemon,
                 ["--sandbox-net", "none", "--rate-limit", "0"]) as d:
        d.users = []
        yield d
        delete_users_sandboxes(d)


def user(d, name):
    """A new user's token (not the owner: quotas apply)."""
    did = f"did:key:zGovern{name}{uuid.uuid4().hex[:8]}"
    tok = d.token_for(did)
    d.users.append((tok, did))
    d.did_of = getattr(d, "did_of", {})
    d.did_of[tok] = did
    return tok


def listed(d, tok):
    st, out = d.call("io.pocketenv.actor.getActorSandboxes", {"did": d.did_of[tok],
                                                               "limit": 100}, token=tok)
    assert st == 200, out
    return out


def create(d, tok, name, **extra):
    return d.call(SB + "createSandbox", body={"base": "busybox", "name": name, **extra},
                  token=tok)


def marked(marker):
    """Host pids of the shells running a command that carries marker. A
    shell's child between its fork and its exec of `sleep` still carries
    the shell's command line: it is not counted (its parent is marked)."""
    found = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{p}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if argv and argv[0].endswith(b"sh") and any(marker.encode() in a for a in argv):
            found[int(p)] = ppid
    return [p for p, ppid in found.items() if ppid not in found]


def metric(d, name):
    req = urllib.request.Request(d.url + "/metrics", headers={"Authorization": f"Bearer {d.token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^" + re.escape(name) + r" (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


class Call(threading.Thread):
    """One API call on a thread of its own: (status, body) in .result."""

    def __init__(self, fn, *args, **kw):
        super().__init__(daemon=True)
        self.fn, self.args, self.kw, self.result = fn, args, kw, None

    def run(self):
        self.result = self.fn(*self.args, **self.kw)


def test_one_users_long_execs_never_stall_another_user(gd):
    """User B fills every worker the daemon had (4) and more with execs that
    sleep 30 s; user A's getSandbox, exec and createSandbox are answered
    while every one of B's execs still runs. B gets its share (4 at once),
    the next 8 wait for B's own slots, and the one after is refused."""
    d = gd
    a, b = user(d, "A"), user(d, "B")
    sa = d.create("stall-a", token=a)
    sb = d.create("stall-b", token=b)
    marker = "mk" + uuid.uuid4().hex[:12]
    burst = [Call(d.sandbox, "exec", sb, {"command": f"sleep 30; true {marker}"}, token=b)
             for _ in range(12)]
    try:
        for c in burst:
            c.start()
        wait_for(lambda: len(marked(marker)) == 4, 20, "B's first four execs to run")
        running = set(marked(marker))

        calls = [Call(d.sandbox, "getSandbox", sa, token=a),
                 Call(d.sandbox, "exec", sa, {"command": "echo hello"}, token=a),
                 Call(create, d, a, "stall-a2")]
        for c in calls:
            c.start()
        for c in calls:
            c.join(20)
        # Answered, and every one of B's execs is still running.
        assert all(c.result is not None for c in calls), [c.result for c in calls]
        assert set(marked(marker)) == running
        assert not any(c.result for c in burst), [c.result for c in burst if c.result]
        assert calls[0].result[0] == 200, calls[0].result
        assert calls[1].result == (200, {"stdout": "hello\n", "stderr": "", "exitCode": 0})
        assert calls[2].result[0] == 200, calls[2].result
        # B's own short calls are not held up by B's long ones either.
        assert d.sandbox("getSandbox", sb, token=b)[0] == 200

        # The rest of the burst waits in B's queue (8); one more is refused.
        wait_for(lambda: metric(d, 'pocketenv_long_jobs{state="queued"}') == 8, 20,
                 "B's other eight execs to wait")
        st, out = d.sandbox("exec", sb, {"command": "true"}, token=b)
        assert st == 429 and out["error"] == "RateLimitExceeded", out
        assert "4 running" in out["message"] and "8 waiting" in out["message"], out
        assert "wait" in out["message"], out
        assert set(marked(marker)) == running
    finally:
        # End B's execs from the host; the waiting ones then run and end too.
        def all_done():
            for pid in marked(marker):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return all(not c.is_alive() for c in burst)
        wait_for(all_done, 60, "B's execs to end")
    assert [c.result[0] for c in burst] == [200] * 12, [c.result for c in burst]


def read(path):
    with open(path) as f:
        return f.read().strip()


def cgroup_limits(d, sid):
    """(memory bytes, vCPUs, pids) the kernel holds sandbox sid to, read
    from its cgroup (v2, or the v1 controllers)."""
    p = subprocess.run([BIN, "--data", d.data, "runtime", "inspect", sid, "--json"],
                       capture_output=True, text=True, check=True)
    name = "pocketenv-" + json.loads(p.stdout)["id"]
    v2 = f"/sys/fs/cgroup/pocketenv/{name}"
    if os.path.exists(f"{v2}/memory.max"):
        quota, period = read(f"{v2}/cpu.max").split()
        return int(read(f"{v2}/memory.max")), int(quota) / int(period), read(f"{v2}/pids.max")
    v1 = "/sys/fs/cgroup/{}/pocketenv/" + name
    return (int(read(v1.format("memory") + "/memory.limit_in_bytes")),
            int(read(v1.format("cpu") + "/cpu.cfs_quota_us")) /
            int(read(v1.format("cpu") + "/cpu.cfs_period_us")),
            read(v1.format("pids") + "/pids.max"))


def test_sizes_are_checked_and_every_sandbox_gets_limits(gd):
    d = gd
    tok = user(d, "Sizes")
    bad = [
        {"memory": 17179869184},         # * 2^30 wraps to 0: "unlimited"
        {"memory": 2 ** 62}, {"memory": 2 ** 63 - 1},
        {"memory": 17},                  # one over the default maximum (16)
        {"memory": 0}, {"memory": -1}, {"memory": -(2 ** 63)},
        {"vcpus": 2 ** 53}, {"vcpus": 9223372036854775807}, {"vcpus": 0}, {"vcpus": -4},
        {"vcpus": 100000},
        {"disk": 2 ** 40}, {"disk": 101}, {"disk": 2}, {"disk": -3},
        {"memory": 1.5}, {"memory": "4"},
    ]
    for extra in bad:
        st, out = create(d, tok, "badsize", **extra)
        assert st == 400 and out["error"] == "InvalidRequest", (extra, out)
        key = next(iter(extra))
        assert key in out["message"], (extra, out)
    # The allowed range is in the message.
    st, out = create(d, tok, "badsize", memory=17179869184)
    assert "1 to 16" in out["message"], out
    st, out = create(d, tok, "badsize", disk=101)
    assert "3 to 100" in out["message"], out
    # Nothing was made by any of them.
    assert listed(d, tok)["total"] == 0

    # Defaults: 2 vCPUs (fewer on a smaller host), 4 GB, 10 GB disk, 1024
    # pids, in the record and in the cgroup.
    vcpus = min(2, os.sysconf("SC_NPROCESSORS_ONLN"))
    st, sb = create(d, tok, "defaults")
    assert st == 200, sb
    got = d.wait_status(sb["id"], ["RUNNING", "FAILED"], token=tok)
    assert got["status"] == "RUNNING", got
    assert (got["vcpus"], got["memory"], got["disk"]) == (vcpus, 4, 10), got
    assert cgroup_limits(d, sb["id"]) == (4 * GIB, float(vcpus), "1024")

    # What the caller asks for, within the maximums.
    st, sb = create(d, tok, "asked", vcpus=1, memory=2, disk=3)
    assert st == 200, sb
    got = d.wait_status(sb["id"], ["RUNNING", "FAILED"], token=tok)
    assert (got["status"], got["vcpus"], got["memory"], got["disk"]) == \
        ("RUNNING", 1, 2, 3), got
    assert cgroup_limits(d, sb["id"]) == (2 * GIB, 1.0, "1024")
    # The owner has the same maximums.
    st, out = create(d, "owner", "ownerbig", memory=17)
    assert st == 400 and "1 to 16" in out["message"], out


def test_sandbox_count_and_memory_quotas(gd):
    d = gd
    tok = user(d, "Count")
    for i in range(10):
        st, out = create(d, tok, f"q{i}", memory=1)
        assert st == 200, (i, out)
    st, out = create(d, tok, "q10", memory=1)
    assert st == 403 and out["error"] == "QuotaExceeded", out
    assert "10 sandboxes" in out["message"] and "10 of 10" in out["message"], out
    assert listed(d, tok)["total"] == 10
    # Deleting one makes room.
    assert d.sandbox("deleteSandbox", "q0", token=tok)[0] == 200
    assert create(d, tok, "q10", memory=1)[0] == 200

    # Memory of running sandboxes: 32 GB per user by default.
    tok = user(d, "Mem")
    for name in ("m1", "m2"):
        st, out = create(d, tok, name, memory=16)
        assert st == 200, out
    st, out = create(d, tok, "m3", memory=1)
    assert st == 403 and out["error"] == "QuotaExceeded", out
    assert "memory" in out["message"] and "32 GB of 32 GB" in out["message"], out
    d.wait_status("m2", ["RUNNING"], token=tok)
    assert d.sandbox("stopSandbox", "m2", token=tok)[0] == 200
    # A stopped sandbox holds no memory...
    assert create(d, tok, "m3", memory=1)[0] == 200
    # ...but starting it again would go over.
    st, out = d.sandbox("startSandbox", "m2", token=tok)
    assert st == 403 and out["error"] == "QuotaExceeded", out
    assert d.sandbox("getSandbox", "m2", token=tok)[1]["sandbox"]["status"] == "STOPPED"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A daemon whose users each get 3 GiB + 1 MiB of disk: one sandbox of
    the smallest disk (3 GB) and a megabyte of backups."""
    with serving(tmp_path_factory.mktemp("govern-disk"), ResDaemon,
                 ["--sandbox-net", "none", "--rate-limit", "0", "--user-disk", "3073m",
                  "--user-sandboxes", "2", "--user-jobs", "1", "--user-queue", "0"]) as d:
        d.users = []
        yield d
        delete_users_sandboxes(d)


def test_disk_quota_counts_sandboxes_and_backups(small):
    d = small
    tok = user(d, "Disk")
    st, out = create(d, tok, "d1", disk=4)
    assert st == 403 and out["error"] == "QuotaExceeded", out
    assert "disk" in out["message"], out
    sid = d.create("d1", token=tok, disk=3)
    # A second sandbox, of any disk size, is over.
    st, out = create(d, tok, "d2", disk=3)
    assert st == 403 and "disk" in out["message"], out
    # A backup that fits the last megabyte is kept and counted...
    d.sh(sid, "mkdir -p /w && head -c 300000 /dev/urandom > /w/a", token=tok)
    st, out = d.call(SB + "createBackup", {"id": sid}, {"directory": "/w"}, token=tok)
    assert st == 200, out
    # ...so that a second one no longer fits; nothing of it is kept.
    d.sh(sid, "head -c 800000 /dev/urandom > /w/b", token=tok)
    before = sorted(os.listdir(os.path.join(d.data, "backups")))
    st, out = d.call(SB + "createBackup", {"id": sid}, {"directory": "/w"}, token=tok)
    assert st == 403 and out["error"] == "QuotaExceeded", out
    assert "disk" in out["message"], out
    assert sorted(os.listdir(os.path.join(d.data, "backups"))) == before
    assert len(d.call(SB + "getBackups", {"id": sid}, token=tok)[1]["backups"]) == 1
    # A copy is disk too, while it waits to be pulled.
    st, out = d.call(SB + "pushDirectory", body={"sandboxId": sid, "directoryPath": "/w"},
                     token=tok)
    assert st == 403 and out["error"] == "QuotaExceeded", out
    assert not [n for n in os.listdir(os.path.join(d.data, "cp")) if not n.startswith(".")]


def test_the_owner_is_exempt_from_quotas(small):
    """--user-sandboxes 2 holds other users; the daemon's owner may make a
    third (the per-sandbox maximums still hold for it)."""
    d = small
    for name in ("own1", "own2", "own3"):
        st, out = create(d, "owner", name, disk=50)
        assert st == 200, out
    st, out = create(d, "owner", "own4", disk=101)
    assert st == 400, out
    # (With --user-jobs 1 --user-queue 0, a delete waits for no create.)
    for name in ("own1", "own2", "own3"):
        assert d.wait_status(name, ["RUNNING", "FAILED"])["status"] == "RUNNING"
    for name in ("own1", "own2", "own3"):
        assert d.sandbox("deleteSandbox", name)[0] == 200


def test_user_jobs_flags(small):
    """--user-jobs 1 --user-queue 0: a second long job of one user at a
    time is refused at once, another user's runs."""
    d = small
    a, b = user(d, "JobsA"), user(d, "JobsB")
    sa = d.create("ja", token=a, disk=3)
    sb = d.create("jb", token=b, disk=3)
    marker = "mk" + uuid.uuid4().hex[:12]
    long_one = Call(d.sandbox, "exec", sa, {"command": f"sleep 30; true {marker}"}, token=a)
    long_one.start()
    try:
        wait_for(lambda: len(marked(marker)) == 1, 20, "A's exec to run")
        st, out = d.sandbox("exec", sa, {"command": "true"}, token=a)
        assert st == 429 and "1 running" in out["message"], out
        assert d.sandbox("exec", sb, {"command": "true"}, token=b)[0] == 200
    finally:
        def done():
            for pid in marked(marker):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return not long_one.is_alive()
        wait_for(done, 30, "A's exec to end")
