"""`pocketenv console`: a terminal in a sandbox over the daemon's terminal
WebSocket, driven as a user would: from a real pseudo-terminal (raw mode,
window size) or with piped input."""
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time

import fcntl
import pytest

from conftest import BIN, wait_for
from test_cli import new_cli
from test_daemon import daemon  # noqa: F401 (fixture)
from test_daemon_restart import served  # noqa: F401 (fixture)


@pytest.fixture
def logged_in(daemon, tmp_path):
    return new_cli(daemon, tmp_path, login=True)


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

    def __init__(self, cli, args, rows=24, cols=80, stderr=None):
        """stderr: a file for the console's stderr (default: the pty)."""
        self.master, slave = pty.openpty()
        self.resize(rows, cols, fd=slave)
        # Modes no default has and raw mode clears (ECHONL) or leaves alone
        # (VERASE): restored then means "as it was", not "reset to defaults".
        modes = termios.tcgetattr(slave)
        modes[3] |= termios.ECHONL
        modes[6][termios.VERASE] = b"\x08"
        termios.tcsetattr(slave, termios.TCSANOW, modes)
        self.before = termios.tcgetattr(self.master)  # a master reads its slave's modes
        self.after = None
        err = open(stderr, "wb") if stderr else None
        self.proc = subprocess.Popen([BIN] + args, stdin=slave, stdout=slave,
                                     stderr=err or slave, env=cli.env, start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        if err:
            err.close()
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

    def modes(self):
        return termios.tcgetattr(self.master)

    def finish(self, timeout=15):
        """The console's exit code, once it has exited; self.after: the
        terminal's modes it left."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            r, _, _ = select.select([self.master], [], [], 0.2)
            if r:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:
                    pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            os.close(self.master)
            raise AssertionError(f"the console did not exit; it showed {self.out[-500:]!r}")
        # What it wrote just before exiting may still wait in the pty.
        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.out += chunk
        self.after = self.modes()
        os.close(self.master)
        return self.proc.returncode


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
    # The shell's output, not the terminal's echo of what was typed.
    t.type("echo after-$((2+3))-interrupt\r")
    t.read_until("after-5-interrupt\r\n")
    assert t.proc.poll() is None
    t.type("echo marker-$((6*7)) > /tmp/left; echo wrote-$((1+1))\r")
    t.read_until("wrote-2\r\n")
    t.type(b"\x1d")  # Ctrl-]: detach
    assert t.finish() == 0
    assert b"detached" in t.out

    # Reattach: the same shell, with the screen replayed.
    t2 = Terminal(logged_in, ["console", box])
    t2.read_until("after-5-interrupt")
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


# ---- the local terminal is restored on every way out ----


def is_raw(modes):
    """What raw mode is for: no line editing, echo, signal keys or CR/NL
    translation, on input or output."""
    iflag, oflag, _, lflag = modes[:4]
    return not (lflag & (termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)
                or iflag & (termios.ICRNL | termios.IXON) or oflag & termios.OPOST)


def attach(cli, box, tmp_path):
    """A console on box with its shell's prompt on the screen; stderr to a file."""
    t = Terminal(cli, ["console", box], stderr=tmp_path / "stderr")
    t.read_until("#")
    assert not is_raw(t.before)
    assert is_raw(t.modes()), t.modes()  # or "restored" below would prove nothing
    return t


def one_line(tmp_path):
    """The console's stderr, which must be one line. A console that leaves
    raw mode writes CR LF first: the cursor may be anywhere on the line."""
    text = (tmp_path / "stderr").read_text()
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_detach_restores_the_terminal(logged_in, box, tmp_path):
    t = attach(logged_in, box, tmp_path)
    t.type(b"\x1d")  # Ctrl-]
    assert t.finish() == 0
    assert t.after == t.before
    assert one_line(tmp_path).startswith("[detached: the shell keeps running")


def test_shell_exit_restores_the_terminal_and_is_the_exit_code(logged_in, box, tmp_path):
    t = attach(logged_in, box, tmp_path)
    t.type("exit 3\r")
    assert t.finish() == 3
    assert t.after == t.before
    assert (tmp_path / "stderr").read_text() == ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT],
                         ids=lambda s: s.name)
def test_signal_restores_the_terminal(logged_in, box, tmp_path, sig):
    """Raw mode sends Ctrl-C to the sandbox (test above), so a SIGINT comes
    from someone else, like SIGTERM and SIGHUP: the console ends by it, the
    shell it leaves keeps running."""
    t = attach(logged_in, box, tmp_path)
    t.type("echo left-$((2*3))\r")
    t.read_until("left-6")
    t.proc.send_signal(sig)
    assert t.finish() == -sig
    assert t.after == t.before
    assert one_line(tmp_path) == (f"pocketenv: ended by {sig.name}; the shell keeps running "
                                  "and `pocketenv console` reattaches")
    t2 = Terminal(logged_in, ["console", box])
    t2.read_until("left-6")
    t2.type("exit\r")
    assert t2.finish() == 0


def process_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_stopped_console_gives_the_terminal_back(logged_in, box, tmp_path):
    """Ctrl-Z goes to the sandbox as a byte; a SIGTSTP from outside stops
    the console with the terminal as it was, and SIGCONT takes it back raw."""
    t = attach(logged_in, box, tmp_path)
    t.proc.send_signal(signal.SIGTSTP)
    wait_for(lambda: process_state(t.proc.pid) == "T", 10, "the console to stop")
    assert t.modes() == t.before
    t.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: is_raw(t.modes()), 10, "raw mode again")
    t.type("echo back-$((4*5))\r")
    t.read_until("back-20")
    t.type(b"\x1d")
    assert t.finish() == 0
    assert t.after == t.before


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_daemon_going_away_restores_the_terminal(served, tmp_path, how):
    """Its own daemon, to stop (it tells its viewers) or kill (the
    connection just ends) while a console is open."""
    s = served()
    d = s.start()
    cli = new_cli(d, tmp_path, login=True)
    assert cli("create", "gonebox", "-b", "busybox").returncode == 0
    sid = d.wait_status("gonebox", ["RUNNING"])["id"]
    try:
        t = attach(cli, "gonebox", tmp_path)
        if how == signal.SIGKILL:
            s.kill9()
        else:
            s.stop()
        assert t.finish() == 1
        assert t.after == t.before
        line = one_line(tmp_path)
        if how == signal.SIGKILL:
            assert line == "pocketenv: terminal connection lost"
        else:  # the daemon's last word reaches the console before it closes
            assert line == "pocketenv: daemon shutting down", line
    finally:
        if d.proc.poll() is not None:  # a sandbox outlives its daemon (by design)
            subprocess.run([BIN, "--data", s.data, "runtime", "rm", sid], capture_output=True)
