"""Snapshots through the API and the CLI (issue 19): createSnapshot,
getSnapshots, getSnapshot, deleteSnapshot; `pocketenv snapshot ...`.

One daemon for the module, busybox sandboxes with the daemon's default disk
limit (so a layer on the layers filesystem), a short tick and a retention
of 3 snapshots per user so that expiry and eviction can be watched."""
import json
import os
import subprocess
import time

import pytest

from conftest import BIN, LAYERS_DIR, wait_for
from test_daemon import broken_image, serving
from test_resources import ResDaemon, banner_key

SB = "io.pocketenv.sandbox."
# Forks start in the background, several at once: on 2 loaded cores (or
# under the sanitizers) ten take longer than one create.
FORK_WAIT = 180


FLAGS = ["--sandbox-net", "none", "--rate-limit", "0", "--tick", "0.5", "--user-snapshots", "3",
         "--user-sandboxes", "40"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("snapshots"), ResDaemon, FLAGS) as d:
        d.public_key = banner_key(d)
        yield d
        for tok in [d.token] + list(getattr(d, "others", [])):
            st, out = d.call(SB + "getSnapshots", token=tok)
            for s in (out or {}).get("snapshots", []):
                d.call(SB + "deleteSnapshot", {"id": s["id"]}, token=tok, post=True, timeout=BTRFS_WAIT_S)
        # deleted layers go in the background: wait for them, then look
        try:
            wait_for(lambda: snapshot_layers(d) == [], BTRFS_WAIT_S, "deleted layers to go")
        except AssertionError:
            pass
        left = snapshot_layers(d)
        for layer in left:  # so that a failed test leaves nothing behind
            subprocess.run([BIN, "--data", d.data, "runtime", "snapshot-rm", layer])
        assert left == []


@pytest.fixture(autouse=True)
def no_snapshot_left(daemon):
    """Each test starts without the owner's snapshots, whatever the one
    before left when it failed."""
    yield
    st, out = daemon.call(SB + "getSnapshots")
    for s in (out or {}).get("snapshots", []):
        daemon.call(SB + "deleteSnapshot", {"id": s["id"]}, post=True, timeout=BTRFS_WAIT_S)


# Snapshot calls take and drop btrfs subvolumes, which wait for a btrfs
# transaction: 30 s was seen in CI while the cleaner dropped earlier tests'
# layers. The calls answer; give them that long.
BTRFS_WAIT_S = 120


def snapshot_layers(d):
    """The runtime snapshots of d's data directory on the layers filesystem."""
    real = os.path.realpath(d.data)
    out = []
    for name in os.listdir(LAYERS_DIR):
        try:
            with open(os.path.join(LAYERS_DIR, name, "owner")) as f:
                lines = f.read().split("\n")
        except (FileNotFoundError, NotADirectoryError):
            continue
        if lines[0] == real and lines[1] == "snapshot":
            out.append(lines[2])
    return sorted(out)


def snap(d, ident, name, token="owner", **extra):
    return d.call(SB + "createSnapshot", {"id": ident}, {"name": name, **extra}, token=token, timeout=BTRFS_WAIT_S)


def delete_all(d, token="owner"):
    st, out = d.call(SB + "getSnapshots", token=token)
    assert st == 200, out
    for s in out["snapshots"]:
        assert d.call(SB + "deleteSnapshot", {"id": s["id"]}, token=token, post=True, timeout=BTRFS_WAIT_S)[0] == 200


def test_create_list_inspect_delete(daemon):
    d = daemon
    sid = d.create("src1")
    d.sh(sid, "echo kept > /root/file && dd if=/dev/zero of=/root/z bs=1M count=4 2>/dev/null")
    st, out = snap(d, "src1", "first", description="before")
    assert st == 200, out
    s = out["snapshot"]
    assert s["id"].startswith("snp_") and s["name"] == "first" and s["sandboxId"] == sid
    assert s["description"] == "before" and s["sizeBytes"] >= 4 << 20
    assert s["frozenMs"] >= 1 and 0 <= s["exclusiveBytes"] < 1 << 20
    assert snapshot_layers(d) != []
    st, out = d.call(SB + "getSnapshots")
    assert st == 200 and [x["id"] for x in out["snapshots"]] == [s["id"]]
    for key in (s["id"], "first"):
        st, out = d.call(SB + "getSnapshot", {"id": key})
        assert st == 200 and out["snapshot"]["id"] == s["id"], out
    # A name is the owner's once.
    st, out = snap(d, "src1", "first")
    assert st == 409, out
    # The sandbox goes; its snapshot stays, and can still be removed.
    assert d.sandbox("deleteSandbox", sid)[0] == 200
    st, out = d.call(SB + "getSnapshot", {"id": "first"})
    assert st == 200, out
    assert d.call(SB + "deleteSnapshot", {"id": "first"}, post=True, timeout=BTRFS_WAIT_S)[0] == 200
    assert d.call(SB + "getSnapshot", {"id": "first"})[0] == 404
    assert d.call(SB + "deleteSnapshot", {"id": "first"}, post=True, timeout=BTRFS_WAIT_S)[0] == 404
    wait_for(lambda: snapshot_layers(d) == [], BTRFS_WAIT_S, "the deleted snapshot's layer to go")


def test_another_user_cannot_see_use_or_delete(daemon):
    d = daemon
    other = d.token_for("did:key:zSnapshotStranger")
    d.others = [other]
    sid = d.create("src2")
    st, out = snap(d, "src2", "mine")
    assert st == 200, out
    s = out["snapshot"]
    st, out = d.call(SB + "getSnapshots", token=other)
    assert st == 200 and out["snapshots"] == []
    for key in (s["id"], "mine"):
        assert d.call(SB + "getSnapshot", {"id": key}, token=other)[0] == 404
        assert d.call(SB + "deleteSnapshot", {"id": key}, token=other, post=True, timeout=BTRFS_WAIT_S)[0] == 404
    # Nor snapshot the owner's sandbox.
    st, out = snap(d, sid, "theirs", token=other)
    assert st == 404, out
    assert d.call(SB + "getSnapshot", {"id": s["id"]})[0] == 200
    # The same name is free for another user.
    osid = d.create("src2o", token=other)
    st, out = snap(d, osid, "mine", token=other)
    assert st == 200, out
    delete_all(d, other)
    assert d.sandbox("deleteSandbox", osid, token=other)[0] == 200
    delete_all(d)


def test_retention_and_ttl_evict(daemon):
    d = daemon
    d.create("src3")
    ids = []
    for i in range(4):
        st, out = snap(d, "src3", f"r{i}")
        assert st == 200, out
        ids.append(out["snapshot"]["id"])
    # Keep 3: the oldest went, its layer too.
    st, out = d.call(SB + "getSnapshots")
    assert [x["id"] for x in out["snapshots"]] == ids[:0:-1]
    wait_for(lambda: len(snapshot_layers(d)) == 3, BTRFS_WAIT_S, "the evicted layer to go")
    delete_all(d)
    st, out = snap(d, "src3", "short", ttl=1)
    assert st == 200, out
    wait_for(lambda: d.call(SB + "getSnapshot", {"id": "short"})[0] == 404, 20,
             "the snapshot to expire")
    wait_for(lambda: snapshot_layers(d) == [], BTRFS_WAIT_S, "the expired snapshot's layer to go")


def test_bad_input(daemon):
    d = daemon
    d.create("src4")
    for name in ("../x", "a/b", "", ".hidden", "snp_x", "x" * 64):
        st, out = snap(d, "src4", name)
        assert st == 400 and out["error"] == "InvalidRequest", (name, out)
    for ttl in (0, -1, 400 * 86400):
        st, out = snap(d, "src4", "t", ttl=ttl)
        assert st == 400, out
    st, out = snap(d, "nosuch", "n")
    assert st == 404 and out["error"] == "SandboxNotFound", out
    st, out = d.call(SB + "createSandbox", body={"base": broken_image(d.data), "name": "failed4"})
    assert st == 200, out
    assert d.wait_status(out["id"], ["RUNNING", "FAILED"])["status"] == "FAILED"
    st, snap_out = snap(d, "failed4", "n")
    assert st == 400 and "FAILED" in snap_out["message"], snap_out
    st, fork_out = fork(d, "failed4", 2)
    assert st == 400 and "FAILED" in fork_out["message"], fork_out
    assert d.sandbox("deleteSandbox", out["id"])[0] == 200
    assert d.call(SB + "getSnapshot", {"id": "nosuch"})[0] == 404
    wait_for(lambda: snapshot_layers(d) == [], BTRFS_WAIT_S, "no layer left")


def test_cli(daemon):
    d = daemon
    d.create("src5")
    env = dict(os.environ, POCKETENV_API_URL=d.url, POCKETENV_TOKEN=d.token)

    def cli(*args):
        return subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=60)

    p = cli("snapshot", "create", "src5", "c1", "-d", "from the cli", "-t", "2h")
    assert p.returncode == 0 and "Snapshot c1" in p.stdout, p.stderr
    p = cli("snapshot", "ls")
    assert p.returncode == 0 and "c1" in p.stdout and "snp_" in p.stdout, p.stderr
    p = cli("snapshot", "inspect", "c1")
    assert p.returncode == 0 and '"from the cli"' in p.stdout, p.stderr
    # a local snapshot is never put back under its sandbox: 501, saying what to do
    p = cli("snapshot", "restore", "c1")
    assert p.returncode != 0 and "not supported by local: snapshot-restore" in p.stderr, p.stderr
    assert "base snapshot:c1" in p.stderr, p.stderr
    p = cli("snapshot", "rm", "c1")
    assert p.returncode == 0, p.stderr
    p = cli("snapshot", "inspect", "c1")
    assert p.returncode != 0
    p = cli("snapshot", "create", "src5")
    assert p.returncode == 2 and "missing NAME" in p.stderr, p.stderr


def test_authz_matrix(daemon):
    d = daemon
    sid = d.create("snauth")
    st, out = snap(d, sid, "guarded")
    assert st == 200, out
    snid = out["snapshot"]["id"]
    owner = d.call("io.pocketenv.actor.getProfile")[1]["did"]
    now = int(time.time())
    other = d.token_for("did:key:zSnapshotStranger2")
    expired = d.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now - 7200,
                     "exp": now - 3600})
    forged = d.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now, "exp": now + 600},
                   key=os.urandom(32))
    answers = []
    for tok, want in [(None, (401, "AuthenticationRequired")), (expired, (401, "ExpiredToken")),
                      (forged, (401, "InvalidToken")), (other, None)]:
        for ident, key in ((sid, snid), ("snauth", "guarded")):
            for st, out, w in [
                (*snap(d, ident, "stolen", token=tok), (404, "SandboxNotFound")),
                (*d.call(SB + "getSnapshot", {"id": key}, token=tok), (404, "SnapshotNotFound")),
                (*d.call(SB + "deleteSnapshot", {"id": key}, token=tok, post=True, timeout=BTRFS_WAIT_S),
                 (404, "SnapshotNotFound")),
                (*fork(d, ident, 1, token=tok), (404, "SandboxNotFound")),
                (*d.call(SB + "createSandbox", body={"base": "snapshot:" + key, "name": "x"},
                         token=tok), (404, "SnapshotNotFound")),
            ]:
                answers.append(json.dumps(out))
                assert (st, (out or {}).get("error")) == (want or w), out
        st, out = d.call(SB + "getSnapshots", token=tok)
        answers.append(json.dumps(out))
        assert (st, (out or {}).get("error")) == (want or (200, None)), out
        if want is None:
            assert out["snapshots"] == [], out
    for a in answers:
        assert sid not in a and snid not in a and owner not in a, a
    st, out = d.call(SB + "getSnapshots")
    assert [s["id"] for s in out["snapshots"]] == [snid]
    delete_all(d)


def test_create_from_snapshot(daemon):
    """createSandbox with base snapshot:NAME: the new sandbox starts on the
    snapshot's files (a file and an installed binary), is independent of
    the source and of its siblings, and the snapshot keeps working after
    the source is deleted. Another user cannot start from it."""
    d = daemon
    sid = d.create("src6")
    d.sh(sid, "echo state > /root/file && mkdir -p /opt/bin && cp /bin/busybox /opt/bin/echo")
    st, out = snap(d, "src6", "base6")
    assert st == 200, out
    snid = out["snapshot"]["id"]
    assert d.sandbox("deleteSandbox", sid)[0] == 200
    kids = [d.create(f"kid6-{i}", base="snapshot:base6") for i in range(2)]
    kids.append(d.create("kid6-byid", base="snapshot:" + snid))
    for k in kids:
        assert d.sh(k, "cat /root/file; /opt/bin/echo runs")["stdout"] == "state\nruns\n"
    d.sh(kids[0], "echo mine > /root/file")
    assert d.sh(kids[1], "cat /root/file")["stdout"] == "state\n"
    assert d.sh(kids[0], "cat /root/file")["stdout"] == "mine\n"
    other = d.token_for("did:key:zSnapshotStranger3")
    d.others = list(getattr(d, "others", [])) + [other]
    st, out = d.call(SB + "createSandbox", body={"base": "snapshot:base6", "name": "thief"},
                     token=other)
    assert st == 404 and out["error"] == "SnapshotNotFound", out
    st, out = d.call(SB + "createSandbox", body={"base": "snapshot:" + snid, "name": "thief"},
                     token=other)
    assert st == 404 and out["error"] == "SnapshotNotFound", out
    st, out = d.call(SB + "createSandbox", body={"base": "snapshot:../x", "name": "bad"})
    assert st == 400, out
    # The sandboxes made from it keep their files when it goes.
    delete_all(d)
    assert d.sh(kids[1], "cat /root/file")["stdout"] == "state\n"
    for k in kids:
        assert d.sandbox("deleteSandbox", k)[0] == 200


def test_cli_create_from_snapshot(daemon):
    d = daemon
    sid = d.create("src7")
    d.sh(sid, "echo cli > /root/file")
    assert snap(d, "src7", "base7")[0] == 200
    env = dict(os.environ, POCKETENV_API_URL=d.url, POCKETENV_TOKEN=d.token)
    p = subprocess.run([BIN, "create", "kid7", "-b", "snapshot:base7"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert d.sh("kid7", "cat /root/file")["stdout"] == "cli\n"
    assert d.sandbox("deleteSandbox", "kid7")[0] == 200
    delete_all(d)


def fork(d, ident, count, token="owner"):
    return d.call(SB + "forkSandbox", {"id": ident}, {"count": count}, token=token, timeout=BTRFS_WAIT_S)


def test_fork_ten_diverge(daemon):
    """forkSandbox x10 of a running sandbox: ten ids at once, each
    sandbox runs on the source's files, and a write in one is seen by no
    other fork nor by the source; then a fork of the stopped source."""
    d = daemon
    sid = d.create("src8")
    d.sh(sid, "echo base > /root/file")
    st, out = fork(d, "src8", 10)
    assert st == 200, out
    kids = [k["id"] for k in out["sandboxes"]]
    assert len(set(kids)) == 10 and out["snapshot"].startswith("snp_")
    assert all(k["status"] == "INITIALIZING" for k in out["sandboxes"]), out
    for k in kids:
        got = d.wait_status(k, ["RUNNING", "FAILED"], timeout=FORK_WAIT)
        assert got["status"] == "RUNNING", got
    for i, k in enumerate(kids):
        d.sh(k, f"echo {i} > /root/own && echo {i} >> /root/file")
    for i, k in enumerate(kids):
        assert d.sh(k, "cat /root/file /root/own")["stdout"] == f"base\n{i}\n{i}\n"
    assert d.sh(sid, "cat /root/file; ls /root")["stdout"] == "base\nfile\n"
    # Stopped: forked the same way.
    assert d.sandbox("stopSandbox", sid)[0] == 200
    d.wait_status(sid, ["STOPPED"])
    st, out = fork(d, "src8", 1)
    assert st == 200, out
    k = out["sandboxes"][0]["id"]
    assert d.wait_status(k, ["RUNNING", "FAILED"], timeout=FORK_WAIT)["status"] == "RUNNING"
    assert d.sh(k, "cat /root/file")["stdout"] == "base\n"
    for k in kids + [k, sid]:
        assert d.sandbox("deleteSandbox", k)[0] == 200
    delete_all(d)


def test_fork_refused(daemon):
    d = daemon
    sid = d.create("src9")
    for count in (0, 101, "3"):
        st, out = fork(d, sid, count)
        assert st == 400, out
    other = d.token_for("did:key:zSnapshotStranger4")
    d.others = list(getattr(d, "others", [])) + [other]
    st, out = fork(d, sid, 1, token=other)
    assert st == 404 and out["error"] == "SandboxNotFound", out
    assert d.call(SB + "getSnapshots")[1]["snapshots"] == []
    assert d.sandbox("deleteSandbox", sid)[0] == 200
    # Past a user's sandbox quota (the operator has none): none made, and
    # no snapshot kept.
    osid = d.create("src9o", token=other)
    st, out = fork(d, osid, 60, token=other)
    assert st == 403 and out["error"] == "QuotaExceeded", out
    assert d.call(SB + "getSnapshots", token=other)[1]["snapshots"] == []
    st, out = d.call("io.pocketenv.actor.getActorSandboxes",
                     {"did": "did:key:zSnapshotStranger4", "limit": 100}, token=other)
    assert [s["name"] for s in out["sandboxes"]] == ["src9o"], out
    assert d.sandbox("deleteSandbox", osid, token=other)[0] == 200


def test_cli_fork(daemon):
    d = daemon
    d.create("src10")
    env = dict(os.environ, POCKETENV_API_URL=d.url, POCKETENV_TOKEN=d.token)
    p = subprocess.run([BIN, "fork", "src10", "-n", "2"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    names = p.stdout.split()
    assert len(names) == 2 and all(n.startswith("src10-") for n in names), p.stdout
    for n in names:
        assert d.wait_status(n, ["RUNNING", "FAILED"], timeout=FORK_WAIT)["status"] == "RUNNING"
        assert d.sandbox("deleteSandbox", n)[0] == 200
    assert d.sandbox("deleteSandbox", "src10")[0] == 200
    delete_all(d)


def test_definition_carried(daemon):
    """A sandbox made from a snapshot (fork or createSandbox) has its
    source's variables and secrets (in its processes' environment) and
    file rows; a variable given to its own create wins."""
    d = daemon
    sid = d.create("src11", envs=[{"name": "KEPT", "value": "v1"},
                                  {"name": "OVER", "value": "old"}],
                   secrets=[{"name": "TOKEN", "value": d.seal("s3cret")}])
    st, out = snap(d, sid, "def11")
    assert st == 200, out
    kid = d.create("kid11", base="snapshot:def11", envs=[{"name": "OVER", "value": "new"}])
    assert d.sh(kid, "echo $KEPT $OVER $TOKEN")["stdout"] == "v1 new s3cret\n"
    st, out = fork(d, sid, 1)
    assert st == 200, out
    fk = out["sandboxes"][0]["id"]
    assert d.wait_status(fk, ["RUNNING", "FAILED"], timeout=FORK_WAIT)["status"] == "RUNNING"
    assert d.sh(fk, "echo $KEPT $OVER $TOKEN")["stdout"] == "v1 old s3cret\n"
    for k in (kid, fk, sid):
        assert d.sandbox("deleteSandbox", k)[0] == 200
    delete_all(d)


def layers_used():
    st = os.statvfs(LAYERS_DIR)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_delete_answers_then_returns_the_space(daemon):
    """deleteSnapshot answers before the layer goes (the snapshot is not
    there any more and its name is free at once); a background job removes
    the layer, and the filesystem gets the space back."""
    d = daemon
    sid = d.create("src9")
    d.sh(sid, "dd if=/dev/urandom of=/root/big bs=1M count=64 2>/dev/null; sync")
    st, out = snap(d, "src9", "big9")
    assert st == 200, out
    out_id = out["snapshot"]["id"]
    layers = snapshot_layers(d)
    assert len(layers) == 1, layers
    # the sandbox goes: the snapshot alone holds the 64 MiB, whose space
    # comes back only once its layer goes too
    before = layers_used()
    assert d.sandbox("deleteSandbox", sid)[0] == 200
    st, out = d.call(SB + "deleteSnapshot", {"id": "big9"}, post=True, timeout=BTRFS_WAIT_S)
    assert st == 200, out
    assert d.call(SB + "getSnapshot", {"id": "big9"})[0] == 404
    assert all(x["name"] != "big9" for x in d.call(SB + "getSnapshots")[1]["snapshots"])
    wait_for(lambda: snapshot_layers(d) == [], BTRFS_WAIT_S, "the layer to be removed")
    wait_for(lambda: before - layers_used() >= 48 << 20, BTRFS_WAIT_S,
             "the filesystem to get the space back")
    # queued by the call, removed after by the background job
    log = d.log_text()
    snid = out_id
    queued = log.find(f"event=snapshot_delete_queued snapshot={snid}")
    removed = log.find(f"event=snapshot_layer_removed snapshot={snid}")
    assert 0 <= queued < removed, log[-3000:]


def restart_daemon(d, flags, between=None):
    """SIGTERM d, between(), the same daemon again with flags."""
    import signal
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=60) == 0, d.log_text()[-3000:]
    if between:
        between()
    with open(d.log_path, "a") as log:
        d.proc = subprocess.Popen([BIN, "serve", "--listen", d.url[len("http://"):], "--data",
                                   d.data, "--token-file", d.token_file, *flags], stderr=log)
    wait_for(lambda: d.healthy() or d.proc.poll() is not None, 10, "daemon /healthz")
    assert d.proc.poll() is None, d.log_text()[-3000:]


def store_exec(d, sql):
    import sqlite3
    db = sqlite3.connect(os.path.join(d.data, "pocketenv.db"), timeout=30)
    try:
        rows = db.execute(sql).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


def test_restart_mid_delete_finishes_and_refuses_the_base(daemon):
    """A daemon stopped while deleting a snapshot (its row already moved to
    the deletions, the layer still there: the state a stop between the
    steps leaves) hides it, refuses it as a base with a clear error, and
    removes the layer at its first tick after the restart."""
    d = daemon
    sid = d.create("src10")
    d.sh(sid, "echo ten > /root/file")
    st, out = snap(d, "src10", "gone10")
    assert st == 200, out
    snid = out["snapshot"]["id"]
    layers = snapshot_layers(d)
    assert len(layers) == 1, layers

    def crash_state():
        store_exec(d, "INSERT INTO snapshot_deletions (layer, snapshot_id, owner_did, name, "
                      "requested_at) SELECT layer, id, owner_did, name, 1 FROM snapshots "
                      f"WHERE id = '{snid}'")

    # a tick far away: the deletion is still pending while we look
    slow = [f if f != "0.5" else "60" for f in FLAGS]
    restart_daemon(d, slow, between=crash_state)
    try:
        assert d.call(SB + "getSnapshot", {"id": "gone10"})[0] == 404
        for key in ("gone10", snid):
            st, out = d.call(SB + "createSandbox", body={"base": "snapshot:" + key, "name": "late10"})
            assert st == 400 and out["error"] == "SnapshotDeleting", out
            assert "gone10 is being deleted" in out["message"], out
        assert snapshot_layers(d) == layers
    finally:
        restart_daemon(d, FLAGS)
    wait_for(lambda: snapshot_layers(d) == [], BTRFS_WAIT_S, "the restarted daemon to remove it")
    wait_for(lambda: store_exec(d, "SELECT count(*) FROM snapshot_deletions")[0][0] == 0, 30,
             "the deletion to be forgotten")
    assert store_exec(d, f"SELECT count(*) FROM snapshots WHERE id = '{snid}'")[0][0] == 0
    # the name is free again
    st, out = snap(d, "src10", "gone10")
    assert st == 200, out
