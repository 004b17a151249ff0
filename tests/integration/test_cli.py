"""The API commands of the CLI against a real daemon: login, logout, whoami,
create, start, stop, rm, ls, ps, exec. The CLI gets the daemon's URL from
POCKETENV_API_URL and keeps its token in $HOME/.pocketenv/token.json, as
upstream's does; each test has its own HOME.
"""
import json
import os
import re
import stat
import subprocess

import pytest

from conftest import BIN, wait_for
from test_daemon import daemon, free_port  # noqa: F401 (fixture)


class Cli:
    def __init__(self, url, home):
        self.env = dict(os.environ, POCKETENV_API_URL=url, HOME=str(home), NO_COLOR="1")
        self.env.pop("POCKETENV_TOKEN", None)
        self.home = home

    def __call__(self, *args, input=None, env=None):
        return subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=120,
                              input=input, env=dict(self.env, **(env or {})))


def new_cli(daemon, tmp_path, login=False):
    """A Cli for daemon with its own HOME; logged in as the owner if login."""
    c = Cli(daemon.url, tmp_path / "home")
    os.makedirs(c.home)
    if login:
        assert c("login", "--token", daemon.token).returncode == 0
    return c


@pytest.fixture
def cli(daemon, tmp_path):
    return new_cli(daemon, tmp_path)


def test_login_whoami_logout(cli, daemon):
    p = cli("whoami")
    assert p.returncode == 1 and "not logged in" in p.stderr
    p = cli("login", "--token", "not-a-token")
    assert p.returncode == 1 and "token refused" in p.stderr, p.stderr
    assert not (cli.home / ".pocketenv" / "token.json").exists()
    p = cli("login", "--token", daemon.token)
    assert p.returncode == 0, p.stderr
    assert "You are logged in as @owner.local (owner.local)." in p.stdout
    path = cli.home / ".pocketenv" / "token.json"
    assert json.loads(path.read_text()) == {"token": daemon.token}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cli("whoami").stdout == "You are logged in as @owner.local (owner.local).\n"
    # POCKETENV_TOKEN wins over the file, as upstream's CLI
    other = daemon.token_for("did:key:zCliOther")
    assert "@handle.invalid" in cli("whoami", env={"POCKETENV_TOKEN": other}).stdout
    assert cli("logout").returncode == 0 and not path.exists()
    assert cli("whoami").returncode == 1
    p = cli("login", "not_a_handle")
    assert p.returncode == 2 and "--token" in p.stderr


def test_sandbox_commands(cli, daemon):
    assert cli("login", "--token", daemon.token).returncode == 0
    p = cli("create", "clibox", "-b", "busybox")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "Sandbox created successfully: clibox\n"
    daemon.wait_status("clibox", ["RUNNING"])
    ls = cli("ls")
    assert ls.returncode == 0
    assert ls.stdout.splitlines()[0].split() == ["NAME", "BASE", "PROVIDER", "BACKEND", "STATUS",
                                                 "CREATED", "AT"]
    row = [l for l in ls.stdout.splitlines() if l.startswith("clibox ")]
    assert row and row[0].split()[1:5] == ["busybox", "cloudflare", "local", "RUNNING"], ls.stdout
    assert re.search(r"\d+ seconds? ago$", row[0])
    ps = cli("ps")
    assert re.search(r"^clibox\s+busybox\s+cloudflare\s+local\s+Up \d+ (second|minute)s?$",
                     ps.stdout, re.M), \
        ps.stdout

    # exec: output kept apart, exit code mirrored; one word is a shell line,
    # several are the program and its arguments, quoting kept (issue 14)
    p = cli("exec", "clibox", "echo out; echo err >&2; exit 7")
    assert (p.returncode, p.stdout, p.stderr) == (7, "out\n", "err\n")
    p = cli("exec", "clibox", "sh", "-c", "exit 7")
    assert p.returncode == 7, p.stderr
    p = cli("exec", "clibox", "--", "printf", "%s|", "a b", "c;d", "$HOME")
    assert (p.returncode, p.stdout) == (0, "a b|c;d|$HOME|"), p
    p = cli("exec", "clibox", "printf", "%s", "no newline")
    assert (p.returncode, p.stdout) == (0, "no newline")
    p = cli("exec", "nosuch", "true")
    assert p.returncode == 1 and "sandbox nosuch not found" in p.stderr

    p = cli("stop", "clibox")
    assert (p.returncode, p.stdout) == (0, "Sandbox clibox stopped\n")
    assert "clibox" not in cli("ps").stdout
    p = cli("exec", "clibox", "true")
    assert p.returncode == 1 and "not running" in p.stderr
    p = cli("start", "clibox")
    assert p.returncode == 0 and p.stdout.startswith("Sandbox clibox started\n")
    assert cli("exec", "clibox", "echo", "back").stdout == "back\n"
    p = cli("rm", "clibox")
    assert (p.returncode, p.stdout) == (0, "Sandbox clibox deleted successfully\n")
    p = cli("delete", "clibox")
    assert p.returncode == 1 and "sandbox clibox not found" in p.stderr


def test_errors_are_clear(cli, daemon):
    nowhere = f"http://127.0.0.1:{free_port()}"
    p = cli("ls", env={"POCKETENV_API_URL": nowhere, "POCKETENV_TOKEN": daemon.token})
    assert p.returncode == 1 and "cannot reach the Pocketenv daemon at " + nowhere in p.stderr
    for args in [("console", "clibox"), ("cp", "clibox:/etc/hostname", "/tmp/x")]:
        p = cli(*args, env={"POCKETENV_API_URL": nowhere, "POCKETENV_TOKEN": daemon.token})
        assert p.returncode == 1, args
        assert p.stderr.startswith("pocketenv: cannot reach the Pocketenv daemon at " + nowhere)
    assert cli("login", "--token", daemon.token).returncode == 0
    p = cli("create", "Bad Name!", "-b", "busybox")
    assert p.returncode == 1 and "name must be" in p.stderr
    p = cli("create", "-r", "--upload-pack=x", "-b", "busybox")
    assert p.returncode == 1 and "repo" in p.stderr
    before = cli("ls").stdout
    # A base the daemon does not have is refused at once, saying what it has.
    p = cli("create", "nobase", "-b", "nosuchimage")
    assert p.returncode == 1, p.stderr
    assert p.stderr.startswith("pocketenv: unknown base nosuchimage; bases available here: "
                               "busybox, debian"), p.stderr
    p = cli("create", "remote", "-p", "nosuchprovider", "-b", "busybox")
    assert p.returncode == 1 and "provider must be one of (daytona|" in p.stderr, p.stderr
    assert cli("ls").stdout == before  # nothing was made
    assert cli("stop").returncode == 2
    assert cli("exec", "onlyname").returncode == 2
    assert cli("create", "--help").returncode == 0


def test_resource_commands(cli, daemon, tmp_path):
    assert cli("login", "--token", daemon.token).returncode == 0
    assert cli("create", "resbox", "-b", "busybox").returncode == 0
    daemon.wait_status("resbox", ["RUNNING"])

    p = cli("env", "put", "resbox", "GREETING", "hello world")
    assert (p.returncode, p.stdout) == (0, "Variable updated successfully\n"), p.stderr
    assert cli("env", "put", "resbox", "GREETING", "hello again").returncode == 0  # replaces
    rows = [l.split() for l in cli("env", "ls", "resbox").stdout.splitlines()[1:]]
    assert len(rows) == 1 and rows[0][1:4] == ["GREETING", "hello", "again"], rows
    var_id = rows[0][0]

    # The secret comes on stdin, never in argv; it is sealed before it leaves.
    p = cli("secret", "put", "resbox", "TOKEN", input="s3cr3t-value\n")
    assert p.returncode == 0, p.stderr
    listing = cli("secret", "list", "resbox").stdout
    assert "TOKEN" in listing and "s3cr3t" not in listing

    local = tmp_path / "motd"
    local.write_text("from a local file\n")
    assert cli("file", "put", "resbox", "/etc/motd", str(local)).returncode == 0
    assert cli("file", "put", "resbox", "/tmp/piped", input="piped content\n").returncode == 0
    assert "/etc/motd" in cli("file", "ls", "resbox").stdout

    out = cli("exec", "resbox", 'echo "$GREETING/$TOKEN"; cat /etc/motd /tmp/piped')
    assert out.stdout == "hello again/s3cr3t-value\nfrom a local file\npiped content", out

    assert cli("env", "delete", var_id).stdout == f"Variable {var_id} deleted\n"
    assert cli("env", "ls", "resbox").stdout.count("\n") == 1
    p = cli("env", "rm", var_id)
    assert p.returncode == 1 and "not found" in p.stderr

    p = cli("volume", "put", "resbox", "cache", "/cache")
    assert p.returncode == 0 and "Volume cache mounted in resbox at /cache" in p.stdout, p.stderr
    vol = [l.split() for l in cli("volume", "ls", "resbox").stdout.splitlines()[1:]]
    assert vol and vol[0][1:3] == ["cache", "/cache"]
    p = cli("env", "put", "nosuchbox", "A", "b")
    assert p.returncode == 1 and "sandbox nosuchbox not found" in p.stderr
    assert cli("secret", "put", "resbox").returncode == 2
    p = cli("file", "put", "resbox", "etc/motd", input="x")
    assert (p.returncode, p.stderr) == (1, "pocketenv: path must be an absolute path other than / "
                                           "(at most 1024 characters)\n")
    assert cli("rm", "resbox").returncode == 0
    assert cli("volume", "rm", vol[0][0]).returncode == 0


def test_create_waits_until_it_runs_or_says_why_not(daemon, tmp_path):
    """Issue 14: create and start wait until RUNNING or FAILED; FAILED is
    said with its reason and exit 1, never "created successfully"; a
    create's sizes are the flags'."""
    from test_daemon import broken_image
    cli = new_cli(daemon, tmp_path, login=True)
    p = cli("create", "waitbox", "-b", "busybox", "--vcpus", "1", "--memory", "1")
    assert p.returncode == 0 and "created successfully" in p.stdout, p.stderr
    st, sb = daemon.sandbox("getSandbox", "waitbox")
    assert sb["sandbox"]["status"] == "RUNNING"  # already, when create returned
    assert (sb["sandbox"]["vcpus"], sb["sandbox"]["memory"]) == (1, 1)
    p = cli("create", "failbox", "-b", broken_image(daemon.data))
    assert p.returncode == 1 and "created successfully" not in p.stdout, p.stdout
    assert p.stderr.startswith("pocketenv: sandbox failbox is FAILED: "), p.stderr
    p = cli("create", "nowait", "-b", "busybox", "--no-wait", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["name"] == "nowait"
    p = cli("create", "bad", "--vcpus", "0")
    assert p.returncode == 2 and "--vcpus" in p.stderr
    assert cli("stop", "waitbox").returncode == 0
    p = cli("start", "waitbox")
    assert p.returncode == 0, p.stderr
    assert daemon.sandbox("getSandbox", "waitbox")[1]["sandbox"]["status"] == "RUNNING"
    for n in ("waitbox", "failbox", "nowait"):
        cli("rm", n)


def test_docker_habits_rm_several_ps_all_and_failed_reasons(daemon, tmp_path):
    """Issue 14: `rm -f` with several names (one missing: said, the rest
    deleted, exit 1), `ps -a` lists stopped ones too, and a FAILED sandbox
    shows its reason in ls."""
    from test_daemon import broken_image
    cli = new_cli(daemon, tmp_path, login=True)
    for n in ("habit-a", "habit-b"):
        assert cli("create", n, "-b", "busybox").returncode == 0
    assert cli("stop", "habit-b").returncode == 0
    assert "habit-b" not in cli("ps").stdout
    assert re.search(r"^habit-b\s.*STOPPED", cli("ps", "-a").stdout, re.M)
    assert cli("create", "habit-f", "-b", broken_image(daemon.data)).returncode == 1
    row = [l for l in cli("ls").stdout.splitlines() if l.startswith("habit-f ")]
    reason = daemon.sandbox("getSandbox", "habit-f")[1]["sandbox"]["statusReason"]
    assert row and "FAILED" in row[0] and row[0].rstrip().endswith(reason), (row, reason)
    p = cli("rm", "-f", "habit-a", "habit-missing", "habit-b", "habit-f")
    assert p.returncode == 1 and "habit-missing not found" in p.stderr, p.stderr
    assert p.stdout.count("deleted successfully") == 3
    names = cli("ls").stdout
    assert not any(n in names for n in ("habit-a", "habit-b", "habit-f"))
    assert cli("rm").returncode == 2


def test_token_create_without_did_is_the_owners(daemon, tmp_path):
    """After `logout`, the owner is not stranded: `token create` with no
    --did makes a token for the daemon's owner."""
    cli = new_cli(daemon, tmp_path)
    p = subprocess.run([BIN, "--data", daemon.data, "token", "create"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert cli("login", "--token", p.stdout.strip()).returncode == 0
    assert "@owner.local" in cli("whoami").stdout
    p = subprocess.run([BIN, "--data", daemon.data, "token", "revoke"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0 and "revoke --did DID" in p.stderr  # revoke still names whom
