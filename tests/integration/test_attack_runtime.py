"""Attacks on the runtime found by the attack run against the daemon: each
test performs the attack from inside a sandbox (or as its caller would be
attacked) and checks that the host does not notice."""
import os

import pytest

from conftest import run_on_pty


def probe_errnos(text, prefix):
    """{fd: (sctty, sti)} from the tiocsti probe's report lines."""
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            f = dict(kv.split("=") for kv in line.split()[1:])
            out[int(f["fd"])] = (f["sctty"], f["sti"])
    return out


# ---- seccomp: terminal injection and vsock ----

@pytest.mark.parametrize("userns", ["private", "host"])
def test_vsock_sockets_refused(pe, userns):
    p = pe.run("run", "--image", pe.image, "--userns", userns, "--", "pe-escape-probe", "vsock")
    assert p.stdout.strip() == "vsock errno=EAFNOSUPPORT", p.stdout + p.stderr
    p = pe.run("run", "--image", pe.image, "--userns", userns, "--", "pe-try-syscall",
               "socket-vsock", "socket-vsock-hi", "socketpair-vsock", "socket-unix")
    got = dict(line.split(" errno=") for line in p.stdout.splitlines())
    assert got == {"socket-vsock": "EAFNOSUPPORT", "socket-vsock-hi": "EAFNOSUPPORT",
                   "socketpair-vsock": "EAFNOSUPPORT", "socket-unix": "EINVAL"}


def test_tiocsti_refused_on_own_pty(pe):
    """With -t the command's terminal is the sandbox's own PTY, relayed to
    the caller's: a byte pushed into its input would be read back as if the
    user typed it (and, once relayed, by whatever reads the caller's)."""
    code, out = run_on_pty(pe.cmd("run", "-t", "--image", pe.image, "--",
                                  "pe-escape-probe", "tiocsti", "Zq7"))
    assert code == 0, out
    # fd 0 is the command's controlling terminal already (sctty EPERM:
    # it has one); the push itself is what the filter refuses.
    assert "sti=EPERM" in out and "sti=0" not in out, out
    assert "Zq7" not in out
    code, out = run_on_pty(pe.cmd("run", "-t", "--image", pe.image, "--",
                                  "pe-escape-probe", "tioclinux"))
    assert "tioclinux errno=EPERM" in out, out
    p = pe.run("run", "--image", pe.image, "--", "pe-try-syscall", "ioctl-tiocsti",
               "ioctl-tiocsti-hi", "ioctl-tioclinux", "ioctl-tcgets")
    got = dict(line.split(" errno=") for line in p.stdout.splitlines())
    assert got == {"ioctl-tiocsti": "EPERM", "ioctl-tiocsti-hi": "EPERM",
                   "ioctl-tioclinux": "EPERM", "ioctl-tcgets": "EBADF"}


# ---- default limits: processes and open files ----

def probe_count(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1]), line.split("errno=")[1]
    raise AssertionError(f"no {name} line in {text!r}")


def test_fork_bomb_contained_by_default_pids_limit(pe):
    """No --pids: the runtime's default (1024) holds. The probe stops by
    itself at 3000, which the old code reached."""
    p = pe.run("run", "--image", pe.image, "--", "pe-escape-probe", "fork-until-fail", "3000")
    n, _ = probe_count(p.stdout, "fork-until-fail")
    assert 0 < n < 1024, p.stdout + p.stderr


def test_fork_bomb_contained_in_persistent_sandbox(pe):
    pe.create("bomb", "--net", "none")
    pe.start("bomb")
    assert pe.inspect("bomb")["config"]["pids"] == 1024
    p = pe.exec("bomb", "pe-escape-probe", "fork-until-fail", "3000")
    n, _ = probe_count(p.stdout, "fork-until-fail")
    assert 0 < n < 1024, p.stdout + p.stderr


def test_open_files_limited_one_shot(pe):
    p = pe.sh("ulimit -Sn; ulimit -Hn; pe-escape-probe open-until-fail")
    lines = p.stdout.split("\n")
    assert lines[0:2] == ["1024", "4096"], p.stdout + p.stderr
    n, e = probe_count(p.stdout, "open-until-fail")
    assert e == "EMFILE" and n < 1024
    # Raising the soft limit to the hard one is allowed, past it is not.
    p = pe.sh("ulimit -n 4096 && pe-escape-probe open-until-fail; ulimit -n 5000; echo rc=$?")
    n, e = probe_count(p.stdout, "open-until-fail")
    assert e == "EMFILE" and 4000 < n < 4096
    assert "rc=0" not in p.stdout
    p = pe.sh("ulimit -Sn; ulimit -Hn; pe-escape-probe open-until-fail", "--nofile", "64:128")
    assert p.stdout.split("\n")[0:2] == ["64", "128"]
    n, e = probe_count(p.stdout, "open-until-fail")
    assert e == "EMFILE" and n < 64


@pytest.mark.parametrize("userns", ["private", "host"])
def test_open_files_limited_persistent(pe, userns):
    pe.create("files", "--net", "none", "--userns", userns, "--nofile", "256:512")
    pe.start("files")
    cfg = pe.inspect("files")["config"]
    assert (cfg["nofileSoft"], cfg["nofileHard"]) == (256, 512)
    p = pe.exec("files", "/bin/sh", "-c",
                "ulimit -Sn; ulimit -Hn; grep 'open files' /proc/1/limits;"
                "pe-escape-probe open-until-fail")
    lines = p.stdout.split("\n")
    assert lines[0:2] == ["256", "512"], p.stdout + p.stderr
    assert lines[2].split()[3:5] == ["256", "512"]  # init's own
    n, e = probe_count(p.stdout, "open-until-fail")
    assert e == "EMFILE" and n < 256


def test_open_files_limit_bad_values(pe):
    for bad, msg in (("0", "invalid open-files limit"), ("8", "at least 16"),
                     ("2000:1000", "above the hard limit"), ("64:x", "invalid open-files")):
        p = pe.sh("true", "--nofile", bad)
        assert p.returncode == 125 and msg in p.stderr, (bad, p.stderr)


# ---- a sandbox never holds a terminal of the host ----

def run_on_foreign_pty(cmd, typed=b"", timeout=30):
    """Run cmd (in a session of its own) with stdin, stdout and stderr on a
    fresh pty that is nobody's controlling terminal, as agent harnesses
    and CI set up; `typed` is written to the master as a user would type.
    Returns (exit code, what reached the master, what was left in the
    pty's input queue: bytes pushed there that nobody read)."""
    import fcntl
    import pty
    import select
    import subprocess
    import termios
    import time
    import tty
    master, slave = pty.openpty()
    tty.setraw(slave)  # pushed bytes are readable at once, no line needed
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            start_new_session=True)
    if typed:
        os.write(master, typed)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                out += os.read(master, 4096)
            except OSError:
                break
        elif proc.poll() is not None:
            break
    proc.wait(10)
    # Drain: what the process wrote after its last select.
    while select.select([master], [], [], 0)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.set_blocking(slave, False)
    left = b""
    try:
        left = os.read(slave, 4096)
    except BlockingIOError:
        pass
    os.close(slave)
    os.close(master)
    return proc.returncode, out.decode(errors="replace"), left


def test_no_host_terminal_in_one_shot_run(pe):
    """`pocketenv run` without -t, its stdio on a terminal no session owns:
    the sandbox gets pipes. Before, it made the terminal its own
    (TIOCSCTTY) and typed into it (TIOCSTI)."""
    code, out, left = run_on_foreign_pty(pe.cmd("run", "--image", pe.image, "--",
                                                "pe-escape-probe", "tiocsti", "Zq7"))
    assert code == 0, out
    assert b"Zq7" not in left and "Zq7" not in out, (out, left)
    res = probe_errnos(out, "tiocsti")
    assert set(res) == {0, 1, 2}, out
    for fd, (sctty, sti) in res.items():
        assert sctty == "ENOTTY" and sti != "0", out


def test_no_host_terminal_in_exec(pe):
    pe.create("ttyx", "--net", "none")
    pe.start("ttyx")
    code, out, left = run_on_foreign_pty(pe.cmd("runtime", "exec", "ttyx", "--",
                                                "pe-escape-probe", "tiocsti", "Zq7"))
    assert code == 0, out
    assert b"Zq7" not in left and "Zq7" not in out, (out, left)
    res = probe_errnos(out, "tiocsti")
    assert set(res) == {0, 1, 2} and all(v[0] == "ENOTTY" for v in res.values()), out


def test_terminal_relay_still_carries_io(pe):
    """What the pipes replaced still works: typed input reaches the
    command, its output and errors reach the terminal, the exit code
    comes back, and the command sees no terminal."""
    code, out, _ = run_on_foreign_pty(
        pe.cmd("run", "--image", pe.image, "--", "/bin/sh", "-c",
               "read x; echo got=$x; echo err >&2; [ -t 0 ] || echo notty; exit 3"),
        typed=b"hello\n")
    assert code == 3, out
    assert "got=hello" in out and "err" in out and "notty" in out, out


# ---- a sandbox cannot make its removal fail or leave files behind ----

def sandbox_entries(pe):
    d = os.path.join(pe.data, "sandboxes")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


HOSTILE_TREE = (
    "mkdir /deep && pe-escape-probe deep-tree /deep 5000 && cd /deep &&"
    " ln -s {victim} to-host && ln -s {victim}/precious file-on-host && ln -s / root &&"
    " mkfifo fifo && cd d/d/d && ln -s {victim} deeper-link &&"
    " ln -s ../../../../../../../../../.. dotdot")


@pytest.mark.parametrize("userns", ["private", "host"])
def test_rm_of_a_hostile_tree(pe, tmp_path, userns):
    """5,000 nested directories (the old remover gave up at 4,096 and left
    the layer on the host for good), symlinks to host paths and a fifo;
    with --userns host also a device node. rm succeeds and touches
    nothing outside."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep")
    pe.create("hostile", "--net", "none", "--userns", userns)
    pe.start("hostile")
    script = HOSTILE_TREE.format(victim=victim)
    if userns == "host":
        script += " && mknod /deep/null c 1 3"
    p = pe.exec("hostile", "/bin/sh", "-c", script + " && echo made")
    assert "made" in p.stdout and "deep-tree 5000 errno=0" in p.stdout, p.stdout + p.stderr
    p = pe.run("runtime", "rm", "hostile")
    assert p.returncode == 0, p.stderr
    assert sandbox_entries(pe) == []
    assert (victim / "precious").read_text() == "keep"
    assert os.path.exists("/dev/null") and os.path.exists("/etc/passwd")


def test_interrupted_rm_is_finished_by_gc(pe):
    """rm killed while it deletes the files: the name is free at once (the
    directory was renamed first), and gc removes what is left."""
    import signal
    import subprocess
    import time
    pe.create("big", "--net", "none")
    pe.start("big")
    p = pe.exec("big", "/bin/sh", "-c", "mkdir /many && pe-escape-probe fill-files /many 60000 &&"
                " pe-escape-probe deep-tree / 5000", timeout=120)
    assert "fill-files 60000 errno=0" in p.stdout, p.stdout + p.stderr
    pe.run("runtime", "stop", "big", "--timeout", "0", check=True)
    rm = subprocess.Popen(pe.cmd("runtime", "rm", "big"), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    gone = []
    deadline = time.monotonic() + 30
    try:
        while not gone and time.monotonic() < deadline:
            gone = [e for e in sandbox_entries(pe) if e.startswith(".rm-")]
            time.sleep(0.001)
        assert gone, "rm never renamed the sandbox"
    finally:
        rm.send_signal(signal.SIGKILL)
        rm.wait(10)
    left = os.path.join(pe.data, "sandboxes", gone[0])
    assert os.path.isdir(left), "rm finished before it could be interrupted"
    assert "big" not in [s["name"] for s in pe.ls()]
    p = pe.run("runtime", "gc")
    assert p.returncode == 0, p.stderr
    assert sandbox_entries(pe) == []


# ---- disk limits that hold ----

from conftest import LAYERS_DIR, layers_of, wait_for  # noqa: E402

MiB = 1 << 20


def fill(pe, name, what, *args):
    p = pe.exec(name, "pe-escape-probe", what, *args, timeout=120)
    return probe_count(p.stdout, what)


@pytest.mark.parametrize("userns", ["private", "host"])
def test_disk_limit_holds_for_persistent_sandbox(pe, userns):
    """64 MiB: writing 100 MiB stops at the limit inside, for sandbox root
    (with --userns host, root of the host as far as the kernel's quota
    checks go) and for a user; a neighbour with its own limit is
    unaffected. Before, persistent sandboxes refused --disk."""
    pe.create("full", "--net", "none", "--userns", userns, "--disk", "64m")
    pe.create("other", "--net", "none", "--userns", userns, "--disk", "64m")
    pe.start("full")
    pe.start("other")
    pe.exec("full", "/bin/sh", "-c", "mkdir -p /home/u && chown 1000 /home/u", check=True)
    n, e = fill(pe, "full", "fill-bytes", "/big", "100")
    assert e in ("EDQUOT", "ENOSPC") and n < 64, (n, e)
    p = pe.exec("full", "pe-escape-probe", "fill-bytes", "/home/u/more", "10", opts=("-u", "1000"))
    assert probe_count(p.stdout, "fill-bytes")[1] in ("EDQUOT", "ENOSPC"), p.stdout + p.stderr
    n, e = fill(pe, "other", "fill-bytes", "/mine", "32")
    assert (n, e) == (32, "0")
    pe.exec("full", "sync", check=False)
    disk = pe.inspect("full")["disk"]
    assert disk["limitBytes"] == 64 * MiB
    assert 48 * MiB < disk["usedBytes"] <= 64 * MiB, disk
    # Space given back inside is usable again.
    p = pe.exec("full", "/bin/sh", "-c", "rm -f /big /home/u/more && sync &&"
                " pe-escape-probe fill-bytes /again 16")
    assert probe_count(p.stdout, "fill-bytes") == (16, "0"), p.stdout + p.stderr


def test_dev_shm_is_bounded_by_the_disk_size(pe):
    """/dev/shm is a directory of the sandbox's staging tmpfs, which has
    the sandbox's disk size (16 MiB here): a persistent sandbox cannot
    fill more of it, as it could not of a /dev/shm of its own size."""
    pe.create("shm", "--net", "none", "--disk", "16m")
    pe.start("shm")
    n, e = fill(pe, "shm", "fill-bytes", "/dev/shm/big", "100")
    assert e == "ENOSPC" and n <= 16, (n, e)


def test_disk_numbers_whatever_other_layers_exist(pe, tmp_path):
    """inspect's disk limit is this sandbox's, however many other layers
    (other data directories' sandboxes, made before it) the host-wide
    layers filesystem holds. Before, their quota items filled the one
    search that was meant to find this layer's limit: -1 as soon as a few
    other sandboxes with a disk limit existed on the host, e.g. the
    README's `demo`."""
    from conftest import Pocketenv
    other = Pocketenv(str(tmp_path / "neighbours"), pe.image)
    try:
        for i in range(10):
            other.run("runtime", "create", f"n{i}", "--image", pe.image, "--net", "none",
                      "--disk", "16m", check=True)
        pe.create("mine", "--net", "none", "--disk", "24m")
        assert pe.inspect("mine")["disk"]["limitBytes"] == 24 * MiB
    finally:
        for i in range(10):
            other.run("runtime", "rm", f"n{i}")
    assert layers_of(other.data) == []


@pytest.mark.parametrize("userns", ["private", "host"])
def test_disk_limit_bounds_inodes(pe, userns):
    """A flood of empty files (300,000 inodes on the host filesystem before)
    ends at the limit: on the layers filesystem every inode's metadata is
    counted against the sandbox's bytes, and the host sees one image file."""
    pe.create("inodes", "--net", "none", "--userns", userns, "--disk", "8m")
    pe.start("inodes")
    pe.exec("inodes", "mkdir", "/many", check=False)
    n, e = fill(pe, "inodes", "fill-files", "/many", "200000")
    assert e in ("EDQUOT", "ENOSPC"), (n, e)
    assert 1000 < n < 8 * MiB // 100, n  # each costs at least ~100 bytes of the limit


def test_one_shot_disk_limit_bounds_inodes(pe):
    p = pe.sh("mkdir /t && pe-escape-probe fill-files /t 100000", "--disk", "4m")
    n, e = probe_count(p.stdout, "fill-files")
    assert e == "ENOSPC" and n <= 4 * MiB // 4096, p.stdout + p.stderr


def qgroups():
    import subprocess
    p = subprocess.run(["btrfs", "qgroup", "show", LAYERS_DIR], capture_output=True, text=True)
    return p.stdout


def test_rm_gives_the_space_back(pe):
    import subprocess
    pe.create("gone", "--net", "none", "--disk", "16m")
    pe.start("gone")
    assert fill(pe, "gone", "fill-bytes", "/data", "8") == (8, "0")
    layer = os.path.join(LAYERS_DIR, pe.inspect("gone")["layer"])
    sub = subprocess.run(["btrfs", "subvolume", "show", layer], capture_output=True, text=True,
                         check=True).stdout
    qgroup = "0/" + sub.split("Subvolume ID:")[1].split()[0]
    assert qgroup in qgroups()
    pe.run("runtime", "rm", "gone", check=True)
    assert not os.path.exists(layer)
    # btrfs frees the tree in the background: the qgroup goes with it.
    wait_for(lambda: qgroup + " " not in qgroups(), 60, "the layer's qgroup to go")


def test_gc_removes_layers_whose_sandbox_is_gone(pe):
    """A removal that died after its rename, and a sandbox directory deleted
    by hand: gc removes both layers (and only this data directory's)."""
    import shutil
    pe.create("a", "--net", "none", "--disk", "8m")
    # No id range: deleting its directory by hand leaks nothing else.
    pe.create("b", "--net", "none", "--disk", "8m", "--userns", "host")
    pe.create("keep", "--net", "none", "--disk", "8m")
    la, lb = pe.inspect("a")["layer"], pe.inspect("b")["layer"]
    sb = os.path.join(pe.data, "sandboxes")
    os.rename(os.path.join(sb, "a"), os.path.join(sb, ".rm-a-" + pe.inspect("keep")["id"]))
    shutil.rmtree(os.path.join(sb, "b"))
    assert set(layers_of(pe.data)) >= {la, lb}
    pe.run("runtime", "gc", check=True)
    assert sorted(layers_of(pe.data)) == [pe.inspect("keep")["layer"]]
    assert sorted(os.listdir(sb)) == ["keep"]


def test_gc_finishes_a_create_that_died_before_its_rename(pe):
    """A create killed after it claimed its id range and made its layer,
    before the rename: only its staging dir (.new-<id>) is left, with no
    note of either. gc releases both from the id alone (the fixture checks
    that no claim or layer of this data directory is left), and nothing
    of a sandbox that finished."""
    from conftest import idmap_claims
    pe.create("died", "--net", "none", "--disk", "8m")
    pe.create("keep", "--net", "none", "--disk", "8m")
    st = pe.inspect("died")
    sb = os.path.join(pe.data, "sandboxes")
    os.rename(os.path.join(sb, "died"), os.path.join(sb, ".new-" + st["id"]))
    assert len(idmap_claims(pe.data)) == 2 and st["layer"] in layers_of(pe.data)
    pe.run("runtime", "gc", check=True)
    assert sorted(os.listdir(sb)) == ["keep"]
    assert sorted(layers_of(pe.data)) == [pe.inspect("keep")["layer"]]
    assert len(idmap_claims(pe.data)) == 1


def test_disk_limit_without_layers_filesystem_fails_clearly(pe, tmp_path):
    """Where the layers filesystem cannot be made, --disk is an error, not a
    sandbox without a limit; without --disk all works."""
    broken = tmp_path / "nolayers" / "layers"
    broken.parent.mkdir()
    (tmp_path / "nolayers" / "layers.img").mkdir()  # cannot be an image
    env = {"POCKETENV_LAYERS_DIR": str(broken)}
    p = pe.run("runtime", "create", "lim", "--image", pe.image, "--disk", "64m", env=env)
    assert p.returncode == 125
    assert "disk limit needs the layers filesystem" in p.stderr, p.stderr
    assert pe.ls() == []
    p = pe.run("runtime", "create", "free", "--image", pe.image, "--net", "none", env=env)
    assert p.returncode == 0, p.stderr
    pe.run("runtime", "start", "free", env=env, check=True)
    p = pe.run("runtime", "exec", "free", "--", "/bin/sh", "-c", "echo ok > /f && cat /f", env=env)
    assert p.stdout.strip() == "ok"


def test_layers_filesystem_is_mounted_again_on_demand(pe, tmp_path):
    """After a reboot the image exists but nothing mounts it: the next
    start does (a layers filesystem of this test's own, so unmounting it
    disturbs nobody)."""
    import subprocess
    layers = str(tmp_path / "own" / "layers")
    env = {"POCKETENV_LAYERS_DIR": layers}
    try:
        pe.run("runtime", "create", "re", "--image", pe.image, "--net", "none", "--disk", "16m",
               env=env, check=True)
        pe.run("runtime", "start", "re", env=env, check=True)
        pe.run("runtime", "exec", "re", "--", "/bin/sh", "-c", "echo kept > /f", env=env,
               check=True)
        pe.run("runtime", "stop", "re", env=env, check=True)
        subprocess.run(["umount", layers], check=True)
        assert not os.path.ismount(layers)
        pe.run("runtime", "start", "re", env=env, check=True)
        assert os.path.ismount(layers)
        p = pe.run("runtime", "exec", "re", "--", "cat", "/f", env=env)
        assert p.stdout.strip() == "kept"
        assert pe.run("runtime", "inspect", "re", "--json", env=env,
                      check=True).stdout.count("limitBytes") == 1
        pe.run("runtime", "rm", "re", env=env, check=True)
        assert layers_of(pe.data, layers) == []
    finally:
        pe.run("runtime", "rm", "re", env=env)
        if os.path.ismount(layers):
            subprocess.run(["umount", layers])
