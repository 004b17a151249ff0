"""A persistent sandbox's init starts exec'd processes for the runtime
(lib/runtime/spawn-init.c, init/init.c, sync.h): who can ask it, what it does
with a request it cannot honour, and the path for a sandbox without one."""
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import BIN, Pocketenv, run_file, wait_for
from test_daemon import serving

MSG = struct.Struct("=iii244s")  # pe_sync_msg
HDR = struct.Struct("=IIqqQQHHIII")  # pe_spawn_hdr: 56 bytes, no padding
DECLINED = 8


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("spawner")) as d:
        yield d


def box(d, name):
    st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox", "name": name})
    assert st == 200, sb
    d.wait_status(name, ["RUNNING"])
    return sb["id"]


def sock_path(d, sid):
    return run_file(os.path.join(d.data, "sandboxes", sid), "sock")


def init_pid(d, sid):
    p = subprocess.run([BIN, "--data", d.data, "runtime", "inspect", sid],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)["pid"]


def ppid_of_exec(d, sid):
    """The parent of an exec'd shell as the sandbox sees it: 1 when its init
    started it, 0 when the parent is outside (the daemon, helper path)."""
    st, out = d.sandbox("exec", sid, {"command": "exec cat /proc/self/status"})
    assert st == 200 and out["exitCode"] == 0, out
    return int(next(line.split()[1] for line in out["stdout"].splitlines()
                    if line.startswith("PPid:")))


def exec_ok(d, sid):
    st, out = d.sandbox("exec", sid, {"command": "echo ok; exit 5"})
    assert st == 200 and out == {"stdout": "ok\n", "stderr": "", "exitCode": 5}, out


def test_only_host_root_can_reach_the_spawner(daemon):
    sid = box(daemon, "sp-perm")
    path = sock_path(daemon, sid)
    st = os.stat(path)
    assert (st.st_mode & 0o7777, st.st_uid) == (0o600, 0)
    # Another host user cannot connect, even though the directories on the
    # way are searchable.
    probe = ("import socket,sys\n"
             "s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
             "try:\n s.connect(sys.argv[1])\nexcept PermissionError:\n print('refused')\n"
             "else:\n print('connected')\n")
    p = subprocess.run([sys.executable, "-c", probe, path], capture_output=True, text=True,
                       user=65534, group=65534, extra_groups=[], timeout=30)
    assert p.stdout.strip() == "refused", p.stderr
    # Inside the sandbox no path leads to it: the sandbox's root sees its own
    # tree, and init's listening fd cannot be opened through /proc.
    st_, out = daemon.sandbox("exec", sid, {
        "command": "ls /spawn.sock 2>&1; cat /proc/1/fd/4 2>&1; echo end"})
    assert st_ == 200 and "end" in out["stdout"], out
    assert "No such device or address" in out["stdout"] or "No such" in out["stdout"], out
    exec_ok(daemon, sid)


def request(argv=("true",), env=(), workdir="/", fds=3, version=1, flags=0, nofile=(0, 0),
            len_delta=0, strings=None):
    body = strings if strings is not None else \
        b"".join(s.encode() + b"\0" for s in (*argv, *env, workdir))
    hdr = HDR.pack(version, flags, -1, -1, nofile[0], nofile[1], 0, 0, len(argv), len(env),
                   len(body) + len_delta)
    return hdr + body, fds


def answer(s):
    msg, _, _, _ = s.recvmsg(MSG.size, socket.CMSG_SPACE(64))
    return MSG.unpack(msg)[0] if len(msg) == MSG.size else None


def ask(path, data, nfds):
    """Send one request as host root; the first answer's type (None: the
    connection closed without one)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(20)
    s.connect(path)
    null = os.open("/dev/null", os.O_RDWR)
    try:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i" * nfds, *[null] * nfds))] \
            if nfds else []
        s.sendmsg([data], anc)
        return answer(s)
    finally:
        os.close(null)
        s.close()


def test_requests_init_cannot_honour_are_declined_and_init_keeps_serving(daemon):
    sid = box(daemon, "sp-bad")
    path = sock_path(daemon, sid)
    cases = {
        "too short": (b"\x01\x00", 3),
        "another version": request(version=99),
        "length that lies": request(len_delta=5),
        "no argv": request(argv=()),
        "strings without their NUL": request(strings=b"true"),
        "no stdio": request(fds=0),
        "open-files limit above init's": request(nofile=(1 << 40, 1 << 40)),
        "soft limit above hard": request(nofile=(100, 10)),
    }
    for what, (data, nfds) in cases.items():
        assert ask(path, data, nfds) == DECLINED, what
        exec_ok(daemon, sid)
    # A client that connects and sends nothing holds init up for at most its
    # receive timeout (2 s); the exec behind it goes through, and the silent
    # client is declined.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(20)
    s.connect(path)
    try:
        exec_ok(daemon, sid)
        assert answer(s) == DECLINED
    finally:
        s.close()
    # Through it all, every exec still came from init's spawner.
    assert ppid_of_exec(daemon, sid) == 1


def test_a_sandbox_without_a_spawner_still_execs(daemon):
    """A sandbox started by an older build has no spawn socket: exec takes
    the helper path, and its process is the daemon's child."""
    sid = box(daemon, "sp-old")
    os.unlink(sock_path(daemon, sid))
    exec_ok(daemon, sid)
    # Outside the sandbox's pid namespace, the parent shows as 0.
    assert ppid_of_exec(daemon, sid) == 0
    st, out = daemon.sandbox("exec", sid, {"command": "nosuchcmd"})
    assert st == 200 and out["exitCode"] == 127, out
    # Stopped and started again, the sandbox has its spawner back.
    assert daemon.sandbox("stopSandbox", sid)[0] == 200
    assert not os.path.exists(sock_path(daemon, sid))
    assert daemon.sandbox("startSandbox", sid)[0] == 200
    daemon.wait_status("sp-old", ["RUNNING"])
    assert os.path.exists(sock_path(daemon, sid))
    assert ppid_of_exec(daemon, sid) == 1
    exec_ok(daemon, sid)


def test_execs_started_by_init_report_their_end(daemon):
    sid = box(daemon, "sp-end")
    for cmd, code in (("exit 0", 0), ("exit 42", 42), ("kill -TERM $$", 143),
                      ("kill -9 $$", 137), ("/nonexistent/cmd", 127)):
        st, out = daemon.sandbox("exec", sid, {"command": cmd})
        assert st == 200 and out["exitCode"] == code, (cmd, out)
    # A process still running when the sandbox stops ends with it: a stop
    # asks (SIGTERM, which init passes on and then reports), a delete kills
    # init first, and with it the report (then the end is SIGKILL's).
    for how, code in (("stopSandbox", 143), ("deleteSandbox", 137)):
        if how == "deleteSandbox":
            assert daemon.sandbox("startSandbox", sid)[0] == 200
            daemon.wait_status("sp-end", ["RUNNING"])
        init = init_pid(daemon, sid)
        result = {}
        call = threading.Thread(target=lambda: result.update(
            answer=daemon.sandbox("exec", sid, {"command": "echo up; exec sleep 600"})))
        call.start()

        def sleeping():
            for d in os.listdir("/proc"):
                try:
                    with open(f"/proc/{d}/cmdline", "rb") as f:
                        if f.read() == b"sleep\x00600\x00" and os.readlink(
                                f"/proc/{d}/ns/pid") == os.readlink(f"/proc/{init}/ns/pid"):
                            return True
                except OSError:
                    pass
            return False
        wait_for(sleeping, 30, "the exec'd sleep")
        assert daemon.sandbox(how, sid)[0] == 200
        call.join(timeout=60)
        st, out = result["answer"]
        assert st == 200 and out["stdout"] == "up\n" and out["exitCode"] == code, (how, out)


class FakeSpawner:
    """Stands where a sandbox's spawn socket is, as a sandbox's root that
    took over its init could: answers each request with behave(conn, fds)."""

    def __init__(self, path, behave):
        self.path = path
        self.behave = behave
        os.rename(path, path + ".real")
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.lsock.bind(path)
        self.lsock.listen(4)
        self.conns = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            conn, _ = self.lsock.accept()
        except OSError:
            return
        self.conns.append(conn)
        _, anc, _, _ = conn.recvmsg(1 << 17, socket.CMSG_SPACE(3 * 4))
        fds = [fd for lvl, typ, data in anc if typ == socket.SCM_RIGHTS
               for fd in struct.unpack(f"{len(data) // 4}i", data)]
        self.behave(conn, fds)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.lsock.close()
        for c in self.conns:
            c.close()
        self.thread.join(timeout=10)
        os.unlink(self.path)
        os.rename(self.path + ".real", self.path)


def send(conn, type_, fd=None, pid=None):
    anc = []
    if fd is not None:
        anc.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd)))
    if pid is not None:
        anc.append((socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                    struct.pack("iII", pid, os.getuid(), os.getgid())))
    conn.sendmsg([MSG.pack(type_, 0, 0, b"")], anc)


PID, STARTED = 7, 4


def logged(d, text):
    with open(d.log_path) as f:
        return text in f.read()


def test_a_spawner_that_lies_cannot_hang_or_mislead_the_daemon(daemon):
    """What the daemon takes from a spawner is checked and bounded: what is
    sent as the process's pidfd must be one, and a spawner that never
    reports the end of a process that has ended holds the exec for 5 s at
    most (exit code 255, logged), not forever."""
    sid = box(daemon, "sp-liar")
    path = sock_path(daemon, sid)

    def not_a_pidfd(conn, fds):
        r, w = os.pipe()
        send(conn, PID, fd=r, pid=os.getpid())
        send(conn, STARTED)
        os.close(r)
        os.close(w)
    with FakeSpawner(path, not_a_pidfd):
        st, out = daemon.sandbox("exec", sid, {"command": "true"})
        assert st == 500 and set(out) == {"error", "message"}, (st, out)
    assert logged(daemon, "the sandbox's init answered out of turn")
    exec_ok(daemon, sid)

    def never_says(conn, fds):
        # A real process, given the exec's stdio; then silence.
        p = subprocess.Popen(["/bin/sh", "-c", "echo from-fake; exit 3"], stdin=fds[0],
                             stdout=fds[1], stderr=fds[2])
        for fd in fds:
            os.close(fd)
        send(conn, PID, fd=os.pidfd_open(p.pid), pid=p.pid)
        send(conn, STARTED)
        p.wait()
    with FakeSpawner(path, never_says):
        t0 = time.monotonic()
        st, out = daemon.sandbox("exec", sid, {"command": "true"})
        took = time.monotonic() - t0
        assert st == 200 and out == {"stdout": "from-fake\n", "stderr": "", "exitCode": 255}, out
        assert 4 < took < 25, took
        assert daemon.sandbox("getSandbox", sid)[0] == 200  # the daemon answers meanwhile
    assert logged(daemon, "its sandbox's init did not report how it ended")
    exec_ok(daemon, sid)


def test_a_data_directory_too_long_for_a_socket_address(tmp_path, image_dir):
    """A socket's address holds 107 bytes; a data directory may be longer.
    The spawn socket is in the run directory, whose names are short, and
    the spawner serves there as it does for any sandbox. A sandbox a build
    before started has its run.json and spawn socket in its own directory,
    at such a long path too: it still reads as running and its execs still
    go through its init (the socket reached through /proc/self/fd)."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    data = str(deep / "data")
    p = Pocketenv(data, image_dir)
    p.create("long")
    d = os.path.join(data, "sandboxes", "long")
    legacy = os.path.join(d, "spawn.sock")
    mounted = False
    try:
        p.start("long")
        sock, run = run_file(d, "sock"), run_file(d, "json")
        assert len(legacy) > 108 and len(sock) < 108 and os.path.exists(sock)
        r = p.exec("long", "/bin/sh", "-c", "exec grep PPid /proc/self/status")
        assert r.returncode == 0 and r.stdout.split() == ["PPid:", "1"], r
        pid = json.loads(p.run("runtime", "inspect", "long", check=True).stdout)["pid"]

        # As the build before left it: both files in the sandbox's directory
        # (a socket cannot be moved to another filesystem; bound over a file
        # there, it is the same socket of the same init).
        with open(legacy, "w"):
            pass
        subprocess.run(["mount", "--bind", sock, legacy], check=True)
        mounted = True
        os.rename(sock, sock + ".aside")
        with open(run) as f:
            text = f.read()
        with open(os.path.join(d, "run.json"), "w") as f:
            f.write(text)
        os.unlink(run)
        info = json.loads(p.run("runtime", "inspect", "long", check=True).stdout)
        assert (info["status"], info["pid"]) == ("running", pid), info
        r = p.exec("long", "/bin/sh", "-c", "exec grep PPid /proc/self/status")
        assert r.returncode == 0 and r.stdout.split() == ["PPid:", "1"], r
    finally:
        if mounted:
            subprocess.run(["umount", legacy], check=True)
            os.rename(sock + ".aside", sock)
        p.run("runtime", "rm", "long", check=True)
    assert not os.path.exists(sock) and not os.path.exists(run)
