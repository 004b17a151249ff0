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
    assert p.returncode == 2 and p.stderr.startswith("pocketenv: missing SANDBOX\n")
    p = box("exec", "execbox")
    assert p.returncode == 2 and p.stderr.startswith("pocketenv: missing COMMAND\n")
    p = box("exec", "-x", "execbox", "true")
    assert p.returncode == 2 and "-i and -t" in p.stderr
    p = box("exec", "nosuchbox", "true")
    assert p.returncode == 1 and "nosuchbox not found" in p.stderr


def test_a_stopping_daemon_ends_running_execs_at_once(tmp_path):
    """SIGTERM to the daemon while a one-shot exec (upstream's JSON API) and
    a streaming exec (the CLI) run: both commands get SIGTERM, each client
    learns why, and the daemon exits 0 within seconds; it waited for the
    exec's 300 s timeout before, answering 503 meanwhile."""
    import json
    import threading
    import urllib.request
    from test_daemon import serving
    # the test stops the daemon itself; its sandbox, kept across daemon
    # restarts, is removed below through the runtime
    with serving(tmp_path, check_leaks=False) as d:
        cli = new_cli(d, tmp_path, login=True)
        assert cli("create", "stopbox", "-b", "busybox").returncode == 0
        d.wait_status("stopbox", ["RUNNING"])
        answer = {}

        def one_shot():
            req = urllib.request.Request(
                f"{d.url}/xrpc/io.pocketenv.sandbox.exec?id=stopbox", method="POST",
                data=json.dumps({"command": "echo began; trap 'echo got-term; exit 3' TERM; "
                                            "while :; do sleep 0.2; done"}).encode(),
                headers={"Authorization": f"Bearer {d.token}",
                         "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                answer["status"], answer["body"] = r.status, json.load(r)
        t = threading.Thread(target=one_shot)
        t.start()
        stream = subprocess.Popen([BIN, "exec", "stopbox", "echo ready; exec sleep 300"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli.env)
        assert stream.stdout.readline() == b"ready\n"
        wait_for(lambda: "began" in cli("exec", "stopbox", "ps").stdout or
                 "while" in cli("exec", "stopbox", "ps").stdout, 20, "the one-shot exec to run")
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=20) == 0, d.log_text()[-3000:]
        assert time.monotonic() - started < 8
        t.join(timeout=20)
        assert answer.get("status") == 200, answer
        assert answer["body"]["exitCode"] == 3 and "got-term" in answer["body"]["stdout"], answer
        assert "shutting down" in answer["body"]["stderr"], answer
        _, err = stream.communicate(timeout=20)
        assert stream.returncode != 0 and b"shutting down" in err, err
    data = str(tmp_path / "data")
    ls = subprocess.run([BIN, "--data", data, "runtime", "ls", "--json"],
                        capture_output=True, text=True, check=True)
    for sb in json.loads(ls.stdout):
        subprocess.run([BIN, "--data", data, "runtime", "rm", sb["name"]], check=True)
