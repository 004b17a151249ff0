"""Snapshots of persistent sandboxes and sandboxes made from them, through
the runtime (`pocketenv runtime snapshot|snapshot-rm|create-from`): real
namespaces, real overlayfs over btrfs snapshots on the layers filesystem."""
import json
import os
import subprocess

from conftest import LAYERS_DIR, layers_of, wait_for


def snapshot(pe, name):
    p = pe.run("runtime", "snapshot", name, check=True)
    return json.loads(p.stdout)


def fork(pe, snap_id, name):
    pe.run("runtime", "create-from", snap_id, name, "--net", "none", "--disk", "64m", check=True)
    pe.start(name)


def out(pe, name, script):
    p = pe.exec(name, "/bin/sh", "-c", script)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_state_survives_and_forks_diverge(pe):
    """A file (with its owner) and an installed set-uid binary come back in
    every sandbox made from the snapshot, after the source is gone too;
    writes in one fork are seen by no other sandbox."""
    pe.create("src", "--net", "none", "--disk", "64m")
    pe.start("src")
    out(pe, "src", "mkdir -p /opt/bin && cp /bin/busybox /opt/bin/echo && chmod 4755 /opt/bin/echo"
        " && echo kept > /root/file && chown 1000:1000 /root/file")
    snap = snapshot(pe, "src")
    try:
        check_forks(pe, snap)
    finally:
        pe.run("runtime", "snapshot-rm", snap["id"])
    assert layers_of(pe.data) == []


def check_forks(pe, snap):
    assert len(snap["id"]) == 16 and snap["image"] == pe.image
    for name in ("a", "b"):
        fork(pe, snap["id"], name)
        assert out(pe, name, "cat /root/file") == "kept\n"
        assert out(pe, name, "stat -c '%u:%g %a' /root/file /opt/bin/echo") == \
            "1000:1000 644\n0:0 4755\n"
        assert out(pe, name, "/opt/bin/echo runs") == "runs\n"
    out(pe, "a", "echo a > /root/only-a && rm /root/file")
    out(pe, "src", "echo src > /root/only-src")
    assert out(pe, "b", "ls /root") == "file\n"
    assert out(pe, "a", "ls /root") == "only-a\n"
    assert out(pe, "src", "ls /root") == "file\nonly-src\n"
    # The source goes; the snapshot still makes sandboxes, with its state.
    pe.run("runtime", "rm", "src", check=True)
    fork(pe, snap["id"], "c")
    assert out(pe, "c", "cat /root/file; ls /root") == "kept\nfile\n"
    for name in ("a", "b", "c"):
        pe.run("runtime", "rm", name, check=True)


def test_snapshot_of_running_writer_is_consistent(pe):
    """A process writes a, then b, the same counter, without end, each by
    rename (a file being rewritten in place is empty for an instant, which
    a snapshot may well hold). The snapshot holds one instant: b is a or
    one behind it, never ahead; the writer goes on (it was thawed) and its
    sandbox says running."""
    pe.create("w", "--net", "none", "--disk", "64m")
    pe.start("w")
    writer = subprocess.Popen(pe.cmd("runtime", "exec", "w", "--", "/bin/sh", "-c",
                                     "i=0; while :; do i=$((i+1)); echo $i > /root/t; "
                                     "mv /root/t /root/a; echo $i > /root/t; "
                                     "mv /root/t /root/b; done"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: out(pe, "w", "cat /root/b 2>/dev/null || echo 0").strip() not in
                 ("", "0"), 20, "the writer to start")
        snaps = [snapshot(pe, "w") for _ in range(3)]
        for s in snaps:
            assert s["frozenMs"] > 0
        before = int(out(pe, "w", "cat /root/a"))
        wait_for(lambda: int(out(pe, "w", "cat /root/a") or 0) > before, 20,
                 "the writer to go on after the snapshots")
        assert pe.inspect("w")["status"] == "running"
        assert writer.poll() is None
        for i, s in enumerate(snaps):
            fork(pe, s["id"], f"f{i}")
            a, b = out(pe, f"f{i}", "cat /root/a /root/b").split()
            assert int(a) - int(b) in (0, 1), (a, b)
            pe.run("runtime", "rm", f"f{i}", check=True)
    finally:
        writer.kill()
        writer.wait(10)
        for s in locals().get("snaps", []):
            pe.run("runtime", "snapshot-rm", s["id"])


def test_snapshot_shares_data(pe):
    """20 MiB written before the snapshot: the snapshot's files take them,
    but btrfs charges it (nearly) nothing of its own, and a sandbox made
    from it is charged only what it writes itself (its disk limit holds
    its own writes, not the snapshot's)."""
    pe.create("big", "--net", "none", "--disk", "64m")
    pe.start("big")
    out(pe, "big", "dd if=/dev/urandom of=/root/big bs=1M count=20 2>/dev/null")
    snap = snapshot(pe, "big")
    try:
        assert snap["sizeBytes"] >= 20 << 20
        assert 0 <= snap["exclusiveBytes"] < 1 << 20
        fork(pe, snap["id"], "f")
        out(pe, "f", "sync")
        pe.run("runtime", "stop", "f", check=True)
        used = pe.inspect("f")["disk"]["usedBytes"]
        assert used < 4 << 20, used
        # A 64 MiB limit takes 3 x 20 MiB more in the fork: the snapshot's
        # 20 MiB are not its own.
        pe.start("f")
        out(pe, "f", "for i in 1 2 3; do dd if=/dev/zero of=/root/z$i bs=1M count=20 "
            "2>/dev/null || exit 1; done; sync")
    finally:
        pe.run("runtime", "snapshot-rm", snap["id"])


def test_snapshot_bad_input(pe):
    pe.create("nolimit", "--net", "none")
    p = pe.run("runtime", "snapshot", "nolimit")
    assert p.returncode != 0 and "disk limit" in p.stderr
    p = pe.run("runtime", "snapshot", "missing")
    assert p.returncode != 0 and "no such sandbox" in p.stderr
    for bad in ("../../etc", "0123456789abcdeg", "x/y"):
        p = pe.run("runtime", "snapshot-rm", bad)
        assert p.returncode != 0 and "invalid snapshot id" in p.stderr, p.stderr
        p = pe.run("runtime", "create-from", bad, "n", "--disk", "64m")
        assert p.returncode != 0 and "invalid snapshot id" in p.stderr, p.stderr
    p = pe.run("runtime", "create-from", "0123456789abcdef", "n", "--disk", "64m")
    assert p.returncode != 0 and "no snapshot" in p.stderr
    assert not os.path.exists(os.path.join(pe.data, "sandboxes", "n"))
    pe.create("lim", "--net", "none", "--disk", "64m")
    snap = snapshot(pe, "lim")
    p = pe.run("runtime", "create-from", snap["id"], "n")
    assert p.returncode != 0 and "disk limit" in p.stderr
    pe.run("runtime", "snapshot-rm", snap["id"], check=True)
    p = pe.run("runtime", "snapshot-rm", snap["id"])
    assert p.returncode != 0 and "no snapshot" in p.stderr
    assert not [n for n in os.listdir(LAYERS_DIR) if snap["id"] in n]


def test_snapshot_is_private_and_read_only(pe):
    """Its files are owned by host ids 0-65535 (as an image's): its top
    directory lets no host user but root in, and nothing can be written
    into it, not even by root."""
    pe.create("p", "--net", "none", "--disk", "64m")
    snap = snapshot(pe, "p")
    try:
        top = [os.path.join(LAYERS_DIR, n) for n in os.listdir(LAYERS_DIR)
               if n.endswith("snap-" + snap["id"])]
        assert len(top) == 1
        st = os.stat(top[0])
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o700)
        try:
            open(os.path.join(top[0], "upper", "x"), "w").close()
            raise AssertionError("wrote into a snapshot")
        except OSError as e:
            assert e.errno == 30, e  # EROFS
    finally:
        pe.run("runtime", "snapshot-rm", snap["id"])
