"""Integration-test harness: drives the built `pocketenv` binary.

Every test gets its own data directory (so its sandboxes, state and id
ranges are its own) and uses a tiny busybox image built once per session
with our own `pocketenv image build busybox`, plus our static test helpers
copied into it. After every test the harness removes what the test left
and then checks that nothing of its own leaked, whatever else runs on the
host: no sandbox processes, no cgroups, no mounts that mention the data
directory, no one-shot state, and no network leftovers: no lease of the data directory, no pe-* veth and no
element of our nft table that no lease accounts for.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PE_BUILD", os.path.join(ROOT, "build"))
BIN = os.path.join(BUILD, "pocketenv")
HELPERS = ["pe-try-syscall", "pe-escape-probe"]
CGROUP_ROOT = "/sys/fs/cgroup"
ID_FIRST = 0x10000000
NET_STATE = "/run/pocketenv/net"
RUN_DIR = "/run/pocketenv/sandboxes"


LEXICONS = [os.path.join(ROOT, "..", "shared", "lexicons"), os.path.join(ROOT, "lexicons")]
LEXICON_CHECK = os.path.join(ROOT, "tests", "helpers", "lexicon-check.mjs")


class LexiconCheck:
    """Every XRPC answer the suite receives, checked by @atproto/lexicon
    (upstream's own validator, npm) in one node process for the session:
    a shape error fails the test that got it, wherever it appears. Off
    only when upstream's lexicons are not next to the checkout."""

    proc = None
    lock = threading.Lock()  # tests call from several threads: one line pair at a time
    unchecked = set()  # answers upstream's lexicons cannot describe (dangling refs)

    @classmethod
    def check(cls, nsid, value):
        if not os.path.isdir(LEXICONS[0]):
            return
        with cls.lock:
            got = cls._ask(nsid, value)
            if got.get("unchecked"):
                cls.unchecked.add(f"{nsid}: {got['unchecked']}")
        assert got["ok"], f"{nsid} answered what its lexicon does not allow: " \
                          f"{got['error']}: {json.dumps(value)[:2000]}"

    @classmethod
    def check_record(cls, nsid, record):
        """A record written to a repository, against its record lexicon."""
        if not os.path.isdir(LEXICONS[0]):  # as check(): a clone without ../shared
            cls.unchecked.add(f"{nsid}: record (../shared/lexicons not present)")
            return
        with cls.lock:
            got = cls._ask(nsid, record, key="record")
        assert got["ok"], f"{nsid} record not allowed by its lexicon: {got.get('error')}: " \
                          f"{json.dumps(record)[:2000]}"

    @classmethod
    def _ask(cls, nsid, value, key="output"):
        if cls.proc is None or cls.proc.poll() is not None:
            cls.proc = subprocess.Popen(["node", LEXICON_CHECK, *LEXICONS], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        cls.proc.stdin.write(json.dumps({"nsid": nsid, key: value}) + "\n")
        cls.proc.stdin.flush()
        line = cls.proc.stdout.readline()
        assert line, "the lexicon checker (node tests/helpers/lexicon-check.mjs) died"
        return json.loads(line)


def check_xrpc_answer(nsid, status, value):
    """What a successful XRPC call answered, against its lexicon."""
    if status == 200 and value is not None:
        LexiconCheck.check(nsid, value)


def wait_for(cond, timeout=10.0, what="condition"):
    """Poll cond() until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class Pocketenv:
    """Runs the CLI against one data directory."""

    def __init__(self, data, image):
        self.data = data
        self.image = image

    def cmd(self, *args):
        return [BIN, "--data", self.data, *args]

    def run(self, *args, timeout=60, input=None, check=False, env=None):
        e = dict(os.environ)
        if env:
            e.update(env)
        p = subprocess.run(self.cmd(*args), capture_output=True, text=True,
                           timeout=timeout, input=input, env=e)
        if check and p.returncode != 0:
            raise AssertionError(f"{args} failed ({p.returncode}): {p.stderr}")
        return p

    def sh(self, script, *opts, **kw):
        """One-shot: run a shell script in a fresh sandbox of the test image."""
        return self.run("run", "--image", self.image, *opts, "--", "/bin/sh", "-c", script, **kw)

    def create(self, name, *opts):
        return self.run("runtime", "create", name, "--image", self.image, *opts, check=True)

    def start(self, name):
        return self.run("runtime", "start", name, check=True)

    def exec(self, name, *cmd, opts=(), **kw):
        return self.run("runtime", "exec", name, *opts, "--", *cmd, **kw)

    def inspect(self, name):
        p = self.run("runtime", "inspect", name, "--json", check=True)
        return json.loads(p.stdout)

    def ls(self):
        return json.loads(self.run("runtime", "ls", "--json", check=True).stdout)


def run_file(sandbox_dir, ext):
    """Where the runtime keeps what lasts only this boot of the sandbox in
    sandbox_dir: its run.json ("json") or its spawn socket ("sock"), named
    by the directory's device and inode (lib/runtime/state.c)."""
    st = os.stat(sandbox_dir)
    return os.path.join(RUN_DIR, f"{st.st_dev:x}-{st.st_ino}.{ext}")


def run_files(data):
    """The files the run directory holds now for data directory data's
    sandboxes (their run.json, spawn socket, resolv.conf, hosts)."""
    sbdir = os.path.join(data, "sandboxes")
    prefixes = set()
    for name in os.listdir(sbdir) if os.path.isdir(sbdir) else []:
        try:
            st = os.stat(os.path.join(sbdir, name))
        except OSError:
            continue
        prefixes.add(f"{st.st_dev:x}-{st.st_ino}")
    try:
        names = os.listdir(RUN_DIR)
    except OSError:
        return []
    return [os.path.join(RUN_DIR, n) for n in names if n.split(".", 1)[0] in prefixes]


def our_cgroups():
    """Cgroups the runtime made (skipping the cgroup unit tests' own)."""
    found = []
    for ctrl in os.listdir(CGROUP_ROOT):
        parent = os.path.join(CGROUP_ROOT, ctrl, "pocketenv")
        if not os.path.isdir(parent):
            continue
        for name in os.listdir(parent):
            if name.startswith("pocketenv-") and not name.startswith("pocketenv-test"):
                found.append(os.path.join(parent, name))
    return found


def cgroup_procs(path):
    """Pids in cgroup directory path; None once it is gone."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(l) for l in f if l.strip()]
    except FileNotFoundError:
        return None


def cgroups_left(data, before, timeout=10.0):
    """Cgroups made since before (a set of our_cgroups()) that data
    directory's sandboxes left behind: ones holding its processes, and empty
    ones that stay. Other sandboxes of the host (other daemons and data
    directories, other test runs) make and remove theirs meanwhile: those
    hold their own processes, or are empty only for the moments between
    being made and filled, emptied and removed."""
    def suspects():
        mine = set(sandbox_processes(data))
        out = set()
        for c in set(our_cgroups()) - before:
            procs = cgroup_procs(c)
            if procs is not None and (not procs or mine & set(procs)):
                out.add(c)
        return out
    found = suspects()
    deadline = time.monotonic() + timeout
    while found and time.monotonic() < deadline:
        time.sleep(0.05)
        found &= suspects()
    return found


IDMAP_DIR = os.environ.get("POCKETENV_IDMAP_DIR", "/var/lib/pocketenv/idmap")
ID_RANGE = 65536


def id_range_owner(uid):
    """The data directory whose claim holds uid's id range, or None."""
    try:
        with open(os.path.join(IDMAP_DIR, str((uid - ID_FIRST) // ID_RANGE))) as f:
            return f.readline().rstrip("\n")
    except OSError:
        return None


def sandbox_keys(data):
    """The cgroup keys (pocketenv-<key>) of data directory data's sandboxes
    now: persistent ones' ids, one-shot runs' state names."""
    keys = set()
    run = os.path.join(data, "run")
    if os.path.isdir(run):
        keys.update(os.listdir(run))
    sbdir = os.path.join(data, "sandboxes")
    for name in os.listdir(sbdir) if os.path.isdir(sbdir) else []:
        try:
            with open(os.path.join(sbdir, name, "state.json")) as f:
                keys.add(json.load(f)["id"])
        except (OSError, ValueError, KeyError):
            pass
    return keys


KEYS_SEEN = {}  # data directory -> every key sandbox_processes saw it hold


def cgroup_key(pid):
    """The key of the sandbox cgroup pid is in, or None."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                m = re.search(r"/pocketenv/pocketenv-([^/\s]+)$", line.strip())
                if m:
                    return m.group(1)
    except OSError:
        pass
    return None


def sandbox_processes(data=None):
    """Host pids that belong to a sandbox: ids in our range, or our init.
    With data, only data directory data's: those whose id range it holds,
    and those no claim names (a sandbox sharing the host's user ids, or a
    range claimed in another POCKETENV_IDMAP_DIR) in a cgroup of one of its
    sandboxes (or in none). A test checks its own leftovers, whatever else
    runs on the host."""
    mine = os.path.realpath(data) if data else None
    if mine:
        keys = KEYS_SEEN.setdefault(mine, set())
        keys |= sandbox_keys(mine)
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{d}")
            exe = ""
            try:
                exe = os.readlink(f"/proc/{d}/exe")
            except OSError:
                pass
            if st.st_uid < ID_FIRST and "pocketenv-init" not in exe:
                continue
            if not mine:
                pids.append(int(d))
                continue
            owner = id_range_owner(st.st_uid) if st.st_uid >= ID_FIRST else None
            if owner == mine:
                pids.append(int(d))
            elif owner is None and cgroup_key(d) in keys | {None}:
                pids.append(int(d))
        except FileNotFoundError:
            pass
    return pids


def idmap_claims(data):
    """Host-wide user id range claims held for data directory data."""
    real = os.path.realpath(data)
    out = []
    if os.path.isdir(IDMAP_DIR):
        for name in os.listdir(IDMAP_DIR):
            try:
                with open(os.path.join(IDMAP_DIR, name)) as f:
                    if f.readline().rstrip("\n") == real:
                        out.append(name)
            except FileNotFoundError:
                pass
    return out


LAYERS_DIR = os.environ.get("POCKETENV_LAYERS_DIR", "/var/lib/pocketenv/layers")


def layers_of(data, layers_dir=LAYERS_DIR):
    """Writable layers (disk-limited sandboxes) that data directory data
    holds on the host-wide layers filesystem."""
    real = os.path.realpath(data)
    out = []
    if os.path.isdir(layers_dir):
        for name in os.listdir(layers_dir):
            try:
                with open(os.path.join(layers_dir, name, "owner")) as f:
                    if f.readline().rstrip("\n") == real:
                        out.append(name)
            except (FileNotFoundError, NotADirectoryError):
                pass
    return out


def net_leases(data=None):
    """Network leases (all data directories, or one)."""
    out = []
    try:
        names = os.listdir(NET_STATE)
    except FileNotFoundError:
        return out
    for n in names:
        if not n.startswith("ip-"):
            continue
        try:
            with open(os.path.join(NET_STATE, n)) as f:
                o = json.load(f)
        except (FileNotFoundError, ValueError):
            continue
        if data is None or o.get("data") == data:
            out.append(o)
    return out


def port_claims():
    try:
        return [n for n in os.listdir(NET_STATE) if n.startswith("port-")]
    except FileNotFoundError:
        return []


def our_veths():
    """Host-side veths the runtime makes: pe-<12 hex>."""
    names = os.listdir("/sys/class/net")
    return [n for n in names if re.fullmatch(r"pe-[0-9a-f]{12}", n)]


def nft_elements():
    """(set name, element text) of our table, [] if it does not exist."""
    p = subprocess.run(["nft", "-j", "list", "table", "inet", "pocketenv"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return []
    out = []
    for item in json.loads(p.stdout)["nftables"]:
        for kind in ("set", "map"):
            if kind in item:
                for e in item[kind].get("elem", []):
                    out.append((item[kind]["name"], json.dumps(e)))
    return out


def unaccounted_network():
    """Veths, nft elements and port claims that no live lease explains."""
    leases = [o["lease"] for o in net_leases()]
    veths = {l["veth"] for l in leases}
    addrs = {l["address"] for l in leases}
    ports = {f"port-{p['host']}" for l in leases for p in l["ports"]}
    bad = [v for v in our_veths() if v not in veths]
    bad += [e for e in nft_elements() if not any(f'"{a}"' in e[1] for a in addrs)]
    bad += [c for c in port_claims() if c not in ports]
    return bad


def mounts_mentioning(path):
    with open("/proc/self/mountinfo") as f:
        return [l for l in f if path in l]


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    assert os.path.exists(BIN), f"build first: {BIN} missing"
    data = str(tmp_path_factory.mktemp("imgdata"))
    subprocess.run([BIN, "--data", data, "image", "build", "busybox"], check=True,
                   capture_output=True, text=True)
    root = os.path.join(data, "images", "busybox", "rootfs")
    for h in HELPERS:
        dst = os.path.join(root, "usr", "bin", h)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(os.path.join(BUILD, "tests", h), dst)
    os.makedirs(os.path.join(root, "home", "user"), exist_ok=True)
    os.chown(os.path.join(root, "home", "user"), 1000, 1000)
    return root


@pytest.fixture(scope="session")
def template_images(tmp_path_factory):
    """The template images every test file's daemons share
    ($PE_TEMPLATE_CACHE, else one directory per run): each template is
    built at most once per run, by the first test that asks for it."""
    path = os.environ.get("PE_TEMPLATE_CACHE") or str(tmp_path_factory.mktemp("template-images"))
    os.makedirs(path, exist_ok=True)
    return path


# What test_images.py checks in Debian's image, as a user's first run of it.
DEBIAN_CHECK = ("cat /etc/debian_version; git --version; ls -ln /etc/passwd; "
                "echo x > /etc/new && chown root:root /etc/new && id -un")


@pytest.fixture(scope="session")
def debian_first_use(template_images, tmp_path_factory):
    """Debian's image in the run's shared images, built the way a user
    first meets it: by the first `pocketenv run` that needs it. Every
    template builds on it, so a run builds Debian once instead of once
    for test_images.py and again for the templates. The run's outcome is
    returned for test_images.py to check; None when $PE_TEMPLATE_CACHE
    already held the image (nothing was built on first use)."""
    if os.path.exists(os.path.join(template_images, "debian", "image.json")):
        return None
    data = str(tmp_path_factory.mktemp("debian-first-use"))
    return subprocess.run([BIN, "--data", data, "run", "--", "bash", "-c", DEBIAN_CHECK],
                          env=dict(os.environ, POCKETENV_IMAGES=template_images),
                          capture_output=True, text=True, timeout=900)


@pytest.fixture
def pe(tmp_path, image_dir):
    data = str(tmp_path / "data")
    p = Pocketenv(data, image_dir)
    # What exists before the test is not the test's (e.g. a benchmark run).
    before_procs = set(sandbox_processes(data))
    before_cgroups = set(our_cgroups())
    yield p
    sandbox_processes(data)  # remembers its sandboxes' keys before they go
    boot_files = run_files(data)
    # Remove what the test left, then check that nothing leaked.
    if os.path.isdir(os.path.join(data, "sandboxes")):
        for sb in p.ls():
            p.run("runtime", "rm", sb["name"])
    wait_for(lambda: not set(sandbox_processes(data)) - before_procs, 10,
             "sandbox processes to exit")
    p.run("runtime", "gc")
    # A stopped sandbox's veth goes when the kernel finishes destroying its
    # network namespace, asynchronously: gc again until everything is gone.
    def net_clean():
        p.run("runtime", "gc")
        return not net_leases(data) and not unaccounted_network()
    wait_for(net_clean, 10, "network leases, veths and nft elements to go")
    assert cgroups_left(data, before_cgroups) == set()
    assert mounts_mentioning(data) == []
    run_dir = os.path.join(data, "run")
    assert not os.path.isdir(run_dir) or os.listdir(run_dir) == []
    assert idmap_claims(data) == []
    assert layers_of(data) == []
    assert [f for f in boot_files if os.path.exists(f)] == []


def run_on_pty(cmd, rows=24, cols=80, timeout=20):
    """Run cmd with a fresh pseudo-terminal of rows x cols as its stdio, as
    a user at a terminal would; returns (exit code, everything it printed)."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(10)
    os.close(master)
    return proc.returncode, out.decode(errors="replace")


def kill_tree(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def pytest_terminal_summary(terminalreporter):
    """Say which answers the lexicon check could not judge, and why."""
    for line in sorted(LexiconCheck.unchecked):
        terminalreporter.write_line(f"lexicon check: not checkable: {line}")
