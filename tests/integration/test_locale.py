"""UTF-8 inside sandboxes (issue 14): every process a sandbox runs gets
LANG=C.UTF-8 (and TERM on a PTY) unless the user set them, so `ls` shows a
UTF-8 name as it is and a console shows `café`, not `caf\\303\\251` or
`caf??`. Driven as a user: `run`, `runtime exec`, the daemon's `exec`
(streaming), `console`, and a service."""
import pty
import os
import subprocess
import time

import pytest

from conftest import BIN, wait_for
from test_cli import new_cli
from test_daemon import daemon  # noqa: F401 (fixture)

CAFE = "caf\u00e9"
LS = f"touch /tmp/{CAFE}; ls /tmp; printf '%s\\n' \"LANG=$LANG\""


def test_run_shows_utf8_names_and_the_user_wins(pe):
    p = pe.sh(LS)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [CAFE, "LANG=C.UTF-8"]
    p = pe.sh('printf "%s\\n" "$LANG"', "-e", "LANG=POSIX")
    assert p.stdout == "POSIX\n", p.stderr


def on_pty(argv, env=None, timeout=30):
    """argv's output, run on a new pseudo-terminal as from a user's shell."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every process on the terminal is gone
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=timeout)
    os.close(master)
    return out.decode().replace("\r", "").splitlines()


def test_run_on_a_terminal_has_term_and_lang(pe):
    lines = on_pty(pe.cmd("run", "-t", "--image", pe.image, "--", "/bin/sh", "-c",
                          LS + '; echo "TERM=$TERM"'))
    assert CAFE in lines and "LANG=C.UTF-8" in lines and "TERM=xterm-256color" in lines, lines


def test_persistent_exec_and_init(pe):
    pe.create("loc")
    pe.start("loc")
    try:
        p = pe.exec("loc", "/bin/sh", "-c", LS)
        assert p.stdout.splitlines() == [CAFE, "LANG=C.UTF-8"], p.stderr
        # init and what it runs have it too
        p = pe.exec("loc", "/bin/sh", "-c", "tr '\\0' '\\n' </proc/1/environ")
        assert "LANG=C.UTF-8" in p.stdout.splitlines(), p.stdout
    finally:
        pe.run("runtime", "rm", "-f", "loc")


@pytest.fixture
def box(daemon, tmp_path):
    cli = new_cli(daemon, tmp_path, login=True)
    assert cli("create", "locbox", "-b", "busybox").returncode == 0
    daemon.wait_status("locbox", ["RUNNING"])
    yield cli
    cli("rm", "-f", "locbox")


def test_daemon_exec_console_service_and_user_variables(daemon, box):
    p = box("exec", "locbox", LS)
    assert p.returncode == 0 and p.stdout.splitlines() == [CAFE, "LANG=C.UTF-8"], p.stderr
    # a PTY through the streaming exec
    lines = on_pty([BIN, "exec", "-t", "locbox", 'echo "$TERM $LANG"'], env=box.env)
    assert "xterm-256color C.UTF-8" in lines, lines
    # console: a shell on a PTY, as typed
    p = box("console", "locbox", input=f"printf '%s\\n' {CAFE} \"L=$LANG\"\nls /tmp\nexit\n")
    out = p.stdout.replace("\r", "")
    assert f"\n{CAFE}\n" in out and "L=C.UTF-8" in out, out
    assert "caf??" not in out and "\\303" not in out, out
    # a service
    sid = daemon.sandbox("getSandbox", "locbox")[1]["sandbox"]["id"]
    st, out = daemon.call("io.pocketenv.service.addService", {"sandboxId": sid},
                          body={"service": {"name": "loc", "command": LS + "; exec sleep 600"}})
    assert st == 200, out

    def logs():
        st, o = daemon.call("io.pocketenv.service.getServiceLogs",
                            {"serviceId": out["service"]["id"]})
        return st == 200 and o["logs"].splitlines() == [CAFE, "LANG=C.UTF-8"] and o["logs"]
    wait_for(logs, 20, "the service's output")
    # what the user sets wins: env put, then an exec's own env
    assert box("env", "put", "locbox", "LANG", "POSIX").returncode == 0
    p = box("exec", "locbox", 'echo "$LANG"')
    assert p.stdout == "POSIX\n", p.stderr
    # ... and a secret put after the create, both reaching a new console
    assert box("secret", "put", "locbox", "AGENT_KEY", input="sk-late\n").returncode == 0
    p = box("console", "locbox", input='echo "got $LANG $AGENT_KEY"\nexit\n')
    assert "got POSIX sk-late" in p.stdout.replace("\r", ""), p.stdout + p.stderr
    p = box("exec", "locbox", "env", "LANG=fr_FR.UTF-8", "sh", "-c", 'echo "$LANG"')
    assert p.stdout == "fr_FR.UTF-8\n", p.stderr
