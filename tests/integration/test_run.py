"""One-shot `pocketenv run`: what a user sees from the command they ran."""
import os
import pty
import select
import signal
import subprocess
import time

from conftest import BIN, run_on_pty, wait_for


def test_output_and_exit_code(pe):
    p = pe.sh("echo out; echo err >&2; exit 3")
    assert p.returncode == 3
    assert p.stdout == "out\n"
    assert p.stderr == "err\n"


def test_killed_by_signal_gives_128_plus_signal(pe):
    p = pe.sh("kill -9 $$")
    assert p.returncode == 137


def test_stdin_reaches_the_command(pe):
    p = pe.run("run", "--image", pe.image, "--", "cat", input="hello\nworld\n")
    assert p.returncode == 0
    assert p.stdout == "hello\nworld\n"


def test_environment_hostname_workdir(pe):
    p = pe.sh('echo "$FOO|$PATH|$HOME"; hostname; pwd', "-e", "FOO=bar baz",
              "--hostname", "box1", "-w", "/srv/app")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("bar baz|/usr/local/sbin:")
    assert lines[0].endswith("|/root")
    assert lines[1] == "box1"
    assert lines[2] == "/srv/app"


def test_default_hostname_and_pid_one_is_init(pe):
    p = pe.sh("hostname; echo $$; cat /proc/1/comm")
    assert p.stdout.split() == ["sandbox", "2", "pocketenv-init"]


def test_user_option(pe):
    p = pe.sh("id -u; id -g", "--user", "1000:1001")
    assert p.stdout.split() == ["1000", "1001"]


def _sleeps(arg):
    """Host pids of `sleep ARG` processes, wherever they run."""
    found = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:2] == [b"sleep", arg.encode()]:
                    found.append(int(d))
        except (OSError, ValueError):
            pass
    return found


def test_background_children_end_with_the_command(pe):
    """What the command left running in the background (a daemonized child,
    a forgotten job) ends with it: `run` returns with the command's status
    and nothing of the sandbox stays on the host. (pocketenv-init kills what
    is left only when something is: this is that case.)"""
    arg = str(700000 + os.getpid() % 100000)
    p = pe.sh(f"sleep {arg} & (setsid sleep {arg} &) ; echo started; exit 5", timeout=30)
    assert (p.returncode, p.stdout) == (5, "started\n"), p.stderr
    wait_for(lambda: not _sleeps(arg), timeout=10, what="background sleeps gone")


def test_missing_command_is_127(pe):
    p = pe.run("run", "--image", pe.image, "--", "/no/such/cmd")
    assert p.returncode == 127
    assert "/no/such/cmd" in p.stderr
    assert p.stderr.count("\n") == 1


def test_timeout_kills_and_exits_124(pe):
    t0 = time.monotonic()
    p = pe.sh("sleep 30", "--timeout", "0.5")
    assert p.returncode == 124
    assert "timed out" in p.stderr
    assert time.monotonic() - t0 < 10


def test_writes_do_not_reach_the_image(pe):
    p = pe.sh("echo changed > /etc/hostname && cat /etc/hostname && rm /bin/ls")
    assert p.returncode == 0 and p.stdout == "changed\n"
    assert os.path.exists(os.path.join(pe.image, "bin", "ls"))
    with open(os.path.join(pe.image, "etc", "hostname")) as f:
        assert "changed" not in f.read()


def test_volumes_rw_and_ro(pe, tmp_path):
    rw = tmp_path / "rw"
    ro = tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    rw.chmod(0o777)
    (ro / "f").write_text("readonly\n")
    p = pe.sh("echo written > /mnt/rw/new && cat /mnt/ro/f && ! touch /mnt/ro/x",
              "-v", f"{rw}:/mnt/rw", "-v", f"{ro}:/mnt/ro:ro")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "readonly\n"
    assert (rw / "new").read_text() == "written\n"
    assert not (ro / "x").exists()


def test_disk_limit_on_writable_layer(pe):
    p = pe.sh("dd if=/dev/zero of=/big bs=1M count=20 2>&1; echo rc=$?", "--disk", "4m")
    assert "rc=1" in p.stdout
    assert "No space left" in p.stdout
    # /dev/shm is bounded by the same size.
    p = pe.sh("dd if=/dev/zero of=/dev/shm/big bs=1M count=20 2>&1; echo rc=$?", "--disk", "4m")
    assert "rc=1" in p.stdout and "No space left" in p.stdout, p.stdout


def test_tty_mode(pe):
    """With -t the command gets a terminal of the sandbox's own devpts, and
    the caller's window size."""
    code, text = run_on_pty(pe.cmd("run", "-t", "--image", pe.image, "--", "/bin/sh", "-c",
                                   "tty; stty size; echo done"), rows=33, cols=101)
    assert code == 0, text
    assert "/dev/pts/0" in text
    assert "33 101" in text


def test_crashed_run_leaves_nothing(pe):
    """SIGKILL the CLI mid-run: the sandbox dies with it, and what is left on
    disk (state, cgroup) is collected by the next command (the fixture
    checks it after `runtime gc`)."""
    from conftest import sandbox_processes
    proc = subprocess.Popen(pe.cmd("run", "--image", pe.image, "--", "sleep", "100"))
    run_dir = os.path.join(pe.data, "run")
    wait_for(lambda: os.path.isdir(run_dir) and
             any(n.startswith("run-") for n in os.listdir(run_dir)), 10, "run to start")

    def children(pid):
        kids = set()
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{t}/children") as f:
                    kids |= {int(k) for k in f.read().split()}
        except OSError:
            pass
        return kids
    # The CLI's sandbox, not another one started on the host meanwhile:
    # sandbox processes among the CLI's children (its init) and theirs.
    def ours():
        found = set(sandbox_processes()) & children(proc.pid)
        for p in list(found):
            found |= children(p)
        return found
    mine = wait_for(ours, 10, "sandbox processes")
    proc.kill()
    proc.wait()
    wait_for(lambda: not set(sandbox_processes()) & mine, 10, "sandbox to die with its CLI")
    assert any(n.startswith("run-") for n in os.listdir(run_dir))
    pe.run("runtime", "gc", check=True)
    assert os.listdir(run_dir) == []


def test_help_is_printed_and_succeeds(pe):
    for args in (["run", "--help"], ["runtime", "--help"], ["image", "--help"],
                 ["serve", "--help"], ["token", "create", "--help"], ["help", "runtime"]):
        p = pe.run(*args)
        assert p.returncode == 0, (args, p.stderr)
        assert p.stdout.startswith("usage: pocketenv") and p.stderr == ""
        examples = p.stdout.partition("\nExample")[2]
        assert f"\n  pocketenv {args[0] if args[0] != 'help' else args[1]} " in examples, args
    p = pe.run("--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: pocketenv") and p.stderr == ""


def ignoring(*signals):
    def pre():
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
    return pre


def test_sandbox_processes_start_with_default_signals(pe):
    """Started from a shell's background job (SIGINT and SIGQUIT ignored)
    with signals blocked, pocketenv still gives the sandbox's processes
    every signal at its default: Ctrl-C must work in there."""
    p = subprocess.run([BIN, "--data", pe.data, "run", "--image", pe.image, "--", "/bin/sh",
                        "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status; kill -INT $$; "
                        "echo survived"],
                       capture_output=True, text=True, timeout=60,
                       preexec_fn=ignoring(signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE))
    assert "SigBlk:\t0000000000000000" in p.stdout, p.stdout
    assert "SigIgn:\t0000000000000000" in p.stdout, p.stdout
    assert "survived" not in p.stdout and p.returncode == 130  # SIGINT ended the shell
