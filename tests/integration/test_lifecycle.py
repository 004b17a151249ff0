"""Persistent sandboxes: create, start, exec, stop, pause, resume, rm."""
import fcntl
import json
import os
import subprocess
import threading
import time

from conftest import (IDMAP_DIR, RUN_DIR, idmap_claims, run_file, run_on_pty, sandbox_processes,
                      wait_for)


def test_full_lifecycle_and_persistence(pe):
    pe.create("box1", "-e", "GREETING=hello")
    assert pe.inspect("box1")["status"] == "created"
    pe.start("box1")
    info = pe.inspect("box1")
    assert info["status"] == "running" and info["pid"] > 0
    # The sandbox outlives the command that started it.
    p = pe.exec("box1", "/bin/sh", "-c", "echo $GREETING; hostname; echo kept > /root/file")
    assert p.returncode == 0 and p.stdout.split() == ["hello", "box1"]
    pe.run("runtime", "stop", "box1", check=True)
    assert pe.inspect("box1")["status"] == "stopped"
    assert pe.exec("box1", "true").returncode != 0
    pe.start("box1")
    p = pe.exec("box1", "cat", "/root/file")
    assert p.stdout == "kept\n"
    pe.run("runtime", "rm", "box1", check=True)
    assert pe.ls() == []
    assert not os.path.exists(os.path.join(pe.data, "sandboxes", "box1"))


def test_exec_options_and_exit_codes(pe):
    pe.create("box2")
    pe.start("box2")
    p = pe.exec("box2", "/bin/sh", "-c", "echo $X; pwd; id -u; echo err >&2; exit 7",
                opts=("-e", "X=1", "-w", "/tmp/w", "--user", "1000"))
    assert p.returncode == 7
    assert p.stdout.split() == ["1", "/tmp/w", "1000"]
    assert p.stderr == "err\n"
    assert pe.exec("box2", "/nope").returncode == 127
    p = pe.exec("box2", "sleep", "30", opts=("--timeout", "0.3"))
    assert p.returncode == 124


def test_exec_sees_the_same_sandbox(pe):
    pe.create("box3")
    pe.start("box3")
    pe.exec("box3", "/bin/sh", "-c", "echo shared > /tmp/x", check=True)
    p = pe.exec("box3", "/bin/sh", "-c", "cat /tmp/x; cat /proc/1/comm")
    assert p.stdout.split() == ["shared", "pocketenv-init"]


def test_stop_escalates_to_sigkill(pe):
    pe.create("box4")
    pe.start("box4")
    # A process that ignores SIGTERM keeps init waiting; stop must still end.
    bg = subprocess.Popen(pe.cmd("runtime", "exec", "box4", "--", "/bin/sh", "-c",
                                 "trap '' TERM; echo ready; while true; do sleep 1; done"),
                          stdout=subprocess.PIPE, text=True)
    assert bg.stdout.readline() == "ready\n"
    init = pe.inspect("box4")["pid"]
    p = pe.run("runtime", "stop", "box4", "--timeout", "0.5", check=True)
    assert p.returncode == 0
    bg.wait(10)
    assert pe.inspect("box4")["status"] == "stopped"
    wait_for(lambda: not os.path.exists(f"/proc/{init}"), 10, "init gone after stop")


def test_pause_and_resume(pe, tmp_path):
    vol = tmp_path / "v"
    vol.mkdir()
    vol.chmod(0o777)
    pe.create("box5", "-v", f"{vol}:/v")
    pe.start("box5")
    # The counter overwrites its file in place (<>, no truncation): a
    # truncating `>` leaves the file empty while ext4 waits for the last
    # write's writeback, which on a busy disk is nearly all the time.
    bg = subprocess.Popen(pe.cmd("runtime", "exec", "box5", "--", "/bin/sh", "-c",
                                 "i=0; while true; do i=$((i+1)); echo $i 1<> /v/n; done"))
    counter = vol / "n"

    def value():
        try:
            return int(counter.read_text())
        except (ValueError, FileNotFoundError):
            return 0

    wait_for(lambda: value() > 0, 10, "counter to run")
    pe.run("runtime", "pause", "box5", check=True)
    assert pe.inspect("box5")["status"] == "paused"
    # Frozen: every sandbox process is in the refrigerator (state D / frozen).
    pid = pe.inspect("box5")["pid"]
    assert pe.exec("box5", "true").returncode != 0
    frozen = value()
    procs = [p for p in sandbox_processes() if p != pid]
    assert procs
    pe.run("runtime", "resume", "box5", check=True)
    wait_for(lambda: value() > frozen + 10, 10, "counter to advance after resume")
    pe.run("runtime", "rm", "box5", check=True)
    bg.wait(10)


def test_init_reaps_orphans(pe):
    pe.create("box6")
    pe.start("box6")
    pe.exec("box6", "/bin/sh", "-c", "for i in 1 2 3 4 5; do (sleep 0.01 &) ; done", check=True)

    def no_zombies():
        p = pe.exec("box6", "/bin/sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null")
        states = [l.rsplit(")", 1)[1].split()[0] for l in p.stdout.splitlines()]
        return "Z" not in states and len(states) <= 3

    wait_for(no_zombies, 10, "orphans to be reaped")


def test_ls_and_inspect(pe):
    pe.create("a1")
    pe.create("b2", "--memory", "64m", "--cpus", "0.5", "--pids", "100")
    pe.start("b2")
    names = [(s["name"], s["status"]) for s in pe.ls()]
    assert names == [("a1", "created"), ("b2", "running")]
    cfg = pe.inspect("b2")["config"]
    assert cfg["memory"] == 64 << 20 and cfg["cpuMillis"] == 500 and cfg["pids"] == 100
    table = pe.run("runtime", "ls", check=True).stdout
    assert "a1" in table and "running" in table


def test_concurrent_create_same_name(pe):
    results = []

    def create():
        results.append(pe.run("runtime", "create", "dup", "--image", pe.image).returncode)

    ts = [threading.Thread(target=create) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(results) == [0, 125, 125, 125]
    assert [s["name"] for s in pe.ls()] == ["dup"]


def test_state_survives_a_killed_sandbox(pe):
    """If init dies behind our back, the sandbox reads as stopped and starts again."""
    pe.create("box7")
    pe.start("box7")
    os.kill(pe.inspect("box7")["pid"], 9)
    wait_for(lambda: pe.inspect("box7")["status"] == "stopped", 10, "stopped status")
    pe.start("box7")
    assert pe.exec("box7", "true").returncode == 0


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_crash_of_the_host_leaves_the_last_change_before_the_start(pe):
    """A start's state (run.json) is not synced to disk, so a crash of the
    host may leave it gone, empty, partial, or older than state.json. Each
    reads as not running, loses nothing of the sandbox, and it starts again;
    a stale one never makes a stopped sandbox read as running."""
    pe.create("box9", "-e", "KEPT=yes")
    d = os.path.join(pe.data, "sandboxes", "box9")
    run = run_file(d, "json")
    state = os.stat(os.path.join(d, "state.json"))
    pe.start("box9")
    pe.exec("box9", "/bin/sh", "-c", "echo data > /root/f", check=True)
    # The start wrote run.json apart from the create's state, not over it:
    # on a tmpfs, root's alone, which a crash of the host empties.
    assert os.path.exists(run) and not os.path.exists(os.path.join(d, "run.json"))
    after = os.stat(os.path.join(d, "state.json"))
    assert (after.st_ino, after.st_mtime_ns) == (state.st_ino, state.st_mtime_ns)
    fs = subprocess.run(["stat", "-f", "-c", "%T", RUN_DIR], capture_output=True, text=True)
    assert fs.stdout.strip() in ("tmpfs", "ramfs"), fs
    mode = os.stat(RUN_DIR)
    assert (mode.st_mode & 0o777, mode.st_uid) == (0o700, 0)

    # Older than state.json: a stop replaced state.json, the crash lost the
    # removal of run.json.
    with open(run) as f:
        stale = f.read()
    pe.run("runtime", "stop", "box9", check=True)
    assert not os.path.exists(run)
    with open(run, "w") as f:
        f.write(stale)
    info = pe.inspect("box9")
    assert info["status"] == "stopped" and info["pid"] == 0, info

    for left in ["", stale[: len(stale) // 2], None]:
        pe.start("box9")
        init = pe.inspect("box9")["pid"]
        # The crash: every process of the sandbox gone, run.json as the disk had it.
        os.kill(init, 9)
        wait_for(lambda: gone(init), 10, "init gone")
        if left is None:
            os.unlink(run)
        else:
            with open(run, "w") as f:
                f.write(left)
        info = pe.inspect("box9")
        assert info["status"] == "stopped" and info["pid"] == 0, (repr(left), info)
        pe.start("box9")
        p = pe.exec("box9", "/bin/sh", "-c", "echo $KEPT; cat /root/f")
        assert p.stdout.split() == ["yes", "data"], p.stdout + p.stderr
        pe.run("runtime", "stop", "box9", check=True)
    # Removed, the sandbox leaves nothing in the run directory.
    pe.start("box9")
    sock = run_file(d, "sock")
    assert os.path.exists(run) and os.path.exists(sock)
    pe.run("runtime", "rm", "box9", check=True)
    assert not os.path.exists(run) and not os.path.exists(sock)


def test_exec_with_tty(pe):
    pe.create("tty1")
    pe.start("tty1")
    code, text = run_on_pty(pe.cmd("runtime", "exec", "-t", "tty1", "--", "/bin/sh", "-c",
                                   "tty; stty size; echo $TERM; exit 5"), rows=40, cols=132)
    assert code == 5, text
    assert "/dev/pts/" in text and "40 132" in text and "xterm-256color" in text


def test_many_short_execs_all_succeed(pe):
    """A command that exits at once must never lose its exit status (a race
    between the helper reaping it and the caller opening its pidfd once
    failed about 1 exec in 30)."""
    pe.create("fast")
    pe.start("fast")
    codes = [pe.exec("fast", "/bin/sh", "-c", f"exit {i % 7}").returncode for i in range(150)]
    assert codes == [i % 7 for i in range(150)]


def test_a_slow_removal_step_is_named_in_the_log(pe):
    """A removal that stalls says which step it stalled in (its caller, an
    API delete with a client timeout, sees only the total). Here the step is
    the sandbox's lock, held by another process for over a second."""
    pe.create("slowrm")
    pe.start("slowrm")
    fd = os.open(os.path.join(pe.data, "sandboxes", "slowrm"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rm = subprocess.Popen(pe.cmd("runtime", "rm", "slowrm"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)

        def rm_waits():
            with open("/proc/locks") as f:
                return any("->" in line and line.split()[5] == str(rm.pid) for line in f)
        wait_for(rm_waits, what="rm to wait for the sandbox's lock")
        since = time.monotonic()
        wait_for(lambda: time.monotonic() - since > 1.2, what="the lock held past 1 s")
        assert rm.poll() is None
    finally:
        os.close(fd)
    _, err = rm.communicate(timeout=30)
    assert rm.returncode == 0, err
    assert "remove sandbox slowrm: its lock took" in err, err
    assert pe.ls() == []


def test_an_id_range_claim_is_never_left_empty(pe):
    """A claim appears with its owner in it (linked in whole), so a maker
    killed mid-claim leaves nothing. Empty claims that older builds left
    that way are dead ranges: gc removes them once they are a minute old,
    never a fresh one."""
    pe.create("claimed")
    [slot] = idmap_claims(pe.data)
    with open(os.path.join(IDMAP_DIR, slot)) as f:
        assert f.read().splitlines()[1].startswith("sandbox:claimed:")
    taken = set(os.listdir(IDMAP_DIR))
    free = [str(n) for n in range(60000, 60100) if str(n) not in taken][:2]
    old, fresh = (os.path.join(IDMAP_DIR, n) for n in free)
    try:
        for path in (old, fresh):
            open(path, "x").close()
        os.utime(old, (time.time() - 120, time.time() - 120))
        pe.run("runtime", "gc", check=True)
        assert not os.path.exists(old) and os.path.exists(fresh)
        assert idmap_claims(pe.data) == [slot]  # a live claim is untouched
    finally:
        for path in (old, fresh):
            if os.path.exists(path):
                os.unlink(path)
