"""One conformance suite for the provider adapters (lib/provider/), each
run over its provider's double (tests/doubles), through the built
`provider-drive` (tests/helpers/provider-drive.c): one step per run, the
endpoint and key in its environment.

Checks (the columns of the matrix printed at the end, kept in
docs/providers.md): lifecycle, exec (stdout, stderr, exit code),
streaming exec, PTY, files, tar, ports/preview, declared capabilities
(what an adapter does not declare answers "not supported by P: CAP" and
sends nothing), error mapping (401, 5xx, garbage, timeout, a credential
never in an error), and no leaked sandbox after a failed create.

The remote adapters need no daemon and no sandbox on this host: loopback
only. The `local` provider (provider-local.c) runs the same checks for
real, on this host's runtime: real sandboxes of the test image in the
test's own data directory (the `pe` fixture checks that nothing of them
is left), with the checks that need a double (faults injected, what
reached the provider) replaced by what the same promise means locally.
"""
import functools
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tests.doubles import start  # noqa: E402

BUILD = os.environ.get("PE_BUILD", os.path.join(ROOT, "build"))
DRIVE = os.path.join(BUILD, "tests", "provider-drive")

ADAPTERS = ["blaxel", "cloudflare", "daytona", "deno", "e2b", "hopx", "kubernetes", "modal", "runloop", "sprites",
            "vercel"]
CHECKS = ["lifecycle", "exec", "stream", "stream-faults", "pty", "files", "tar", "preview", "capabilities",
          "snapshot", "env", "errors", "no-leak"]
PROVIDERS = ["local"] + ADAPTERS
# Where files live: the bridge serves /workspace only, the others anything.
WORKDIR = "/workspace"
# The port each provider routes to a preview URL.
PREVIEW_PORT = {"blaxel": 3000, "cloudflare": 3000, "daytona": 3000, "deno": 3000, "e2b": 3000, "hopx": 3000, "kubernetes": 3000, "modal": 3000, "runloop": 3000, "sprites": 8080, "vercel": 3000}
# The route a create waits on (the double's route name): failing it after
# the sandbox exists is what must not leak one.
READY_ROUTE = {"blaxel": "get", "kubernetes": "get", "modal": "task", "cloudflare": "get", "daytona": "get", "deno": "stop", "e2b": "get", "hopx": "get", "runloop": "get", "sprites": "get",
               "vercel": "get"}
# The route a status call uses (an idempotent call: retried on a 503).
STATUS_ROUTE = {"deno": "list", "modal": "wait"}
# The route that deletes (Vercel v1 has none: stop is the end).
DELETE_ROUTE = {"vercel": "stop", "runloop": "shutdown"}
# Providers that keep a removed sandbox listed (Runloop: status shutdown).
KEPT_AFTER_REMOVE = {"runloop"}
# Providers whose stop ends a sandbox for good (no start after it).
STOP_ENDS = {"vercel", "deno", "modal"}  # Modal: stop is its terminate
NO_RESIZE = {"modal"}  # Modal's command router has no resize call
# What each provider's account needs besides the key (Vercel: team, project,
# and the ports to route, which it takes at create only).
EXTRA_ENV = {"vercel": {"PE_PROVIDER_ORG": "team_conformance", "PE_PROVIDER_PROJECT": "prj_conformance",
                        "PE_PROVIDER_PORTS": "3000"},
             "blaxel": {"PE_PROVIDER_ORG": "ws-double"},  # Blaxel's workspace
             "modal": {"PE_PROVIDER_PORTS": "3000"},  # tunnels are opened at create only
             "kubernetes": {"PE_DRIVE_SHELL": "sh"}}  # the double's Pods are busybox
# Where each API lives under the double's URL (the public base URLs end so too).
URL_SUFFIX = {"daytona": "/api", "blaxel": "/v0"}
# The operator's preview template (previewUrl in --provider-config) of the
# providers whose preview hosts are a pattern: here the doubles' stand-in.
PREVIEW_TEMPLATE = {"hopx": "/__preview__/{id}/{port}/", "runloop": "/__preview__/{key}/{port}/"}

RESULTS = {}


def record(provider, check, value):
    RESULTS[(provider, check)] = value


@pytest.fixture(scope="module", autouse=True)
def matrix(request):
    yield
    tr = request.config.pluginmanager.getplugin("terminalreporter")
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if tr is None or not RESULTS:
        return
    with capman.global_and_fixture_disabled():
        print_matrix(tr)


def print_matrix(tr):
    tr.write_line("")
    tr.write_line("provider conformance (local for real, the others over their doubles):")
    tr.write_line("| provider | " + " | ".join(CHECKS) + " |")
    tr.write_line("|---|" + "---|" * len(CHECKS))
    for p in PROVIDERS:
        cells = [RESULTS.get((p, c), "not run") for c in CHECKS]
        tr.write_line(f"| {p} | " + " | ".join(cells) + " |")


class Drive:
    """provider-drive against one double."""

    def __init__(self, provider, d, key=None, timeout_ms=3000):
        self.provider = provider
        self.d = d
        url = d.url + URL_SUFFIX.get(provider, "")
        self.env = dict(os.environ, PE_PROVIDER_URL=url, PE_PROVIDER_KEY=key or d.key,
                        PE_PROVIDER_TIMEOUT_MS=str(timeout_ms), PE_PROVIDER_CREATE_TIMEOUT_MS="10000",
                        **EXTRA_ENV.get(provider, {}))
        if provider in PREVIEW_TEMPLATE:
            self.env["PE_PROVIDER_PREVIEW_URL"] = d.url + PREVIEW_TEMPLATE[provider]

    def run(self, *args, ok=True, timeout=60):
        r = subprocess.run([DRIVE, self.provider, *args], capture_output=True, text=True,
                           env=self.env, timeout=timeout)
        assert r.returncode in (0, 1), f"provider-drive {args}: status {r.returncode}: {r.stderr}"
        lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        assert lines, f"provider-drive {args}: no output; stderr: {r.stderr}"
        out = lines[-1] if len(lines) == 1 else lines
        if ok:
            assert r.returncode == 0 and "error" not in lines[-1], f"{args}: {lines[-1]}"
        else:
            assert r.returncode == 1 and "error" in lines[-1], f"{args} should fail: {lines[-1]}"
        return out

    def create(self, name="t1", *env):
        return self.run("create", name, *env)["id"]

    def caps(self):
        return set(self.run("caps")["caps"])


@pytest.fixture(params=ADAPTERS)
def adapter(request):
    if not os.access(DRIVE, os.X_OK):
        pytest.fail(f"{DRIVE} is not built (ninja -C build)")
    with start(request.param) as d:
        yield Drive(request.param, d)


def checked(check):
    """Record the check's outcome for the matrix."""
    def wrap(fn):
        @functools.wraps(fn)
        def test(adapter, *a, **kw):
            try:
                note = fn(adapter, *a, **kw)
            except BaseException:
                record(adapter.provider, check, "FAIL")
                raise
            record(adapter.provider, check, note or "ok")
        return test
    return wrap


def alive(d):
    """Sandboxes the double still runs (Vercel v1 keeps stopped ones listed)."""
    return {k for k, sb in d.sandboxes.items()
            if not getattr(sb, "destroyed", False) and getattr(sb, "status", None) not in ("stopping", "stopped")}


@checked("lifecycle")
def test_lifecycle(adapter):
    """create (returns once it runs), status, stop, start, remove: the
    double keeps nothing afterwards."""
    d = adapter.d
    sid = adapter.create("life")
    assert sid in d.sandboxes
    assert adapter.run("status", sid)["state"] == "running"
    if adapter.provider in STOP_ENDS:  # stop is the end: there is no start after it
        adapter.run("stop", sid)
        err = adapter.run("start", sid, ok=False)
        assert err == {"error": "ENOTCAP", "message": f"not supported by {adapter.provider}: start"}
        assert adapter.run("status", sid)["state"] == "stopped"
        adapter.run("remove", sid)
        assert alive(d) == set()
        return "ok (stop = end)"
    adapter.run("stop", sid)
    adapter.run("start", sid)
    assert adapter.run("status", sid)["state"] == "running"
    adapter.run("remove", sid)
    assert sid not in (alive(d) if adapter.provider in KEPT_AFTER_REMOVE else d.sandboxes)
    if adapter.provider != "cloudflare":  # the bridge's ids name a fresh container forever
        err = adapter.run("status", sid, ok=False)
        assert err["error"] == "ENOENT" and adapter.provider in err["message"]


@checked("exec")
def test_exec(adapter):
    """One-shot exec: stdout and stderr apart, the exit code, argv words
    with spaces kept whole."""
    sid = adapter.create()
    r = adapter.run("exec", sid, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r["exit_code"], r["stdout"], r["stderr"]) == (3, "out\n", "err\n")
    r = adapter.run("exec", sid, "echo", "a  b", "c")
    assert (r["exit_code"], r["stdout"]) == (0, "a  b c\n")
    r = adapter.run("exec", sid, "no-such-command")
    assert r["exit_code"] == 127
    # a timeout ends the command long before it would end by itself
    timed = Drive(adapter.provider, adapter.d)
    timed.env["PE_DRIVE_EXEC_TIMEOUT"] = "1"
    t = time.monotonic()
    r = timed.run("exec", sid, "sh", "-c", "echo started; sleep 60; echo never")
    assert r["timed_out"] and r["stdout"] == "started\n" and r["exit_code"] in (137, 143), r
    assert time.monotonic() - t < 40
    adapter.run("remove", sid)


@checked("stream")
def test_stream(adapter):
    """Streaming exec: the first line reaches the caller while the command
    is still running remotely (the double's record has no exit code yet)."""
    d = adapter.d
    sid = adapter.create()
    p = subprocess.Popen([DRIVE, adapter.provider, "stream", sid, "sh", "-c", "echo a; sleep 5; echo b >&2"],
                         stdout=subprocess.PIPE, text=True, env=adapter.env)
    rest = None
    try:
        first = json.loads(p.stdout.readline())
        assert first.get("fd") == 1 and first.get("data") == "a\n", first
        assert d.sandboxes[sid].execs[-1]["exit_code"] is None, "output came only after the end"
        rest = [json.loads(line) for line in p.stdout]
    finally:
        p.stdout.close()
        if rest is None:  # failed half-way: do not leave it writing to a closed pipe
            p.kill()
        p.wait(30)
    assert p.returncode == 0
    assert [(x["fd"], x["data"]) for x in rest if "fd" in x] == [(2, "b\n")]
    assert rest[-1] == {"exit_code": 0}
    adapter.run("remove", sid)


# The double's route that carries an exec's output stream.
STREAM_ROUTE = {"blaxel": "exec.stream", "kubernetes": "exec", "cloudflare": "exec", "daytona": "exec.logs", "deno": "connect", "e2b": "exec", "hopx": "exec",
                "runloop": "exec.stdout", "modal": "exec.stdio",
                "sprites": "exec",
                "vercel": "exec.logs"}


@checked("stream-faults")
def test_stream_faults(adapter):
    """Output in many small pieces comes out whole; a stream cut before
    the exit code is an error naming the provider, never exit code 0."""
    d, p = adapter.d, adapter.provider
    sid = adapter.create()
    d.fault(STREAM_ROUTE[p], chunk_delay=0.01, times=1)
    r = adapter.run("exec", sid, "sh", "-c", "echo hello streaming world; echo to stderr >&2; exit 7")
    assert (r["exit_code"], r["stdout"], r["stderr"]) == (7, "hello streaming world\n", "to stderr\n")
    # it did come in pieces (Modal reads stdout and stderr as two streams: either may be last)
    assert max(len(r.get("sent", [])) for r in d.seen(STREAM_ROUTE[p])[-2:]) > 5
    d.fault(STREAM_ROUTE[p], drop_after=1, times=1)
    err = adapter.run("exec", sid, "sh", "-c", "echo one; echo two; exit 0", ok=False)
    assert err["error"] == "EREMOTE" and err["message"].startswith(p), err
    r = adapter.run("exec", sid, "echo", "again")  # a later call works
    assert (r["exit_code"], r["stdout"]) == (0, "again\n")
    adapter.run("remove", sid)


@checked("pty")
def test_pty(adapter):
    """A terminal: a resize reaches the provider, typed lines run, the
    shell's exit code comes back."""
    sid = adapter.create()
    if "pty" not in adapter.caps():
        err = adapter.run("pty", sid, "exit 0\n", ok=False)
        assert err == {"error": "ENOTCAP", "message": f"not supported by {adapter.provider}: pty"}
        return "not supported"
    r = adapter.run("pty", sid, "echo hi\nexit 4\n")
    assert "hi\r\n" in r["output"] and r["exit_code"] == 4
    pty = adapter.d.sandboxes[sid].pty[-1]
    # Hopx's terminal and Kubernetes' exec take the first size as a resize: 80x24 (the size asked) comes first
    first = [(80, 24)] if adapter.provider in ("hopx", "kubernetes") else []
    assert bytes(pty["input"]) == b"echo hi\nexit 4\n"
    if adapter.provider in NO_RESIZE:  # the size asked at start stays
        assert (pty["cols"], pty["rows"], pty["resizes"]) == (80, 24, [])
        adapter.run("remove", sid)
        return "ok (no resize)"
    assert pty["resizes"] == first + [(100, 30)]
    adapter.run("remove", sid)


@checked("files")
def test_files(adapter):
    """Write, read, list, remove a file; a missing file is ENOENT."""
    sid = adapter.create()
    path = f"{WORKDIR}/dir/a.txt"
    adapter.run("write", sid, path, "hello\nworld")
    assert adapter.run("read", sid, path)["data"] == "hello\nworld"
    note = None
    if "file-list" in adapter.caps():
        entries = adapter.run("list", sid, f"{WORKDIR}/dir")["entries"]
        assert [(e["name"], e["dir"]) for e in entries] == [("a.txt", False)]
        if adapter.provider != "deno":  # Deno's readDir has no sizes
            assert entries[0]["size"] == 11
    else:
        err = adapter.run("list", sid, WORKDIR, ok=False)
        assert err["error"] == "ENOTCAP"
        note = "ok (no list)"
    adapter.run("rm", sid, path)
    err = adapter.run("read", sid, path, ok=False)
    assert err["error"] == "ENOENT" and adapter.provider in err["message"]
    adapter.run("remove", sid)
    return note


@checked("tar")
def test_tar(adapter, tmp_path):
    """A tar unpacked into the sandbox's files and packed back out."""
    sid = adapter.create()
    src = tmp_path / "in.tar"
    with tarfile.open(src, "w") as t:
        info = tarfile.TarInfo("x/y.txt")
        info.size = 3
        t.addfile(info, io.BytesIO(b"tar"))
    if "tar" not in adapter.caps():
        err = adapter.run("tar-in", sid, WORKDIR, str(src), ok=False)
        assert err == {"error": "ENOTCAP", "message": f"not supported by {adapter.provider}: tar"}
        return "not supported"
    adapter.run("tar-in", sid, WORKDIR, str(src))
    assert adapter.run("read", sid, f"{WORKDIR}/x/y.txt")["data"] == "tar"
    out = tmp_path / "out.tar"
    adapter.run("tar-out", sid, WORKDIR, str(out))
    with tarfile.open(out) as t:
        assert t.extractfile("x/y.txt").read() == b"tar"
    evil = tmp_path / "evil.tar"  # a name that climbs out of the directory
    with tarfile.open(evil, "w") as t:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"!"))
    err = adapter.run("tar-in", sid, WORKDIR, str(evil), ok=False)
    assert err["error"] == "EINVAL" and adapter.provider in err["message"]
    assert not any("escaped" in path for path in adapter.d.sandboxes[sid].fs.snapshot())
    adapter.run("remove", sid)
    return None if adapter.provider in ("cloudflare", "kubernetes") else "ok (through files)"


@checked("preview")
def test_preview(adapter):
    """A port's preview URL answers, with the header the provider wants;
    the API key is never handed out for it."""
    sid = adapter.create()
    port = PREVIEW_PORT[adapter.provider]
    if "preview" not in adapter.caps():
        err = adapter.run("preview", sid, str(port), ok=False)
        assert err == {"error": "ENOTCAP", "message": f"not supported by {adapter.provider}: preview"}
        adapter.run("remove", sid)
        return "not supported"
    pv = adapter.run("preview", sid, str(port))
    assert adapter.d.key not in json.dumps(pv)
    req = urllib.request.Request(pv["url"])
    if pv["header_name"]:
        req.add_header(pv["header_name"], pv["header_value"])
    if pv["header2_name"]:  # E2B's shared host: sandbox and port
        req.add_header(pv["header2_name"], pv["header2_value"])
    if pv["needs_credential"]:  # what our proxy will add (Sprites' private URL)
        req.add_header("Authorization", f"Bearer {adapter.d.key}")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and f"preview of {sid} port {port}" in r.read().decode()
    note = "ok (through our proxy)" if pv["proxy"] else None
    if adapter.provider == "sprites":
        err = adapter.run("preview", sid, "3000", ok=False)
        assert err["error"] == "ENOTCAP" and "8080" in err["message"]
        note = "ok (8080 only)"
    if adapter.provider == "modal":  # a tunnel per port asked at create, no other
        assert adapter.d.seen("tunnel.http"), "the preview did not go through the tunnel"
        err = adapter.run("preview", sid, "8080", ok=False)
        assert err["error"] == "ENOTCAP" and "8080" in err["message"] and "at create" in err["message"]
        note = "ok (ports of the create)"
    if adapter.provider == "kubernetes":
        note = forward_check(adapter, sid, port)
    else:  # refused before any request
        err = adapter.run("forward", sid, str(port), "x", ok=False)
        assert err == {"error": "ENOTCAP", "message": f"not supported by {adapter.provider}: port-forward"}
    adapter.run("remove", sid)
    return note


def forward_check(adapter, sid, port):
    """The daemon's preview proxy reaches a Pod through port-forward: a
    real server in the Pod (busybox httpd on the Pod's address) answers
    the bytes sent; a port nothing listens on ends the stream with the
    kubelet's error."""
    ip = adapter.d.sandboxes[sid].ip
    adapter.run("exec", sid, "sh", "-c",
                f"mkdir -p /www && echo from-the-pod > /www/index.html && httpd -p {ip}:{port} -h /www")
    got = adapter.run("forward", sid, str(port), "GET /index.html HTTP/1.0\r\n\r\n")
    assert got["data"].startswith("HTTP/1.") and got["data"].endswith("\r\n\r\nfrom-the-pod\n"), got
    rec = adapter.d.forwards[-1]
    assert (rec["pod"], rec["port"], rec["protocol"], rec["error"]) == (sid, port, "v4.channel.k8s.io", None)
    got = adapter.run("forward", sid, str(port + 1), "GET / HTTP/1.0\r\n\r\n")
    assert got["data"] == "" and "failed to connect" in adapter.d.forwards[-1]["error"]
    return "ok (and port-forward)"


# Providers whose adapters declare pause: the double's word for paused and
# for running again.
PAUSED = {"e2b": ("paused", "running"), "daytona": ("paused", "started"),
          "runloop": ("suspended", "running")}


def remote_state(sb):
    return getattr(sb, "state", None) or getattr(sb, "status", None)


@checked("capabilities")
def test_undeclared_capabilities(adapter):
    """Every capability an adapter does not declare answers the standard
    error and sends nothing to the provider."""
    d = adapter.d
    sid = adapter.create()
    caps = adapter.caps()
    steps = {"pause": ("pause", sid), "pty": ("pty", sid, "exit\n"), "file-list": ("list", sid, "/"),
             "tar": ("tar-out", sid, WORKDIR), "stdin": ("stdin", sid, "x", "cat")}
    missing = [c for c in steps if c not in caps]
    # E2B's and Daytona's pause keep memory, Runloop's (its suspend) the disk
    assert ("pause" in missing) == (adapter.provider not in PAUSED)
    before = len(d.requests)
    for cap in missing:
        err = adapter.run(*steps[cap], ok=False)
        assert err == {"error": "ENOTCAP", "message": f"not supported by {adapter.provider}: {cap}"}
    assert len(d.requests) == before, "a refused capability still called the provider"
    if "pause" in caps:  # paused there, then running again
        paused, running = PAUSED[adapter.provider]
        adapter.run("pause", sid)
        assert remote_state(d.sandboxes[sid]) == paused
        adapter.run("resume", sid)
        assert remote_state(d.sandboxes[sid]) == running
    if "stdin" in caps:
        lines = adapter.run("stdin", sid, "typed input", "cat")
        assert "".join(x.get("data", "") for x in lines) == "typed input" and lines[-1] == {"exit_code": 0}
    adapter.run("remove", sid)
    if not missing:  # E2B: every optional capability checked here is there
        return "ok: lacks nothing checked here (pause: paused there, then running)"
    return "ok: lacks " + ", ".join(missing) + (" (pause: paused there, then running)"
                                                if "pause" in caps else "")


@checked("snapshot")
def test_snapshot(adapter):
    """Snapshots as each adapter declares them: taken (a file written
    after it is not in it); where "snapshot-restore" is declared, the
    sandbox goes back to it in place; where "snapshot-base" is, a new
    sandbox is made from it, also once its source is gone; what is not
    declared answers the standard error and sends nothing; deleting it
    removes it there (Sprites has no such call: its checkpoints go with
    their sprite)."""
    d, p = adapter.d, adapter.provider
    sid = adapter.create()
    caps = adapter.caps()
    if "snapshot" not in caps:
        before = len(d.requests)
        err = adapter.run("snapshot", sid, "s1", ok=False)
        assert err == {"error": "ENOTCAP", "message": f"not supported by {p}: snapshot"}
        assert "snapshot-base" not in caps and "snapshot-restore" not in caps
        assert len(d.requests) == before
        adapter.run("remove", sid)
        return "not supported"
    path = f"{WORKDIR}/snap.txt"
    adapter.run("write", sid, path, "before")
    snap = adapter.run("snapshot", sid, "s1")["snapshot"]
    assert len(d.snapshots) == 1
    if p != "vercel":  # Vercel stops a sandbox to snapshot it, for good (v1)
        adapter.run("write", sid, path, "after")
    did = []
    if "snapshot-restore" in caps:
        adapter.run("snapshot-restore", sid, snap)
        assert adapter.run("read", sid, path)["data"] == "before"
        did.append("restore in place")
    else:
        before = len(d.requests)
        err = adapter.run("snapshot-restore", sid, snap, ok=False)
        assert err == {"error": "ENOTCAP", "message": f"not supported by {p}: snapshot-restore"}
        assert len(d.requests) == before
    adapter.run("remove", sid)
    if "snapshot-base" in caps:
        new = adapter.run("create-from", snap, "t2")["id"]
        assert adapter.run("read", new, path)["data"] == "before"
        adapter.run("remove", new)
        did.append("from one after its source is gone")
    else:
        before = len(d.requests)
        err = adapter.run("create-from", snap, "t2", ok=False)
        assert err == {"error": "ENOTCAP", "message": f"not supported by {p}: snapshot-base"}
        assert len(d.requests) == before
        did.append("none from one (snapshot-base)")
    adapter.run("snapshot-rm", snap)
    assert not d.snapshots, d.snapshots  # Sprites': gone with the sprite
    if p == "sprites":
        did.append("rm: none (gone with its sprite)")
    return "ok: " + ", ".join(did)


@checked("errors")
def test_error_mapping(adapter):
    """401 names the provider and says the key was rejected; 5xx, garbage
    and silence become clear errors naming the provider; a credential
    echoed back by the provider is scrubbed; idempotent calls retry a 503,
    creates never do."""
    d, p = adapter.d, adapter.provider
    bad = Drive(p, d, key="wrong-key-0123456789abcdef")
    err = bad.run("create", ok=False)
    assert err["error"] == "EAUTH" and err["message"].startswith(f"{p} rejected the API key")
    assert "wrong-key-0123456789abcdef" not in err["message"]

    d.fault("create", status=500, times=1)
    err = adapter.run("create", ok=False)
    assert err["error"] == "EREMOTE" and p in err["message"] and "500" in err["message"]

    d.fault("create", status=503, times=1)
    sent = len(d.seen("create"))
    err = adapter.run("create", ok=False)
    assert err["error"] == "EREMOTE" and len(d.seen("create")) == sent + 1, "a create was sent again"

    d.fault("create", garbage=True, times=1)
    err = adapter.run("create", ok=False)
    assert err["error"] == "EREMOTE" and "not its API" in err["message"] and p in err["message"]

    d.fault("create", status=400, message=f"bad key {d.key}", times=1)
    err = adapter.run("create", ok=False)
    assert d.key not in err["message"] and "[redacted]" in err["message"]

    quick = Drive(p, d, timeout_ms=1000)
    d.fault("create", hang=True, times=1)
    t = time.monotonic()
    err = quick.run("create", ok=False)
    assert err["error"] == "ETIMEDOUT" and err["message"].startswith(f"{p} did not answer")
    assert time.monotonic() - t < 30

    for r in d.requests:  # the key travels in a header only, never in a URL
        assert d.key not in r["path"] and d.key not in json.dumps(r["query"]), r

    sid = adapter.create()
    d.fault(STATUS_ROUTE.get(p, "get"), status=503, times=1)
    assert adapter.run("status", sid)["state"] == "running"  # retried
    adapter.run("remove", sid)


@checked("no-leak")
def test_no_leak_after_failed_create(adapter):
    """A create that fails after the provider made the sandbox deletes it,
    says why, and a retry then works."""
    d, p = adapter.d, adapter.provider
    d.fault(READY_ROUTE[p], status=500)
    err = adapter.run("create", ok=False)
    assert err["error"] == "EREMOTE" and p in err["message"]
    assert d.seen("create") and d.seen(DELETE_ROUTE.get(p, "delete")), "nothing was deleted"
    assert alive(d) == set(), f"leaked: {alive(d)}"
    assert getattr(d, "secrets", {}) == {}, "a sandbox's record was left"  # Kubernetes' Secrets
    d.clear_faults()
    sid = adapter.create()
    assert alive(d) == {sid}
    adapter.run("remove", sid)

    quick = Drive(p, d, timeout_ms=1000)
    d.fault(READY_ROUTE[p], hang=True, times=1)
    err = quick.run("create", ok=False)
    assert err["error"] == "ETIMEDOUT"
    assert alive(d) == set(), f"leaked after a timeout: {alive(d)}"
    assert getattr(d, "secrets", {}) == {}, "a sandbox's record was left"


# Providers that take no environment at all (the Cloudflare bridge: no
# env at create, none per exec); the record of the sandbox says so.
NO_ENV = {"cloudflare"}


@checked("env")
def test_env(adapter):
    """Variables and secrets given at create are what every exec sees
    (a value with spaces kept whole), and an exec's own variables reach
    that exec."""
    sid = adapter.create("envs", "GREETING=hello  world", "API_TOKEN=s3cret-value")
    exec_env = Drive(adapter.provider, adapter.d)
    exec_env.env["PE_DRIVE_EXEC_ENV"] = "PER_EXEC=just-this-one"
    if adapter.provider in NO_ENV:
        err = exec_env.run("exec", sid, "printenv", "PER_EXEC", ok=False)
        assert err == {"error": "ENOTCAP", "message": f"not supported by {adapter.provider}: exec environment"}
        adapter.run("remove", sid)
        return "not supported"
    r = adapter.run("exec", sid, "printenv", "GREETING")
    assert (r["exit_code"], r["stdout"]) == (0, "hello  world\n")
    r = adapter.run("exec", sid, "printenv", "API_TOKEN")
    assert (r["exit_code"], r["stdout"]) == (0, "s3cret-value\n")
    r = exec_env.run("exec", sid, "printenv", "PER_EXEC")
    assert (r["exit_code"], r["stdout"]) == (0, "just-this-one\n")
    r = adapter.run("exec", sid, "printenv", "PER_EXEC")  # one exec's, not the next one's
    assert r["stdout"] == ""
    adapter.run("remove", sid)


def test_modal_input_lost_ends_the_stream():
    """A write to a Modal process's stdin that fails loses those bytes
    (the router checks offsets: the next write and the EOF are refused), so
    the stream ends with an error naming modal instead of leaving the
    process waiting for its input forever."""
    with start("modal") as d:
        a = Drive("modal", d)
        sid = a.create()
        d.fault("exec.stdin", status=500, times=1)
        out = a.run("stdin", sid, "typed input", "cat", ok=False, timeout=30)
        err = out[-1] if isinstance(out, list) else out
        assert err["error"] == "EREMOTE" and err["message"].startswith("modal") and "stdin" in err["message"], err
        lines = a.run("stdin", sid, "again", "cat")  # a later call works
        assert "".join(x.get("data", "") for x in lines) == "again" and lines[-1] == {"exit_code": 0}
        a.run("remove", sid)


# ---- local: the same promises, on this host's runtime, for real ----

INIT = os.path.join(BUILD, "pocketenv-init")


class LocalDrive(Drive):
    """provider-drive against the local runtime, in the test's data
    directory and with the test image."""

    def __init__(self, pe):
        self.provider = "local"
        self.d = None
        self.pe = pe
        self.env = dict(os.environ, PE_PROVIDER_DATA=pe.data, PE_PROVIDER_IMAGE=pe.image,
                        POCKETENV_INIT=INIT, PE_DRIVE_SHELL="sh")

    def with_env(self, **kw):
        other = LocalDrive(self.pe)
        other.env.update(kw)
        return other


@pytest.fixture
def local(pe):
    if not os.access(DRIVE, os.X_OK):
        pytest.fail(f"{DRIVE} is not built (ninja -C build)")
    yield LocalDrive(pe)


def checked_local(check):
    def wrap(fn):
        @functools.wraps(fn)
        def test(local, *a, **kw):
            try:
                note = fn(local, *a, **kw)
            except BaseException:
                record("local", check, "FAIL")
                raise
            record("local", check, note or "ok")
        return test
    return wrap


def names(local):
    return [sb["name"] for sb in local.pe.ls()]


@checked_local("lifecycle")
def test_local_lifecycle(local):
    """create runs the sandbox, stop keeps its files for the next start,
    remove leaves nothing."""
    sid = local.create("life")
    assert sid == "life" and local.run("status", sid)["state"] == "running"
    local.run("write", sid, "/kept.txt", "kept")
    local.run("stop", sid)
    assert local.run("status", sid)["state"] == "stopped"
    local.run("start", sid)
    assert local.run("status", sid)["state"] == "running"
    assert local.run("read", sid, "/kept.txt")["data"] == "kept"
    local.run("remove", sid)
    assert names(local) == []
    err = local.run("status", sid, ok=False)
    assert err["error"] == "ENOENT" and err["message"].startswith("local:")


@checked_local("exec")
def test_local_exec(local):
    """One-shot exec: stdout and stderr apart, the exit code, argv words
    kept whole, 127 for a missing command, a timeout that ends it."""
    sid = local.create()
    r = local.run("exec", sid, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r["exit_code"], r["stdout"], r["stderr"]) == (3, "out\n", "err\n")
    r = local.run("exec", sid, "echo", "a  b", "c")
    assert (r["exit_code"], r["stdout"]) == (0, "a  b c\n")
    r = local.run("exec", sid, "no-such-command")
    assert r["exit_code"] == 127 and "no-such-command" in r["stderr"]
    timed = local.with_env(PE_DRIVE_EXEC_TIMEOUT="1")
    t = time.monotonic()
    r = timed.run("exec", sid, "sh", "-c", "echo started; sleep 60; echo never")
    assert r["timed_out"] and r["stdout"] == "started\n" and r["exit_code"] in (137, 143), r
    assert time.monotonic() - t < 20
    # nothing of it is left running in the sandbox
    r = local.run("exec", sid, "sh", "-c", "ps -o comm | grep -c '^sleep' || true")
    assert r["stdout"].strip() == "0", r
    local.run("remove", sid)


@checked_local("stream")
def test_local_stream(local):
    """Streaming exec: the first line reaches the caller while the
    command still runs."""
    sid = local.create()
    marker = "/tmp/stream-went-on"
    p = subprocess.Popen([DRIVE, "local", "stream", sid, "sh", "-c",
                          f"echo a; while [ ! -e {marker} ]; do sleep 0.05; done; echo b >&2"],
                         stdout=subprocess.PIPE, text=True, env=local.env)
    rest = None
    try:
        first = json.loads(p.stdout.readline())
        assert first.get("fd") == 1 and first.get("data") == "a\n", first
        # the command waits for this file: the "a" came while it ran
        local.run("write", sid, marker, "")
        rest = [json.loads(line) for line in p.stdout]
    finally:
        p.stdout.close()
        if rest is None:
            p.kill()
        p.wait(30)
    assert p.returncode == 0
    assert [(x["fd"], x["data"]) for x in rest if "fd" in x] == [(2, "b\n")]
    assert rest[-1] == {"exit_code": 0}
    local.run("remove", sid)


@checked_local("stream-faults")
def test_local_stream_faults(local):
    """Output in many small pieces, and a lot of it, comes out whole; a
    process killed from inside reports its signal, never 0."""
    sid = local.create()
    r = local.run("exec", sid, "sh", "-c", "for i in $(seq 1 2000); do echo line $i; done; exit 7")
    assert r["exit_code"] == 7
    assert r["stdout"] == "".join(f"line {i}\n" for i in range(1, 2001))
    r = local.run("exec", sid, "sh", "-c", "echo one; kill -9 $$; echo two")
    assert (r["exit_code"], r["stdout"]) == (137, "one\n")
    local.run("remove", sid)
    return "ok (no remote stream)"


@checked_local("pty")
def test_local_pty(local):
    """A terminal: the resize reaches the PTY, typed lines run, the
    shell's exit code comes back."""
    sid = local.create()
    r = local.run("pty", sid, "stty size\necho hi\nexit 4\n")
    assert "30 100" in r["output"] and "hi\r\n" in r["output"] and r["exit_code"] == 4, r
    local.run("remove", sid)


@checked_local("files")
def test_local_files(local, tmp_path):
    """Write, read, list, remove; a missing file is ENOENT; paths resolve
    inside the sandbox's root, never through a link of the sandbox's to
    the host."""
    sid = local.create()
    path = "/workspace/dir/a.txt"
    local.run("write", sid, path, "hello\nworld")
    assert local.run("read", sid, path)["data"] == "hello\nworld"
    entries = local.run("list", sid, "/workspace/dir")["entries"]
    assert [(e["name"], e["dir"], e["size"]) for e in entries] == [("a.txt", False, 11)]
    # the sandbox sees it, owned by its root
    r = local.run("exec", sid, "sh", "-c", f"cat {path}; stat -c ' %u' {path}")
    assert r["stdout"] == "hello\nworld 0\n"
    local.run("rm", sid, path)
    err = local.run("read", sid, path, ok=False)
    assert err["error"] == "ENOENT" and "local" in err["message"]
    # links planted by the sandbox lead nowhere outside it
    host = tmp_path / "host-secret"
    host.write_text("host only")
    local.run("exec", sid, "sh", "-c", f"ln -s {host} /workspace/out; ln -s ../../../../{host} /workspace/up")
    err = local.run("read", sid, "/workspace/out", ok=False)
    assert err["error"] == "ENOENT", err
    err = local.run("read", sid, "/workspace/up", ok=False)
    assert err["error"] == "ENOENT", err
    local.run("write", sid, "/workspace/out", "replaced")
    assert host.read_text() == "host only"
    r = local.run("exec", sid, "sh", "-c", "test -L /workspace/out || cat /workspace/out")
    assert r["stdout"] == "replaced"
    err = local.run("read", sid, "/proc/1/environ", ok=False)
    assert err["error"] == "EINVAL"
    local.run("remove", sid)


@checked_local("tar")
def test_local_tar(local, tmp_path):
    """A tar unpacked into the sandbox's files and packed back out; a
    name that climbs out is refused."""
    sid = local.create()
    src = tmp_path / "in.tar"
    with tarfile.open(src, "w") as t:
        info = tarfile.TarInfo("x/y.txt")
        info.size = 3
        t.addfile(info, io.BytesIO(b"tar"))
    local.run("tar-in", sid, WORKDIR, str(src))
    assert local.run("exec", sid, "cat", f"{WORKDIR}/x/y.txt")["stdout"] == "tar"
    out = tmp_path / "out.tar"
    local.run("tar-out", sid, WORKDIR, str(out))
    with tarfile.open(out) as t:
        assert t.extractfile("x/y.txt").read() == b"tar"
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as t:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"!"))
    err = local.run("tar-in", sid, WORKDIR, str(evil), ok=False)
    assert err["error"] == "EINVAL" and "local" in err["message"]
    r = local.run("exec", sid, "sh", "-c", "find / -xdev -name escaped.txt")
    assert r["stdout"] == ""
    local.run("remove", sid)
    return "ok (through files)"


@checked_local("preview")
def test_local_preview(local):
    """A published port's URL answers from the sandbox; a port not
    published is ENOENT."""
    sid = local.with_env(PE_PROVIDER_PORTS="3000").create()
    local.run("exec", sid, "sh", "-c", f"mkdir -p /www && echo 'preview of {sid}' > /www/index.html"
              " && httpd -p 3000 -h /www")
    pv = local.run("preview", sid, "3000")
    assert pv["url"].startswith("http://127.0.0.1:") and not pv["needs_credential"]

    def answers():
        try:
            with urllib.request.urlopen(pv["url"], timeout=5) as r:
                return f"preview of {sid}" in r.read().decode()
        except OSError:
            return False
    deadline = time.monotonic() + 10
    while not answers():
        assert time.monotonic() < deadline, "the preview URL never answered"
        time.sleep(0.1)
    err = local.run("preview", sid, "3001", ok=False)
    assert err["error"] == "ENOENT" and "3001" in err["message"]
    local.run("remove", sid)


@checked_local("capabilities")
def test_local_capabilities(local):
    """What local declares it does: pause freezes the sandbox (an exec
    cannot run in it) and resume thaws it; stdin reaches a process."""
    sid = local.create()
    caps = local.caps()
    assert {"stop", "pty", "stdin", "file-list", "file-remove", "tar", "preview", "pause"} <= caps
    local.run("pause", sid)
    assert local.run("status", sid)["state"] == "paused"
    err = local.run("exec", sid, "true", ok=False)
    assert err["error"] == "ESTATE" and err["message"].startswith("local:"), err
    local.run("resume", sid)
    lines = local.run("stdin", sid, "typed input", "cat")
    assert "".join(x.get("data", "") for x in lines) == "typed input" and lines[-1] == {"exit_code": 0}
    local.run("remove", sid)
    missing = [c for c in ("snapshot", "volumes", "services") if c not in caps]
    return "ok: lacks " + ", ".join(missing) if missing else None


@checked_local("snapshot")
def test_local_snapshot(local):
    """Local snapshots are the daemon's (layers on the runtime's btrfs,
    tests/integration/test_snapshots*.py), not the interface's: the
    adapter declares none of the three and answers the standard error."""
    sid = local.create()
    caps = local.caps()
    assert not {"snapshot", "snapshot-base", "snapshot-restore"} & caps
    err = local.run("snapshot", sid, "s1", ok=False)
    assert err == {"error": "ENOTCAP", "message": "not supported by local: snapshot"}
    local.run("remove", sid)
    return "not through the interface (the daemon's layers)"


@checked_local("env")
def test_local_env(local):
    """Variables and secrets given at create are in every exec's
    environment; an exec's own variables reach that exec only."""
    sid = local.create("envs", "GREETING=hello  world", "API_TOKEN=s3cret-value")
    r = local.run("exec", sid, "sh", "-c", 'echo "$GREETING"')
    assert (r["exit_code"], r["stdout"]) == (0, "hello  world\n")
    r = local.run("exec", sid, "sh", "-c", 'echo "$API_TOKEN"')
    assert (r["exit_code"], r["stdout"]) == (0, "s3cret-value\n")
    r = local.with_env(PE_DRIVE_EXEC_ENV="PER_EXEC=just-this-one").run("exec", sid, "sh", "-c", 'echo "$PER_EXEC"')
    assert (r["exit_code"], r["stdout"]) == (0, "just-this-one\n")
    r = local.run("exec", sid, "sh", "-c", 'echo "$PER_EXEC"')
    assert r["stdout"] == "\n"
    local.run("remove", sid)


@checked_local("errors")
def test_local_errors(local):
    """Unknown sandboxes, bad names, a stopped sandbox: clear errors
    naming the provider."""
    err = local.run("exec", "nope", "true", ok=False)
    assert err["error"] == "ENOENT" and err["message"].startswith("local:")
    err = local.run("create", "bad/name", ok=False)
    assert err["error"] == "EINVAL" and err["message"].startswith("local:")
    sid = local.create()
    local.run("stop", sid)
    for step in (("exec", sid, "true"), ("read", sid, "/etc/hostname"), ("write", sid, "/x", "y")):
        err = local.run(*step, ok=False)
        assert err["error"] == "ESTATE" and err["message"].startswith("local:"), (step, err)
    local.run("remove", sid)


@checked_local("no-leak")
def test_local_no_leak(local):
    """A create that fails, before or after the sandbox exists, leaves
    nothing; a retry then works; a taken name keeps its sandbox."""
    err = local.with_env(PE_PROVIDER_IMAGE="/nonexistent-image").run("create", "leak1", ok=False)
    assert err["message"].startswith("local:")
    assert names(local) == []
    # the sandbox is made, then its start fails (an init that is not one)
    err = local.with_env(POCKETENV_INIT="/bin/false").run("create", "leak2", ok=False)
    assert err["message"].startswith("local:") and "start" in err["message"]
    assert names(local) == []
    sid = local.create("leak2")
    err = local.run("create", "leak2", ok=False)
    assert err["error"] == "EEXIST"
    assert local.run("exec", sid, "true")["exit_code"] == 0
    local.run("remove", sid)


# The routes of calls that run inside the sandbox (E2B's envd, Hopx's agent).
IN_SANDBOX = {"e2b": ("exec", "fs.read", "fs.write", "fs.ListDir"),
              "hopx": ("exec", "terminal", "fs.read", "fs.write", "fs.list")}


@pytest.mark.parametrize("provider", sorted(IN_SANDBOX))
def test_api_key_never_reaches_the_sandbox(provider):
    """E2B's envd and Hopx's agent run inside the sandbox: their calls carry
    the sandbox's own token, never the account's API key (which the control
    plane alone gets)."""
    with start(provider) as d:
        a = Drive(provider, d)
        sid = a.create("keys")
        a.run("exec", sid, "echo", "hi")
        a.run("write", sid, "/tmp/k.txt", "x")
        a.run("read", sid, "/tmp/k.txt")
        a.run("list", sid, "/tmp")
        a.run("pty", sid, "exit 0\n")
        inside = [r for r in d.requests if r["route"] in IN_SANDBOX[provider]]
        assert len(inside) >= 4 and all(r["authorized"] for r in inside)
        assert d.key_in_sandbox == []
        a.run("remove", sid)
