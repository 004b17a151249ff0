"""`pocketenv exec` as people drive it from scripts and agents (issue 14):
stdin passed on, output as it comes and in any amount, any bytes, `--`,
argv kept as given, signals reaching the remote command, -t for a
terminal, the exit code mirrored. A real daemon; the CLI as a subprocess."""
import os
import pty
import select
import signal
import subprocess
import time

import pytest

from conftest import BIN, wait_for
from test_cli import new_cli
from test_daemon import daemon  # noqa: F401 (fixture)


@pytest.fixture
def box(daemon, tmp_path):
    cli = new_cli(daemon, tmp_path, login=True)
    assert cli("create", "execbox", "-b", "busybox").returncode == 0
    daemon.wait_status("execbox", ["RUNNING"])
    yield cli
    cli("rm", "execbox")


def run_bytes(cli, *args, input=None):
    return subprocess.run([BIN, *args], capture_output=True, timeout=120, input=input,
                          env=cli.env)


def test_stdin_and_any_bytes_and_no_cap(box):
    p = box("exec", "execbox", "wc -c", input="hi\n")
    assert (p.returncode, p.stdout.strip()) == (0, "3"), p.stderr
    every = bytes(range(256)) * 64
    p = run_bytes(box, "exec", "execbox", "cat", input=every)
    assert p.returncode == 0 and p.stdout == every, p.stderr
    # 5 MiB out: the one-shot JSON exec cut it at 1 MiB with exit 0.
    p = run_bytes(box, "exec", "execbox", "head -c 5242880 /dev/zero")
    assert p.returncode == 0 and p.stdout == b"\0" * (5 << 20), p.stderr[:200]
    # 4 MiB in, more than the daemon's window: sent as it grants room.
    big = os.urandom(4 << 20)
    p = run_bytes(box, "exec", "execbox", "md5sum", input=big)
    import hashlib
    assert p.stdout.split()[0].decode() == hashlib.md5(big).hexdigest()


def test_output_comes_as_it_is_made(box):
    proc = subprocess.Popen([BIN, "exec", "execbox", "echo first; sleep 30; echo never"],
                            stdout=subprocess.PIPE, env=box.env)
    try:
        r, _, _ = select.select([proc.stdout], [], [], 20)
        assert r and proc.stdout.readline() == b"first\n"
        assert proc.poll() is None  # still running: the line came before the end
    finally:
        proc.kill()
        proc.wait()


def test_ctrl_c_reaches_the_remote_command(box):
    proc = subprocess.Popen([BIN, "exec", "execbox",
                             "trap 'echo stopped-by-int; exit 9' INT; echo ready; "
                             "while :; do sleep 0.1; done"],
                            stdout=subprocess.PIPE, env=box.env)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 9 and b"stopped-by-int" in out


def test_a_terminal_with_t(box):
    master, slave = pty.openpty()
    proc = subprocess.Popen([BIN, "exec", "-t", "execbox", "tty >/dev/null && echo on-a-tty"],
                            stdin=slave, stdout=slave, stderr=slave, env=box.env,
                            start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 20
    while b"on-a-tty" not in out and time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 1)
        if r:
            try:
                out += os.read(master, 4096)
            except OSError:
                break
    assert proc.wait(timeout=20) == 0 and b"on-a-tty" in out, out
    os.close(master)


def test_usage_errors_name_what_is_wrong(box):
    p = box("exec")
    assert p.returncode == 2 and "which sandbox" in p.stderr
    p = box("exec", "execbox")
    assert p.returncode == 2 and "what command" in p.stderr
    p = box("exec", "-x", "execbox", "true")
    assert p.returncode == 2 and "-i and -t" in p.stderr
    p = box("exec", "nosuchbox", "true")
    assert p.returncode == 1 and "nosuchbox not found" in p.stderr
