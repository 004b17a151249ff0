"""`pocketenv console`: a terminal in a sandbox over the daemon's terminal
WebSocket, driven as a user would: from a real pseudo-terminal (raw mode,
window size) or with piped input."""
import os
import pty
import select
import struct
import subprocess
import termios
import time

import fcntl
import pytest

from conftest import BIN, wait_for
from test_cli import Cli
from test_daemon import daemon  # noqa: F401 (fixture)


@pytest.fixture
def logged_in(daemon, tmp_path):
    c = Cli(daemon.url, tmp_path / "home")
    os.makedirs(c.home)
    assert c("login", "--token", daemon.token).returncode == 0
    return c


@pytest.fixture
def box(daemon, logged_in):
    name = "consolebox"
    assert logged_in("create", name, "-b", "busybox").returncode == 0
    daemon.wait_status(name, ["RUNNING"])
    yield name
    daemon.sandbox("deleteSandbox", name)


def test_piped_input_and_exit_code(logged_in, box):
    p = logged_in("console", box, input="echo hi-from-console\nexit 3\n")
    assert p.returncode == 3, p.stderr
    assert "hi-from-console" in p.stdout


def foreground_sleep():
    """A `sleep 31` that is its terminal's foreground process group."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if f.read() != b"sleep\x0031\x00":
                    continue
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pgrp, tpgid = int(fields[2]), int(fields[5])
        if pgrp == tpgid:
            return True
    return False


class Terminal:
    """pocketenv console on a fresh pty of rows x cols."""

    def __init__(self, cli, args, rows=24, cols=80):
        self.master, slave = pty.openpty()
        self.resize(rows, cols, fd=slave)
        self.proc = subprocess.Popen([BIN] + args, stdin=slave, stdout=slave, stderr=slave,
                                     env=cli.env, start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.out = b""

    def resize(self, rows, cols, fd=None):
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ,
                    struct.pack("HHHH", rows, cols, 0, 0))

    def read_until(self, text, timeout=15):
        deadline = time.monotonic() + timeout
        while text.encode() not in self.out:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in {self.out[-500:]!r}")
            r, _, _ = select.select([self.master], [], [], 0.2)
            if r:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:
                    break
        return self.out

    def type(self, s):
        os.write(self.master, s.encode() if isinstance(s, str) else s)

    def finish(self, timeout=15):
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            r, _, _ = select.select([self.master], [], [], 0.2)
            if r:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:
                    pass
        rc = self.proc.wait(5)
        os.close(self.master)
        return rc


def test_raw_terminal_resize_and_detach(logged_in, box):
    t = Terminal(logged_in, ["console", box], rows=30, cols=100)
    t.read_until("#")  # the shell's prompt
    t.type("stty size\r")
    t.read_until("30 100")
    t.resize(40, 120)  # the kernel sends SIGWINCH to the console
    t.type("stty size\r")
    t.read_until("40 120")
    # Raw mode: Ctrl-C goes to the sandbox's shell, not to the console.
    t.type("echo zz$((1+1)); sleep 31\r")
    t.read_until("zz2\r\n")
    # Ctrl-C goes to the terminal's foreground job: wait until that is the
    # sleep, not the shell still setting the job up.
    wait_for(foreground_sleep, 10, "sleep 31 to be the terminal's foreground job")
    t.type(b"\x03")  # were it not delivered, the echo below would wait 31 s
    t.type("echo after-interrupt\r")
    t.read_until("after-interrupt\r\n")
    assert t.proc.poll() is None
    t.type("echo marker-$((6*7)) > /tmp/left\r")
    t.read_until("#")
    t.type(b"\x1d")  # Ctrl-]: detach
    assert t.finish() == 0
    assert b"detached" in t.out

    # Reattach: the same shell, with the screen replayed.
    t2 = Terminal(logged_in, ["console", box])
    t2.read_until("after-interrupt")
    t2.type("cat /tmp/left; exit 5\r")
    t2.read_until("marker-42")
    assert t2.finish() == 5


def test_console_errors(logged_in, daemon):
    p = logged_in("console", "nosuchbox")
    assert p.returncode == 1 and "sandbox nosuchbox not found" in p.stderr
    assert logged_in("create", "stoppedbox", "-b", "busybox").returncode == 0
    daemon.wait_status("stoppedbox", ["RUNNING"])
    assert logged_in("stop", "stoppedbox").returncode == 0
    p = logged_in("console", "stoppedbox")
    assert p.returncode == 1 and "not running" in p.stderr
    assert logged_in("rm", "stoppedbox").returncode == 0
    p = logged_in("console", "x", env={"POCKETENV_TOKEN": "forged"})
    assert p.returncode == 1 and "not logged in" in p.stderr


def test_create_with_ssh_opens_a_terminal_once_running(logged_in, daemon):
    p = logged_in("create", "sshbox", "-b", "busybox", "-s", input="echo via-ssh-$((1+1))\nexit\n")
    try:
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("Sandbox created successfully: sshbox\n")
        assert "via-ssh-2" in p.stdout
    finally:
        daemon.sandbox("deleteSandbox", "sshbox")
