"""What upstream's CLI and SDK send, answered as they expect (issue 12).

Each test sends exactly what upstream's clients send (reference §1-§4 and
their public source) to a real daemon.
"""
import base64
import json
import os
import sqlite3
import subprocess
import urllib.error
import urllib.request

import pytest
from nacl.public import PrivateKey, SealedBox

from conftest import BIN
from test_daemon import broken_image, serving
from test_daemon_restart import served  # noqa: F401 (fixture)
from test_resources import ResDaemon, banner_key

SB = "io.pocketenv.sandbox."
# What upstream's CLI sends as base when given none (reference §6.2): the
# at-uri of upstream's openclaw template, whose record key is its name.
CATALOG_DID = "did:plc:aturpi2ls3yvsmhc6wybomun"
DEFAULT_BASE = f"at://{CATALOG_DID}/io.pocketenv.sandbox/openclaw"
PROVIDERS = ["daytona", "vercel", "cloudflare", "deno", "sprites", "modal", "e2b", "blaxel",
             "hopx", "runloop"]
# The providers upstream's CLI `console`/`ssh` knows a terminal transport
# for (apps/cli/src/cmd/ssh/index.ts): anything else is refused there.
CONSOLE_PROVIDERS = {"cloudflare", "daytona", "deno", "vercel", "sprites"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("compat"), ResDaemon, ["--rate-limit", "0"]) as d:
        d.public_key = banner_key(d)
        yield d


def cli_create(d, name=None, base=None, provider=None, **provider_options):
    """createSandbox as upstream's CLI sends it (apps/cli/src/cmd/create.ts):
    Sandbox.create({name, base: base ?? DEFAULT_BASE, provider: provider ??
    "cloudflare", repo, providerOptions}), undefined fields dropped by
    JSON.stringify and the provider options spread into the body."""
    body = {"base": base or DEFAULT_BASE, "provider": provider or "cloudflare",
            **provider_options}
    if name:
        body["name"] = name
    return d.call(SB + "createSandbox", body=body)


def provider_options(d, provider):
    """The credentials upstream's CLI (sprites, daytona, deno, vercel,
    modal: from the environment, sealed, with a redacted copy) or the SDK's
    providerOptions (the others) send with a create. Accepted, unused."""
    secret = lambda n: d.seal(f"{n}-" + os.urandom(8).hex())
    return {
        "sprites": {"spriteToken": secret("sprite"), "redactedSpriteToken": "sprite-***"},
        "daytona": {"daytonaApiKey": secret("dtn"), "redactedDaytonaApiKey": "dtn-***",
                    "daytonaOrganizationId": "org-1"},
        "deno": {"denoDeployToken": secret("deno"), "redactedDenoDeployToken": "deno-***"},
        "vercel": {"vercelApiToken": secret("vc"), "redactedVercelApiToken": "vc-***",
                   "vercelProjectId": "prj_1", "vercelTeamId": "team_1"},
        "modal": {"modalTokenId": secret("ak"), "redactedModalTokenId": "ak-***",
                  "modalTokenSecret": secret("as"), "redactedModalTokenSecret": "as-***"},
        "e2b": {"e2bApiKey": secret("e2b"), "redactedE2bApiKey": "e2b-***"},
        "hopx": {"hopxApiKey": secret("hopx"), "redactedHopxApiKey": "hopx-***"},
        "runloop": {"runloopApiKey": secret("rl"), "redactedRunloopApiKey": "rl-***"},
    }.get(provider, {})


def sdk_create(d, **options):
    """Sandbox.create(options) of @pocketenv/sdk 0.2.10: options minus
    token, baseUrl, storageUrl, publicKey and providerOptions, as given."""
    return d.call(SB + "createSandbox", body=options)


def post(url, body, headers=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_login_with_a_handle_answers_what_it_cannot_do(daemon):
    """Upstream's `pocketenv login HANDLE` posts {handle, cli: true} to
    /login, which starts a sign-in (test_atproto.py::
    test_upstream_cli_login_gets_its_token_through_its_listener). What it
    cannot do gets an XRPC-style error that says why, not a bare 405: here
    no request leaves the machine (no handle is resolved)."""
    st, body = post(daemon.url + "/login", {"handle": "alice.bsky.social", "password": "pw"})
    assert st == 501, body
    assert json.loads(body)["error"] == "MethodNotImplemented"
    st, body = post(daemon.url + "/login", {"handle": "not a handle!", "cli": True})
    assert st == 400 and json.loads(body)["error"] == "InvalidRequest", body
    st, _ = post(daemon.url + "/loginx", {})
    assert st == 404
    assert daemon.healthy()


# ---- 1. provider names (docs/compat.md "Provider names") ----

def test_every_provider_name_is_kept_and_runs_here(daemon):
    """Upstream's clients choose their terminal transport, backups and
    other paths from the provider a sandbox reports: it is the name they
    asked for (not "local", which the CLI refuses), and what really runs
    it is in backend. With no credentials and no flags, every name is
    served by the local runtime. The SDK sends no provider unless told:
    that is upstream's default, cloudflare."""
    made = {}
    for p in PROVIDERS:
        st, sb = cli_create(daemon, f"on-{p}", base="busybox", provider=p,
                            **provider_options(daemon, p))
        assert st == 200, (p, sb)
        assert (sb["provider"], sb["backend"]) == (p, "local"), sb
        made[p] = sb["id"]
    st, sb = sdk_create(daemon, base="busybox", name="sdk-default")
    assert st == 200, sb
    assert (sb["provider"], sb["backend"]) == ("cloudflare", "local"), sb
    made[None] = sb["id"]
    for p, ident in made.items():
        got = daemon.wait_status(ident, ["RUNNING", "FAILED"], timeout=60)
        assert got["status"] == "RUNNING", got
        assert (got["provider"], got["backend"]) == (p or "cloudflare", "local"), got
    assert daemon.sandbox("exec", "on-daytona", {"command": "echo here"})[1]["stdout"] == "here\n"

    # `pocketenv console` without a name: getProfile, getActorSandboxes
    # {did, offset 0, limit 100}, the first RUNNING one, then by provider.
    st, prof = daemon.call("io.pocketenv.actor.getProfile")
    st, out = daemon.call("io.pocketenv.actor.getActorSandboxes",
                          {"did": prof["did"], "offset": 0, "limit": 100})
    assert st == 200
    listed = {s["id"]: s for s in out["sandboxes"]}
    for p, ident in made.items():
        assert (listed[ident]["provider"], listed[ident]["backend"]) == (p or "cloudflare",
                                                                         "local")
    # The CLI's default (cloudflare) is one its console, ssh, create --ssh,
    # start --ssh and backup create accept.
    assert daemon.sandbox("getSandbox", "sdk-default")[1]["sandbox"]["provider"] \
        in CONSOLE_PROVIDERS
    for ident in made.values():
        assert daemon.sandbox("deleteSandbox", ident)[0] == 200


def test_unknown_provider_is_refused_with_the_valid_names(daemon):
    st, out = cli_create(daemon, "nowhere", base="busybox", provider="aws")
    assert st == 400 and out["error"] == "InvalidRequest", out
    for p in PROVIDERS:
        assert p in out["message"], out
    assert daemon.sandbox("getSandbox", "nowhere")[0] == 404


def test_operator_turns_provider_names_off(served):  # noqa: F811 (fixture)
    """serve --provider NAME=off refuses new sandboxes of that name, with a
    400 that names it and says the operator turned it off; the others are
    still served. A name turned off later leaves the sandboxes it has
    where they run. Bad flags stop the daemon before it serves."""
    s = served(["--sandbox-net", "none"])
    d = s.start()
    st, old = cli_create(d, "old-daytona", base="busybox", provider="daytona")
    assert st == 200, old
    d.wait_status(old["id"], ["RUNNING"])
    s.stop()

    s.extra += ["--provider", "daytona=off", "--provider", "e2b=off", "--provider", "e2b=off"]
    d = s.start()
    for p in ["daytona", "e2b"]:
        st, out = cli_create(d, f"new-{p}", base="busybox", provider=p)
        assert (st, out["error"]) == (400, "ProviderNotAvailable"), out
        assert f"provider {p} is turned off" in out["message"], out
        assert "operator" in out["message"] and "cloudflare" in out["message"], out
        assert d.sandbox("getSandbox", f"new-{p}")[0] == 404
    st, sb = cli_create(d, "still-served", base=broken_image(s.data), provider="cloudflare")
    assert st == 200 and sb["provider"] == "cloudflare", sb
    # The daytona sandbox made before runs on, and starts again.
    got = d.sandbox("getSandbox", "old-daytona")[1]["sandbox"]
    assert (got["status"], got["provider"], got["backend"]) == ("RUNNING", "daytona", "local")
    assert d.sandbox("stopSandbox", "old-daytona")[0] == 200
    assert d.sandbox("startSandbox", "old-daytona", {})[0] == 200
    assert d.sandbox("exec", "old-daytona", {"command": "echo on"})[1]["stdout"] == "on\n"

    for bad, says in [("aws=local", "NAME one of daytona"),
                      ("daytona=elsewhere", "local, remote or off"),
                      ("kubernetes=local", "a cluster cannot be served locally"),
                      ("daytona", "NAME=local, NAME=remote or NAME=off")]:
        p = subprocess.run([BIN, "serve", "--data", s.data, "--listen", "127.0.0.1:1",
                            "--provider", bad], capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and says in p.stderr, (bad, p.stderr)


# ---- 2. the default base (docs/compat.md "Bases and templates") ----

def test_vendor_only_templates_are_refused_at_once_saying_why(daemon):
    """upstream's catalog names whose tool installs only from a vendor's
    download site (docs/templates.md) are refused at once, by name or by
    at-uri, whoever sends them, naming the template and why; an unknown
    base lists the bases this daemon has; nothing is made. (`pocketenv
    create` with no flags, openclaw, runs: test_templates.py.)"""
    before = daemon.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local"})[1]
    for st, out in [cli_create(daemon, base=f"at://{CATALOG_DID}/io.pocketenv.sandbox/cursor"),
                    cli_create(daemon, "claw", base="nullclaw"),
                    sdk_create(daemon, base="docker"),
                    sdk_create(daemon, base="mise", provider="cloudflare")]:
        assert (st, out["error"]) == (400, "TemplateNotAvailable"), out
        assert "is not available on this daemon: its tool installs only from a vendor's " \
            "download site" in out["message"], out
    assert "template cursor " in cli_create(
        daemon, base=f"at://{CATALOG_DID}/io.pocketenv.sandbox/cursor")[1]["message"]
    st, out = cli_create(daemon, "nobase", base="nosuchimage")
    assert (st, out["error"]) == (400, "InvalidRequest"), out
    assert out["message"].startswith("unknown base nosuchimage; bases available here: "
                                     "busybox, debian, openclaw, claude-code, codex"), out
    for bad in [f"at://{CATALOG_DID}/app.bsky.feed.post/busybox",
                f"at://{CATALOG_DID}/io.pocketenv.sandbox/", "at:///io.pocketenv.sandbox/busybox",
                f"at://{CATALOG_DID}/io.pocketenv.sandbox/busybox/x", "../busybox", ""]:
        st, out = cli_create(daemon, "badbase", base=bad) if bad else \
            daemon.call(SB + "createSandbox", body={"base": ""})
        assert st == 400 and out["error"] == "InvalidRequest", (bad, out)
    after = daemon.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local"})[1]
    assert after["total"] == before["total"]


def test_template_uris_resolve_to_the_base_they_name(daemon):
    """at://…/io.pocketenv.sandbox/NAME is the template NAME: an image
    this daemon has runs; the row says which base it came from."""
    uri = f"at://{CATALOG_DID}/io.pocketenv.sandbox/busybox"
    st, sb = cli_create(daemon, "from-uri", base=uri)
    assert st == 200, sb
    got = daemon.wait_status(sb["id"], ["RUNNING", "FAILED"])
    assert got["status"] == "RUNNING" and got["baseSandbox"] == "busybox", got
    # A template image made here (say, by the templates issue) is served.
    base = broken_image(daemon.data, "openclaw")
    try:
        st, sb2 = cli_create(daemon, "claw")
        assert st == 200 and sb2["baseSandbox"] == "openclaw", sb2
        # (an image without a root filesystem: FAILED, not built again)
        assert daemon.wait_status(sb2["id"], ["RUNNING", "FAILED"])["status"] == "FAILED"
    finally:
        os.remove(os.path.join(daemon.data, "images", base, "image.json"))
        os.rmdir(os.path.join(daemon.data, "images", base))
    for ident in (sb["id"], sb2["id"]):
        assert daemon.sandbox("deleteSandbox", ident)[0] == 200


# ---- 3. keepAlive on start (docs/compat.md "keepAlive on start") ----

def test_start_keep_alive_is_honoured_by_the_idle_stop(served):  # noqa: F811 (fixture)
    """`pocketenv start --keep-alive` and the SDK's start({keepAlive: true})
    send {"keepAlive": true} (a plain start: {}, undefined fields dropped).
    The kept sandbox outlives the idle timeout that stops the other one,
    though it was started first."""
    s = served(["--sandbox-net", "none", "--idle-timeout", "1", "--tick", "0.2"])
    d = s.start()
    for name in ("kept", "unkept"):
        st, sb = cli_create(d, name, base="busybox")
        assert st == 200 and sb["keepAlive"] is False, sb
        d.wait_status(name, ["RUNNING"])
        assert d.sandbox("stopSandbox", name)[0] == 200  # (or the idle stop did)
    assert d.sandbox("startSandbox", "kept", {"keepAlive": True}) == (200, {})
    assert d.sandbox("startSandbox", "unkept", {}) == (200, {})
    got = d.wait_status("unkept", ["STOPPED"], timeout=30)
    assert "without activity" in got["statusReason"], got
    # One tick looks at every row: kept, idle longer, was passed over.
    kept = d.sandbox("getSandbox", "kept")[1]["sandbox"]
    assert (kept["status"], kept["keepAlive"]) == ("RUNNING", True), kept
    # A start without keepAlive leaves it as it is; false turns it off.
    assert d.sandbox("startSandbox", "kept", {}) == (200, {})
    assert d.sandbox("getSandbox", "kept")[1]["sandbox"]["keepAlive"] is True
    assert d.sandbox("startSandbox", "kept", {"keepAlive": False}) == (200, {})
    got = d.wait_status("kept", ["STOPPED"], timeout=30)
    assert got["keepAlive"] is False and "without activity" in got["statusReason"], got


# ---- 4. secrets at create (docs/compat.md "Secrets at create") ----

def test_sdk_builder_plain_secrets_are_sealed_on_arrival(daemon):
    """Sandbox.builder(base).name().env(k, v).secret(k, v).keepAlive().create()
    sends envs and secrets as [{name, value}] in plain text
    (pocketenv-js src/sandbox.ts). The sandbox sees them; the store holds
    only the secret sealed to the daemon's key; the log never has it. A
    value sealed as upstream's CLI seals works beside it."""
    plain = "plain-" + os.urandom(12).hex()
    sealed_plain = "sealed-" + os.urandom(12).hex()
    st, sb = sdk_create(daemon, base="busybox", name="builder",
                        envs=[{"name": "NODE_ENV", "value": "production"}],
                        secrets=[{"name": "API_KEY", "value": plain},
                                 {"name": "SEALED", "value": daemon.seal(sealed_plain)}],
                        keepAlive=True)
    assert st == 200, sb
    assert plain not in json.dumps(sb)
    assert daemon.wait_status(sb["id"], ["RUNNING", "FAILED"])["status"] == "RUNNING"
    out = daemon.sh("builder", "echo $API_KEY $SEALED $NODE_ENV")
    assert out["stdout"] == f"{plain} {sealed_plain} production\n", out

    # The store: the row holds a value sealed to the daemon's key, which
    # opens to the plain text; no byte of the store holds it in clear.
    db = os.path.join(daemon.data, "pocketenv.db")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = dict(con.execute("SELECT name, value FROM secrets WHERE sandbox_id = ?",
                                (sb["id"],)).fetchall())
    finally:
        con.close()
    assert set(rows) == {"API_KEY", "SEALED"}
    assert plain not in rows["API_KEY"]
    with open(os.path.join(daemon.data, "keys", "seal-x25519.key"), "rb") as f:
        box = SealedBox(PrivateKey(f.read()[:32]))
    raw = base64.urlsafe_b64decode(rows["API_KEY"] + "=" * (-len(rows["API_KEY"]) % 4))
    assert box.decrypt(raw) == plain.encode()
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(db + suffix):
            with open(db + suffix, "rb") as f:
                assert plain.encode() not in f.read(), suffix
    found = subprocess.run(["grep", "-rlF", plain, daemon.data], capture_output=True, text=True)
    assert found.stdout == "", found.stdout
    assert plain not in daemon.log_text()
    assert daemon.sandbox("deleteSandbox", "builder")[0] == 200


def test_plain_secrets_at_create_are_checked_without_quoting_them(daemon):
    """A plain value too long for a secret, or with a NUL, is refused
    whole, and no answer or log line quotes it."""
    long_value = "L" + os.urandom(4).hex() * 1200
    for value in [long_value, "nul\u0000" + os.urandom(8).hex()]:
        st, out = sdk_create(daemon, base="busybox", name="toolong",
                             secrets=[{"name": "BIG", "value": value}])
        assert st == 400 and out["error"] == "InvalidRequest", out
        assert value not in json.dumps(out) and value[:40] not in json.dumps(out)
        assert value[:40] not in daemon.log_text()
    st, out = sdk_create(daemon, base="busybox", name="toolong",
                         secrets=[{"name": "1BAD", "value": "x"}])
    assert st == 400, out
    assert daemon.sandbox("getSandbox", "toolong")[0] == 404
