"""README.md's examples, run as pasted.

Every shell block of README.md is an example: a block indented by four
spaces after a blank line, or a fenced one (```sh, ```shell, ```bash or
bare ```). They run in the README's order, each as one `sh -e` script, as
a reader pastes them into a shell of a machine that scripts/setup has set
up, in one shared state: the install the README does, its daemon, the
sandboxes the blocks make.

A block that cannot run here goes in SKIP below, under its first line, with
the reason, which pytest prints. A block that starts a server that stays
(the daemon) goes in BACKGROUND, with the URL that answers once it is up.
Adding an example to the README needs nothing here when it runs; a SKIP
entry whose block is gone fails the test, so the list stays true.

What is not the reader's machine, and why (the blocks themselves are run
byte for byte):
- cwd is a fresh folder whose `build` is this suite's build directory;
  `meson install` gets DESTDIR (the host's /usr/local is not the test's),
  and PATH starts with DESTDIR/usr/local/bin, as /usr/local/bin would;
- HOME and POCKETENV_DATA (which the README documents) are fresh folders,
  so the daemon's token and data are the test's own;
- all of it runs in a network namespace of its own, with a mount namespace
  where /run/pocketenv is empty: the README's port 8789 is free there
  whatever else runs on the host (another daemon, the README's own
  `demo`), and the runtime's host-wide network leases there are the
  test's only (a lease's veth is only visible in its own namespace).
"""
import json
import os
import re
import signal
import subprocess

import pytest

from conftest import BUILD, ROOT, sandbox_processes, wait_for

README = os.path.join(ROOT, "README.md")

# The quick start's one command begins with scripts/setup, which installs
# Debian's and npm's packages (apt-get) and builds: this machine was set up
# by it and the build is this suite's. The rest of that line runs as pasted.
SETUP = "scripts/setup && "

# First line of a block -> why it cannot run here.
SKIP = {
    "tests/run":
        "the whole test suite, which runs this test",
    "pocketenv serve [--listen 127.0.0.1:8789] [--data DIR] [--store URL]":
        "a synopsis: brackets and placeholders",
    "pocketenv login HANDLE | login --token T | logout | whoami":
        "a synopsis: placeholders and alternatives",
    "pocketenv run -t --memory 512m --cpus 1.5 --pids 256 -v $PWD:/work -w /work -- bash":
        "interactive (a terminal, bash waiting for input), the debian image (the internet), "
        "and ./script.sh is the reader's",
    "pocketenv runtime create box --image debian --memory 1g --disk 10g":
        "the debian image is built from Debian's archive (the internet); then apt-get",
    "pocketenv image build debian     # Debian 12 with bash, coreutils, curl, git, ...":
        "the debian image is built from Debian's archive (the internet); rootfs.tar.zst "
        "is the reader's",
    "pocketenv runtime create web --publish 8080        # host port chosen at start":
        "the default image, debian, is built from Debian's archive (the internet)",
    "include/pocketenv/   public headers          lib/core/     errors, fs, log":
        "a table of the source tree, not commands",
}

# First line of a block that starts a server -> the path it answers once up.
BACKGROUND = {
    "meson install -C build && pocketenv serve": "http://127.0.0.1:8789/healthz",
}


def readme_blocks(text):
    """[(line number, code)] of the shell blocks of a Markdown text."""
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence:
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if fence.group(1) in ("", "sh", "shell", "bash"):
                blocks.append((i + 2, "\n".join(lines[i + 1:j])))
            i = j + 1
            continue
        if lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or
                                      (not lines[j].strip() and j + 1 < len(lines) and
                                       lines[j + 1].startswith("    "))):
                j += 1
            blocks.append((i + 1, "\n".join(l[4:] for l in lines[i:j])))
            i = j
            continue
        i += 1
    return blocks


def first_line(code):
    return code.strip().split("\n")[0].strip()


def without_setup(code):
    """The block, less the quick start's leading scripts/setup (SETUP)."""
    return code[len(SETUP):] if code.startswith(SETUP) else code


class Namespaces:
    """A holder process in a fresh network and mount namespace (loopback
    up, /run/pocketenv empty), and commands run inside them."""

    def __init__(self):
        os.makedirs("/run/pocketenv", exist_ok=True)
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
             "mount -t tmpfs -o mode=0755 pocketenv-readme /run/pocketenv && "
             "ip link set lo up && echo up && exec sleep infinity"],
            stdout=subprocess.PIPE, text=True)
        assert self.holder.stdout.readline().strip() == "up", "namespaces not made"

    def argv(self, cwd, *cmd):
        return ["nsenter", "--target", str(self.holder.pid), "--net", "--mount", f"--wd={cwd}",
                "--", *cmd]

    def close(self):
        self.holder.kill()
        self.holder.wait()


def sanitized(build):
    opts = json.loads(subprocess.run(["meson", "introspect", "--buildoptions", build],
                                     capture_output=True, text=True, check=True).stdout)
    return any(o["name"] == "b_sanitize" and o["value"] != "none" for o in opts)


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    if sanitized(BUILD):
        pytest.skip("`meson install -C build` builds every target first, and the static "
                    "in-sandbox helpers cannot be built with the sanitizers (tests/run-sanitized)")
    tmp = tmp_path_factory.mktemp("readme")
    cwd, home, data, dest = (tmp / "cwd", tmp / "home", tmp / "data", tmp / "root")
    for d in (cwd, home):
        d.mkdir()
    os.symlink(BUILD, cwd / "build")
    env = {
        "PATH": f"{dest}/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home), "POCKETENV_DATA": str(data), "DESTDIR": str(dest),
        "LANG": "C.UTF-8", "TERM": "dumb",
    }
    # Under tests/run-sanitized, the sanitizers' settings go through.
    env.update({k: v for k, v in os.environ.items() if k in ("ASAN_OPTIONS", "UBSAN_OPTIONS")})
    ns = Namespaces()
    state = {"cwd": str(cwd), "env": env, "ns": ns, "servers": [], "data": str(data)}
    yield state
    for p in state["servers"]:  # each in a session of its own: sh and what it started
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    # What the blocks left running, removed with the runtime's own commands.
    def pe(*args):
        return subprocess.run(ns.argv(str(cwd), os.path.join(BUILD, "pocketenv"), *args), env=env,
                              capture_output=True, text=True, timeout=60)
    if os.path.isdir(os.path.join(str(data), "sandboxes")):
        for sb in json.loads(pe("runtime", "ls", "--json").stdout or "[]"):
            pe("runtime", "rm", sb["name"])
        wait_for(lambda: not pe("runtime", "gc").returncode and not sandbox_processes(str(data)),
                 10, "the README's sandboxes to go")
    ns.close()


BLOCKS = readme_blocks(open(README).read())


def test_skip_list_names_blocks_of_the_readme():
    firsts = {first_line(without_setup(code)) for _, code in BLOCKS}
    stale = [k for k in list(SKIP) + list(BACKGROUND) if k not in firsts]
    assert stale == [], f"README.md has no block starting with {stale}: update SKIP/BACKGROUND"


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_block_runs_as_pasted(reader, line, code):
    code = without_setup(code)
    key = first_line(code)
    if key in SKIP:
        pytest.skip(f"README.md:{line}: {SKIP[key]}")
    ns, env, cwd = reader["ns"], reader["env"], reader["cwd"]
    if key in BACKGROUND:
        log = open(os.path.join(cwd, f"server-{line}.log"), "w")
        p = subprocess.Popen(ns.argv(cwd, "sh", "-ec", code), env=env, cwd=cwd,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        reader["servers"].append(p)

        def up():
            assert p.poll() is None, f"README.md:{line} exited: " + \
                open(log.name).read()[-2000:]
            return subprocess.run(ns.argv(cwd, "curl", "-sf", "-o", "/dev/null", BACKGROUND[key]),
                                  env=env, cwd=cwd).returncode == 0
        wait_for(up, 30, f"README.md:{line} to answer {BACKGROUND[key]}")
        return
    p = subprocess.run(ns.argv(cwd, "sh", "-ec", code), env=env, cwd=cwd, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, f"README.md:{line} failed ({p.returncode}):\n{code}\n" \
                              f"stdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}"
    # A command that fails inside a block shows as an error answer too,
    # even where the block's last command succeeds (curl prints it).
    assert '"error"' not in p.stdout, f"README.md:{line}:\n{p.stdout[-3000:]}"
