"""The warm pool (issue 21): `pocketenv serve --pool busybox=N`.

Sandboxes started ahead of time are claimed by a matching createSandbox
(it answers RUNNING), replaced in the background, handed out once, never
seen by a user before their claim, and shrink under memory pressure. The
pressure is played with POCKETENV_POOL_MEMINFO, a file in /proc/meminfo's
format the daemon reads instead. One daemon serves the module; the
restart and the disabled pool get their own.
"""
import io
import json
import os
import signal
import subprocess
import tarfile
import time
import urllib.request

import pytest

from conftest import BIN, wait_for
from test_daemon import serving
from test_daemon_restart import served  # noqa: F401 (a fixture)

MIN_MIB = 1000
PLENTY = "MemTotal: 999999999 kB\nMemAvailable: 99999999 kB\n"
SCARCE = f"MemTotal: 999999999 kB\nMemAvailable: {(MIN_MIB // 2) * 1024} kB\n"


def write_meminfo(path, text):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)  # the daemon never reads half a file


def pool_metrics(d, base="busybox"):
    req = urllib.request.Request(d.url + "/metrics",
                                 headers={"Authorization": f"Bearer {d.token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("pocketenv_pool_") and f'base="{base}"' in line:
            name = line.split("{")[0][len("pocketenv_pool_"):]
            if 'event="' in line:
                name = line.split('event="')[1].split('"')[0]
            out[name] = int(line.split()[-1])
    return out


def runtime_names(data):
    p = subprocess.run([BIN, "--data", data, "runtime", "ls", "--json"],
                       capture_output=True, text=True, check=True)
    return {s["name"] for s in json.loads(p.stdout)}


def wait_full(d, n=2):
    return wait_for(lambda: pool_metrics(d).get("ready") == n and pool_metrics(d), 30,
                    f"the pool to hold {n}")


def exec_sh(d, ident, cmd, token="owner"):
    st, o = d.sandbox("exec", ident, {"command": cmd}, token=token)
    assert st == 200, o
    return o


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pool")
    meminfo = str(tmp / "meminfo")
    write_meminfo(meminfo, PLENTY)
    with serving(tmp, extra=["--sandbox-net", "none", "--pool", "busybox=2",
                             "--pool-min-available", str(MIN_MIB)],
                 env={"POCKETENV_POOL_MEMINFO": meminfo}) as d:
        d.meminfo = meminfo
        d.others = []
        yield d


def ssh_pair(d, sb, token="owner"):
    """The default pair of claimed sb as getSshKeys shows it, checked
    against the two files in the sandbox: the public line is the file's,
    its comment names the sandbox's name, and OpenSSH derives that public
    key from the private key file."""
    st, k = d.call("io.pocketenv.sandbox.getSshKeys", {"id": sb["id"]}, token=token)
    assert st == 200, k
    assert k["publicKey"].endswith(" root@" + sb["name"]), (k["publicKey"], sb["name"])
    pub = exec_sh(d, sb["id"], "cat /root/.ssh/id_ed25519.pub", token=token)["stdout"]
    assert pub.strip() == k["publicKey"]
    priv = exec_sh(d, sb["id"], "cat /root/.ssh/id_ed25519", token=token)["stdout"]
    assert priv.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    derived = subprocess.run(["ssh-keygen", "-y", "-f", "/dev/stdin"], input=priv,
                             capture_output=True, text=True, check=True).stdout
    assert derived.split()[:2] == k["publicKey"].split()[:2]
    return k["publicKey"], priv


def claim(d, token="owner", **body):
    """A create that must come from the pool: it answers RUNNING."""
    wait_full(d)
    before = pool_metrics(d)["claimed"]
    st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox", **body},
                    token=token)
    assert st == 200, sb
    assert sb["status"] == "RUNNING", sb
    assert pool_metrics(d)["claimed"] == before + 1
    return sb


def test_pool_fills_is_claimed_and_refills(pooled):
    d = pooled
    m = wait_full(d)
    assert m["size"] == 2
    pool_ids = runtime_names(d.data)
    assert len(pool_ids) == 2 and all(n.startswith("sbx_") for n in pool_ids)
    # Not anybody's: the owner's list is empty while two sandboxes run.
    st, o = d.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local", "limit": 100})
    assert st == 200 and o["sandboxes"] == []
    sb = claim(d)
    assert sb["id"] in pool_ids  # the oldest warm sandbox, under its own id
    assert exec_sh(d, sb["id"], "echo hi")["stdout"] == "hi\n"
    ssh_pair(d, sb)  # placed ahead by the filler, under the name the claim got
    wait_full(d)  # replaced in the background
    assert len(runtime_names(d.data)) == 3
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
    assert sb["id"] not in runtime_names(d.data)


def test_claim_takes_the_users_settings(pooled):
    d = pooled
    sb = claim(d, name="warm-one", description="from the pool", keepAlive=True,
               envs=[{"name": "GREETING", "value": "hello"}],
               secrets=[{"name": "TOKEN", "value": "s3cret-value"}])
    st, got = d.sandbox("getSandbox", "warm-one")
    assert st == 200, got
    got = got["sandbox"]
    assert (got["id"], got["name"], got["description"], got["keepAlive"], got["status"]) == \
        (sb["id"], "warm-one", "from the pool", True, "RUNNING")
    assert exec_sh(d, "warm-one", 'echo "$GREETING $TOKEN"')["stdout"] == "hello s3cret-value\n"
    ssh_pair(d, got)  # a name of its own: a pair made for it, not the one placed ahead
    st, o = d.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local", "limit": 100})
    assert [s["id"] for s in o["sandboxes"]] == [sb["id"]]
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_other_sizes_or_a_network_policy_start_their_own(pooled):
    d = pooled
    wait_full(d)
    before = pool_metrics(d)["claimed"]
    ids = []
    for extra in ({"memory": 1}, {"networkPolicy": {"mode": "none"}}):
        st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox", **extra})
        assert st == 200, sb
        assert sb["status"] == "INITIALIZING", sb  # a normal start, not a claim
        ids.append(sb["id"])
    for i in ids:
        d.wait_status(i, ["RUNNING"])
        assert d.sandbox("deleteSandbox", i)[0] == 200
    assert pool_metrics(d)["claimed"] == before


def test_claimed_sandbox_keeps_full_isolation(pooled):
    d = pooled
    sb = claim(d)
    out = exec_sh(d, sb["id"], "cat /proc/self/uid_map; grep -E '^(Seccomp|NoNewPrivs|CapEff):' "
                  "/proc/self/status; cat /proc/self/cgroup")["stdout"]
    inside, outside, count = out.splitlines()[0].split()
    assert inside == "0" and outside != "0" and int(count) <= 65536  # its own id range
    fields = dict(l.split(":\t") for l in out.splitlines() if ":\t" in l)
    assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "1"
    assert fields["CapEff"] != "000001ffffffffff"
    # From the host: its init sits in the sandbox's own cgroups.
    p = subprocess.run([BIN, "--data", d.data, "runtime", "inspect", sb["id"]],
                       capture_output=True, text=True, check=True)
    pid = json.loads(p.stdout)["pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        groups = f.read()
    mem = [l.split(":", 2)[2] for l in groups.splitlines() if ":memory:" in l][0]
    assert mem.startswith("/pocketenv/pocketenv-"), groups  # its own, not the daemon's
    with open(f"/proc/{os.getpid()}/cgroup") as f:
        assert mem not in f.read()
    # The filler runs at nice 19; what it started runs at the default
    # priority once claimed: the init, and what is exec'd.
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[16] == "0"
    out = exec_sh(d, sb["id"], "cut -d' ' -f19 /proc/self/stat")
    assert out["stdout"] == "0\n", out
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_a_pooled_sandbox_never_carries_one_users_data_to_another(pooled):
    """User A claims, leaves a file, a process and a variable, deletes;
    user B's next claims (every warm sandbox there is, twice over) see
    none of it, and no sandbox id is ever handed out twice. The ssh pair
    the filler placed ahead is each claim's own: never another claim's,
    and only the claim's owner reads it."""
    d = pooled
    alice, bob = d.token_for("did:key:zPoolAlice"), d.token_for("did:key:zPoolBob")
    d.others += [alice, bob]
    a = claim(d, token=alice, envs=[{"name": "ALICE_VAR", "value": "alice-was-here"}])
    pairs = {ssh_pair(d, a, token=alice)}
    exec_sh(d, a["id"], "echo alice-secret > /root/alice.txt; echo x > /tmp/alice.tmp; "
            "(setsid sleep 31337 </dev/null >/dev/null 2>&1 &); true", token=alice)
    assert "sleep 31337" in exec_sh(d, a["id"], "ps -o args", token=alice)["stdout"]
    assert d.sandbox("deleteSandbox", a["id"], token=alice)[0] == 200
    assert a["id"] not in runtime_names(d.data)  # used once: gone, not back in the pool
    seen = {a["id"]}
    for _ in range(4):
        b = claim(d, token=bob)
        assert b["id"] not in seen
        seen.add(b["id"])
        ls = exec_sh(d, b["id"], "ls -a /root /tmp", token=bob)["stdout"].split()
        assert "alice.txt" not in ls and "alice.tmp" not in ls, ls
        assert exec_sh(d, b["id"], "cat /root/alice.txt", token=bob)["exitCode"] != 0
        assert "31337" not in exec_sh(d, b["id"], "ps -o args", token=bob)["stdout"]
        env = exec_sh(d, b["id"], "env", token=bob)["stdout"]
        assert "ALICE_VAR" not in env and "alice-was-here" not in env, env
        # its own ssh pair: none of Alice's, none of another claim's
        pair = ssh_pair(d, b, token=bob)
        assert pair[0] not in {p[0] for p in pairs} and pair[1] not in {p[1] for p in pairs}
        pairs.add(pair)
        # and Alice cannot reach Bob's sandbox, nor its keys, by its id
        assert d.sandbox("getSandbox", b["id"], token=alice)[0] == 404
        assert d.call("io.pocketenv.sandbox.getSshKeys", {"id": b["id"]},
                      token=alice)[0] == 404
        assert d.sandbox("deleteSandbox", b["id"], token=bob)[0] == 200


def test_a_pooled_sandbox_that_died_is_never_handed_out(pooled):
    """A pooled sandbox whose init was killed (by hand, the OOM killer)
    while it waited: the next creates never get it; it is removed, and
    every create answers a sandbox that runs."""
    d = pooled
    wait_full(d)
    p = subprocess.run([BIN, "--data", d.data, "runtime", "ls", "--json"],
                       capture_output=True, text=True, check=True)
    victim = json.loads(p.stdout)[0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{victim['pid']}/status") or
             "zombie" in open(f"/proc/{victim['pid']}/status").read(), 10, "the init to die")
    for _ in range(2):
        st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox"})
        assert st == 200 and sb["id"] != victim["name"], sb
        d.wait_status(sb["id"], ["RUNNING"])
        assert exec_sh(d, sb["id"], "echo alive")["stdout"] == "alive\n"
        assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
    assert f"pool: {victim['name']} is not running any more: removed" in d.log_text()
    wait_for(lambda: victim["name"] not in runtime_names(d.data), 10, "the dead one removed")


def test_pool_shrinks_under_memory_pressure_and_grows_back(pooled):
    d = pooled
    before = wait_full(d)
    write_meminfo(d.meminfo, SCARCE)
    try:
        # removed, not only forgotten (one being made as the pressure came
        # is removed right after)
        wait_for(lambda: pool_metrics(d)["ready"] == 0 and runtime_names(d.data) == set(), 30,
                 "the pool to shrink")
        assert pool_metrics(d)["shrunk"] >= before["shrunk"] + 2
        # Under pressure a create starts its own sandbox.
        st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox"})
        assert st == 200 and sb["status"] == "INITIALIZING", sb
        d.wait_status(sb["id"], ["RUNNING"])
        assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
        assert pool_metrics(d)["ready"] == 0
    finally:
        write_meminfo(d.meminfo, PLENTY)
    wait_full(d)


def test_pool_of_0_is_no_pool(tmp_path):
    with serving(tmp_path, extra=["--sandbox-net", "none", "--pool", "busybox=0"]) as d:
        assert pool_metrics(d) == {}
        st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox"})
        assert st == 200 and sb["status"] == "INITIALIZING", sb
        d.wait_status(sb["id"], ["RUNNING"])
        assert runtime_names(d.data) == {sb["id"]}
        assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_bad_pool_flags_are_refused(tmp_path):
    for flag in (["--pool", "busybox"], ["--pool", "busybox=-1"], ["--pool", "=2"],
                 ["--pool", 'bad"name=1'], ["--pool", "busybox=99999"],
                 ["--pool-min-available", "lots"]):
        p = subprocess.run([BIN, "serve", "--data", str(tmp_path / "d")] + flag,
                           capture_output=True, text=True, timeout=20)
        assert p.returncode != 0 and "--pool" in p.stderr, (flag, p.stderr)


def test_restart_removes_the_pool_and_adopts_no_pooled_sandbox(served):
    s = served(["--sandbox-net", "none", "--pool", "busybox=2"])
    d = s.start()
    wait_full(d)
    mine = claim(d)  # a user's sandbox, adopted after the restart
    wait_full(d)
    pooled_ids = set(s.runtime_names()) - {mine["id"]}
    assert len(pooled_ids) == 2
    s.kill9()
    s.extra = ["--sandbox-net", "none"]  # back without a pool
    d = s.start()
    assert set(s.runtime_names()) == {mine["id"]}  # the pooled ones were orphans: removed
    assert [x["id"] for x in s.sandboxes()] == [mine["id"]]
    assert d.sandbox("getSandbox", mine["id"])[1]["sandbox"]["status"] == "RUNNING"
    s.stop()
    # A clean stop of a daemon with a pool removes its pooled sandboxes.
    s.extra = ["--sandbox-net", "none", "--pool", "busybox=2"]
    d = s.start()
    wait_full(d)
    assert len(s.runtime_names()) == 3
    s.stop()
    assert set(s.runtime_names()) == {mine["id"]}
    d = s.start()
    assert d.sandbox("deleteSandbox", mine["id"])[0] == 200


HANGING_SH = """#!/bin/busybox sh
# busybox's shell, but for the pool's warm-up (`sh -c true`): that hangs
if [ "$1" = -c ] && [ "$2" = true ]; then exec /bin/busybox sleep 424242; fi
exec /bin/busybox sh "$@"
"""


def test_a_warm_up_that_hangs_is_killed_and_the_pool_still_fills(tmp_path):
    """Each pooled sandbox runs `sh -c true` once before a claim can take
    it (it warms the claim's first exec). An image whose shell hangs there
    still gets its pool: the warm-up is killed after its 5 s and logged,
    the sandbox is claimed and works, and nothing of the warm-up is left
    running in it. A daemon stopped during a warm-up stops at once."""
    data = tmp_path / "data"
    subprocess.run([BIN, "--data", str(data), "image", "build", "busybox"], check=True,
                   capture_output=True)
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        body = HANGING_SH.encode()
        info = tarfile.TarInfo("bin/sh")
        info.size, info.mode = len(body), 0o755
        tar.addfile(info, io.BytesIO(body))
    subprocess.run([BIN, "--data", str(data), "image", "import", "hang", str(layer),
                    "--parent", "busybox"], check=True, capture_output=True)
    with serving(tmp_path, extra=["--sandbox-net", "none", "--pool", "hang=1"]) as d:
        wait_for(lambda: pool_metrics(d, "hang").get("ready") == 1, 30, "the pool to fill")
        assert "warm-up exec ended 137" in d.log_text()
        st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "hang"})
        assert st == 200 and sb["status"] == "RUNNING", sb
        out = exec_sh(d, sb["id"], "echo hello; ps -o args")["stdout"]
        assert out.startswith("hello\n") and "sleep 424242" not in out, out
        assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
        # the refill's warm-up hangs now: the stop does not wait it out
        wait_for(lambda: "sleep 424242" in subprocess.run(
            ["ps", "-eo", "args"], capture_output=True, text=True).stdout, 10,
            "the refill's warm-up")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        d.proc.wait(timeout=30)
        assert time.monotonic() - t0 < 4, "the stop waited for the warm-up"
