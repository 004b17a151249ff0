"""Issue 14, Docker's habits: what Docker and Podman users type, where it
means the same here. `run IMAGE CMD...`, `run -it`, `--rm`, `--name`,
`run -d` (a sandbox the daemon keeps, then exec/logs/stop by its name),
`logs [-f]`, a service in a crash loop that says so in `service ls`, and
bad command lines that say what was wrong before the usage.
"""
import json
import re
import subprocess
import time

from conftest import BIN, run_on_pty, wait_for
from test_cli import new_cli
from test_daemon import daemon, free_port  # noqa: F401 (fixture)
from test_cli import Cli


# ---- one-shot run, without a daemon ----

def test_run_takes_the_image_as_its_first_word(pe):
    # by directory (the test image) and by name (busybox, built on first use)
    p = pe.run("run", pe.image, "echo", "hello")
    assert (p.returncode, p.stdout, p.stderr) == (0, "hello\n", ""), p
    p = pe.run("run", "busybox", "sh", "-c", "echo named; exit 3")
    assert (p.returncode, p.stdout) == (3, "named\n"), p.stderr
    p = pe.run("run", "--rm", pe.image, "--", "sh", "-c", "exit 4")  # -- after IMAGE
    assert p.returncode == 4, p.stderr
    # what worked before still does
    assert pe.run("run", "--image", pe.image, "--", "echo", "old").stdout == "old\n"
    assert pe.run("run", "--image", pe.image, "echo", "old too").stdout == "old too\n"
    # no CMD: the image's shell, reading what comes on stdin
    p = pe.run("run", pe.image, input="echo from the shell\n")
    assert (p.returncode, p.stdout) == (0, "from the shell\n"), p.stderr
    # --name names it (its hostname, as a persistent sandbox's)
    p = pe.run("run", "--rm", "--name", "box-1", pe.image, "hostname")
    assert p.stdout == "box-1\n", p.stderr
    # neither: said, with the usage
    p = pe.run("run")
    assert p.returncode == 125 and p.stderr.startswith("pocketenv: run: missing IMAGE or CMD")


def test_run_it_gives_a_terminal_and_stdin(pe):
    code, text = run_on_pty(pe.cmd("run", "-it", "--rm", pe.image, "sh", "-c",
                                   "[ -t 0 ] && [ -t 1 ] && echo on-a-tty; stty size"),
                            rows=31, cols=97)
    assert code == 0, text
    assert "on-a-tty" in text and "31 97" in text, text
    p = pe.run("run", "-i", pe.image, "cat", input="kept\n")
    assert p.stdout == "kept\n", p.stderr
    # grouped flags say which letter is wrong
    p = pe.run("run", "-ix", pe.image, "true")
    assert p.returncode == 125 and "unknown option -x in -ix" in p.stderr, p.stderr
    assert "--rm" in pe.run("run", "--help").stdout


# ---- run -d, logs: the daemon keeps the sandbox ----

def test_run_detached_then_exec_logs_stop_rm_by_name(daemon, tmp_path):
    cli = new_cli(daemon, tmp_path, login=True)
    p = cli("run", "-d", "--name", "bg-web", "-e", "GREETING=hi there", "busybox",
            "sh", "-c", 'echo "started $GREETING"; i=0; while true; do echo "tick $i"; '
                        'i=$((i+1)); sleep 0.2; done')
    assert (p.returncode, p.stdout) == (0, "bg-web\n"), p.stderr
    assert re.search(r"^bg-web\s+busybox\s.*Up ", cli("ps").stdout, re.M), cli("ps").stdout
    # exec and logs by name
    assert cli("exec", "bg-web", "echo", "inside").stdout == "inside\n"
    wait_for(lambda: "started hi there\n" in cli("logs", "bg-web").stdout, 20, "its output")
    # logs -f prints what comes, and ends when what it follows ends
    follow = subprocess.Popen([BIN, "logs", "-f", "bg-web"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=cli.env)
    seen = []
    deadline = time.monotonic() + 20
    while len([l for l in seen if l.startswith("tick")]) < 15 and time.monotonic() < deadline:
        seen.append(follow.stdout.readline())
    ticks = [int(l.split()[1]) for l in seen if l.startswith("tick")]
    assert len(ticks) >= 15 and ticks == list(range(ticks[0], ticks[0] + len(ticks))), seen
    assert seen[0] == "started hi there\n"  # from the start, then what comes
    assert cli("stop", "bg-web").returncode == 0
    assert follow.wait(timeout=20) == 0, follow.stderr.read()
    assert cli("rm", "bg-web").returncode == 0
    assert "bg-web" not in cli("ps", "-a").stdout


def test_run_detached_without_a_command_keeps_running(daemon, tmp_path):
    cli = new_cli(daemon, tmp_path, login=True)
    p = cli("run", "-dit", "busybox")
    assert p.returncode == 0, p.stderr
    name = p.stdout.strip()
    assert re.search(rf"^{re.escape(name)}\s.*Up ", cli("ps").stdout, re.M)
    assert cli("exec", name, "echo", "alive").stdout == "alive\n"
    p = cli("logs", name)
    assert p.returncode == 0 and "has no services" in p.stderr
    # options the daemon's sandbox cannot take are refused, naming each
    p = cli("run", "-d", "-v", "/tmp:/x", "busybox", "true")
    assert p.returncode == 125 and "--volume is not for a sandbox the daemon keeps" in p.stderr
    p = cli("run", "-d", "--rm", "busybox", "true")
    assert p.returncode == 125 and "--rm" in p.stderr
    assert cli("rm", name).returncode == 0


def test_run_detached_needs_the_daemon_and_says_so(tmp_path):
    nowhere = Cli(f"http://127.0.0.1:{free_port()}", tmp_path)
    p = nowhere("run", "-d", "busybox", "true", env={"POCKETENV_TOKEN": "x"})
    assert p.returncode == 1 and "cannot reach the Pocketenv daemon" in p.stderr, p.stderr


# ---- services in a crash loop ----

def test_a_crash_looping_service_says_so(daemon, tmp_path):
    cli = new_cli(daemon, tmp_path, login=True)
    assert cli("create", "crashy", "-b", "busybox").returncode == 0
    p = cli("service", "create", "crashy", "boom",
            "echo chatter; echo 'fatal: no config' >&2; exit 1")
    assert p.returncode == 0, p.stderr
    sid = p.stdout.strip().rsplit(" ", 1)[-1]

    def row():
        rows = [l for l in cli("service", "ls", "crashy").stdout.splitlines() if " boom " in l]
        return rows[0] if rows else ""
    looping = wait_for(lambda: "CRASHLOOP" in row() and row(), 30, "CRASHLOOP in service ls")
    assert re.search(r"CRASHLOOP \(exited 1, restarted [1-5] times?, last: fatal: no config\)$",
                     looping), looping
    js = [s for s in json.loads(cli("service", "ls", "crashy", "--json").stdout)
          if s["id"] == sid][0]
    assert js["status"] == "RUNNING"  # upstream's word, for upstream's clients
    assert (js["state"], js["exitCode"], js["lastError"]) == ("CRASHLOOP", 1,
                                                              "fatal: no config\n"), js
    # 0.5 + 1 + 2 + 4 + 8 s of backoff, then the policy gives up
    failed = wait_for(lambda: "FAILED" in row() and row(), 60, "FAILED")
    assert failed.endswith("FAILED (exited 1, restarted 5 times, last: fatal: no config)"), failed
    # logs by service id, and by sandbox (its only service: no prefix)
    assert cli("logs", sid).stdout.count("fatal: no config\n") == 6
    assert cli("logs", "crashy").stdout == cli("logs", sid).stdout
    # a healthy service next to it: lines say whose they are
    assert cli("service", "create", "crashy", "calm", "echo calm; exec sleep 1000").returncode == 0
    text = wait_for(lambda: (t := cli("logs", "crashy").stdout) and "calm | calm\n" in t and t,
                    20, "prefixed logs")
    assert "boom | fatal: no config\n" in text, text
    assert re.search(r" RUNNING$", [l for l in cli("service", "ls", "crashy").stdout.splitlines()
                                     if " calm " in l][0])
    assert cli("rm", "crashy").returncode == 0
    p = cli("logs", "crashy")
    assert (p.returncode, p.stdout, p.stderr) == (1, "", "pocketenv: no sandbox or service "
                                                         "crashy\n")


# ---- a bad command line says what was wrong ----

def test_bad_command_lines_name_what_was_wrong(tmp_path):
    offline = Cli(f"http://127.0.0.1:{free_port()}", tmp_path)
    cases = [
        (["stop"], "missing SANDBOX"),
        (["stop", "a", "b"], "unexpected argument 'b'"),
        (["inspect", "--bogus"], "unknown option --bogus"),
        (["rm", "-x", "a"], "unknown option -x"),
        (["ps", "-q"], "unknown option -q"),
        (["expose", "web"], "missing PORT"),
        (["env", "put", "web", "KEY"], "missing VALUE"),
        (["env", "frob"], "unknown env command 'frob'"),
        (["service", "logs"], "missing SERVICE_ID"),
        (["service", "create", "web", "svc"], "missing COMMAND"),
        (["sshkeys", "put", "web", "--nope"], "unknown option --nope"),
        (["logs"], "missing SANDBOX or SERVICE_ID"),
        (["logs", "-x", "web"], "unknown option -x"),
        (["exec", "--foo", "web", "true"], "unknown option --foo"),
        (["login", "--token"], "--token needs a value"),
        (["start", "web", "-b", "busybox"], "start takes no --base"),
        (["backup", "create", "web"], "missing DIRECTORY"),
        (["backup", "frob"], "unknown backup command 'frob'"),
        (["backup", "restore", "a", "b"], "unexpected argument 'b'"),
        (["cp", "web:/a"], "a destination is needed"),
    ]
    for args, why in cases:
        p = offline(*args)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        first, _, rest = p.stderr.partition("\n")
        assert first.startswith(f"pocketenv: {why}"), (args, p.stderr)
        assert rest.startswith("usage: pocketenv "), (args, p.stderr)
    p = offline()
    assert p.returncode == 2 and p.stderr.startswith("pocketenv: missing COMMAND\nusage:")
    p = offline("runtime")
    assert p.returncode == 2 and p.stderr.startswith("pocketenv runtime: missing COMMAND")
    p = offline("image", "build")
    assert p.returncode == 125 and "image build: missing BUILDER" in p.stderr
    p = offline("token", "frob")
    assert p.returncode == 125 and p.stderr.startswith(
        "pocketenv: token: unknown command 'frob' (create or revoke)\nusage: pocketenv token")
    # logs is a command like the others: help with examples
    p = offline("logs", "--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: pocketenv logs [-f]")
    assert "\n  pocketenv logs -f web\n" in p.stdout
