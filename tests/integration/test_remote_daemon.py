"""Sandboxes on remote providers, through our daemon (issue 15).

One daemon for the module, serving daytona, e2b, hopx, modal and vercel remotely
(`--provider-config`: each provider's URL is its double's, on loopback;
hopx also gets an operator-wide key), the others locally. A client sends
what upstream's clients send: createSandbox with `provider` and the
provider's credential sealed to the daemon's key; then exec, stop, start,
delete, all through lib/sandbox → lib/provider → the double.

The doubles (tests/doubles) keep what they were asked in memory, so each
test checks both our answer and what reached the provider.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN, wait_for
from test_daemon import free_port, serving
from test_resources import ResDaemon, banner_key

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tests.doubles import start  # noqa: E402

SB = "io.pocketenv.sandbox."
REMOTE = ["daytona", "e2b", "hopx", "modal", "vercel", "runloop", "sprites", "blaxel", "cloudflare"]
URL_SUFFIX = {"daytona": "/api", "blaxel": "/v0"}
# The request's credential fields (reference §1.4), by provider.
KEY_FIELD = {"daytona": "daytonaApiKey", "e2b": "e2bApiKey", "hopx": "hopxApiKey",
             "vercel": "vercelApiToken", "runloop": "runloopApiKey", "sprites": "spriteToken"}
EXTRA = {"daytona": {"daytonaOrganizationId": "org-1"},
         "vercel": {"vercelTeamId": "team_1", "vercelProjectId": "prj_1"}}
# Ending a sandbox: the double's route (Vercel v1 cannot delete: stop is the end).
DELETE_ROUTE = {"vercel": "stop"}


def state(d, rid):
    """The double's word for a sandbox (each double names it its provider's
    way), None once it is gone."""
    sb = d.sandboxes.get(rid)
    if sb is None or getattr(sb, "destroyed", False):
        return None
    return getattr(sb, "state", None) or getattr(sb, "status", None)


def alive(d):
    """Sandboxes the double runs (not stopped, paused or gone)."""
    return {k for k in list(d.sandboxes)
            if state(d, k) in ("started", "starting", "creating", "running", "pending")}


def openssl(*args, cwd):
    import subprocess
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def preview_pki(d):
    """A private CA and three server certificates in directory d: good
    (localhost, from the CA), wrongname (another host, from the CA),
    untrusted (localhost, from a CA nobody trusts)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "stranger-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                "-subj", f"/CN=pocketenv test {ca}", "-days", "2", cwd=d)
    for name, ca, san in (("good", "ca", "DNS:localhost"), ("wrongname", "ca", "DNS:other.test"),
                          ("untrusted", "stranger-ca", "DNS:localhost")):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", "/CN=x", cwd=d)
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
                cwd=d)


def tls_front(d):
    """A server context that presents the certificate `front["cert"]`
    names (good, wrongname, untrusted) at each handshake."""
    import ssl
    ctxs = {}
    for name in ("good", "wrongname", "untrusted"):
        ctxs[name] = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctxs[name].load_cert_chain(os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key"))
    front = {"cert": "good"}

    def pick(sslobj, server_name, ctx):
        sslobj.context = ctxs[front["cert"]]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, "good.crt"), os.path.join(d, "good.key"))
    ctx.sni_callback = pick
    return ctx, front


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    doubles = {p: start(p) for p in REMOTE}
    other = start("daytona")  # a URL a client would like the daemon to call
    tmp = tmp_path_factory.mktemp("remote")
    # Runloop's tunnel hosts are https: its double's preview is served over
    # TLS with a certificate from a CA only the operator's previewCaFile names
    preview_pki(str(tmp))
    tls_ctx, tls = tls_front(str(tmp))
    tls_url = doubles["runloop"].serve_tls(tls_ctx)
    conf = {p: {"url": d.url + URL_SUFFIX.get(p, ""), "timeoutMs": 3000,
                "createTimeoutMs": 8000} for p, d in doubles.items()}
    conf["hopx"]["key"] = doubles["hopx"].key  # the operator's, for every hopx sandbox
    # the doubles' stand-in for each provider's per-port preview hosts
    conf["hopx"]["previewUrl"] = doubles["hopx"].url + "/__preview__/{id}/{port}/"
    conf["runloop"]["previewUrl"] = tls_url + "/__preview__/{key}/{port}/"
    conf["runloop"]["previewCaFile"] = str(tmp / "ca.crt")
    # Blaxel has no request field upstream: the operator's key and workspace
    conf["blaxel"].update(key=doubles["blaxel"].key, org=doubles["blaxel"].workspace)
    conf["cloudflare"]["key"] = doubles["cloudflare"].key  # the bridge's: no request field
    conf["modal"]["ports"] = [3000]  # Modal tunnels only the ports named at create
    path = tmp / "providers.json"
    path.write_text(json.dumps(conf))
    os.chmod(path, 0o600)
    try:
        # a short tick: idle policies act within a second
        with serving(tmp, ResDaemon, ["--rate-limit", "0", "--provider-config", str(path),
                                      "--tick", "0.5"]) as d:
            d.public_key = banner_key(d)
            d.doubles = doubles
            d.other = other
            d.tls_front = tls
            yield d
    finally:
        for x in list(doubles.values()) + [other]:
            x.stop()


def creds(d, p, key=None):
    """What upstream's CLI sends for provider p: the key sealed, a redacted
    copy, the account's ids."""
    if p == "modal":  # a token is two sealed values
        tid, secret = (key if key is not None else d.doubles[p].key).split(":", 1)
        return {"modalTokenId": d.seal(tid), "modalTokenSecret": d.seal(secret),
                "redactedModalTokenId": tid[:3] + "***", "redactedModalTokenSecret": secret[:3] + "***"}
    if p not in KEY_FIELD:
        return {}
    k = key if key is not None else d.doubles[p].key
    return {KEY_FIELD[p]: d.seal(k), "redacted" + KEY_FIELD[p][0].upper() + KEY_FIELD[p][1:]:
            k[:3] + "***", **EXTRA.get(p, {})}


def create(d, p, name, key=None, token="owner", **extra):
    body = {"base": "busybox", "name": name, "provider": p, **creds(d, p, key), **extra}
    return d.call(SB + "createSandbox", body=body, token=token, timeout=60)


def names(d, token="owner"):
    st, o = d.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local", "limit": 100},
                   token=token)
    assert st == 200, o
    return {sb["name"] for sb in o["sandboxes"]}


def no_secret_anywhere(d, secret, bodies=()):
    assert secret not in d.log_text(), "a credential reached the daemon's log"
    for b in bodies:
        assert secret not in json.dumps(b), f"a credential reached an answer: {b}"


@pytest.mark.parametrize("p", ["daytona", "e2b", "hopx"])
def test_lifecycle_through_the_daemon(env, p):
    """create → exec with its exit code → a file written and read back →
    stop → start → exec → delete, each step reaching the provider."""
    d, dbl = env, env.doubles[p]
    st, sb = create(d, p, f"life-{p}", envs=[{"name": "GREETING", "value": "hello there"}],
                    secrets=[{"name": "API_TOKEN", "value": d.seal("s3cret-value")}])
    assert st == 200, sb
    assert (sb["provider"], sb["backend"], sb["status"]) == (p, p, "RUNNING"), sb
    rid = sb["remoteId"]
    assert rid in alive(dbl), (rid, dbl.sandboxes.keys())
    st, got = d.sandbox("getSandbox", sb["id"])
    assert st == 200 and got["sandbox"]["remoteId"] == rid and got["sandbox"]["backend"] == p
    listed = [x for x in d.call("io.pocketenv.actor.getActorSandboxes",
                                {"did": "owner.local", "limit": 100})[1]["sandboxes"]
              if x["id"] == sb["id"]]
    assert listed and listed[0]["backend"] == p

    out = d.sh(sb["id"], "echo out; echo err >&2; exit 3")
    assert (out["stdout"], out["stderr"], out["exitCode"]) == ("out\n", "err\n", 3), out
    # variables and secrets are the remote process's environment
    out = d.sh(sb["id"], "printenv GREETING; printenv API_TOKEN")
    assert out["stdout"] == "hello there\ns3cret-value\n", out
    assert d.sh(sb["id"], "echo -n data > /tmp/f.txt")["exitCode"] == 0
    assert d.sh(sb["id"], "cat /tmp/f.txt")["stdout"] == "data"

    st, o = d.sandbox("stopSandbox", sb["id"])
    assert st == 200, o
    assert d.wait_status(sb["id"], ["STOPPED"])
    assert state(dbl, rid) in ("stopped", "stopping", "paused"), state(dbl, rid)
    st, o = d.sandbox("exec", sb["id"], {"command": "true"})
    assert st == 400 and "not running" in o["message"], o
    st, o = d.sandbox("startSandbox", sb["id"])
    assert st == 200, o
    d.wait_status(sb["id"], ["RUNNING"])
    assert d.sh(sb["id"], "cat /tmp/f.txt")["stdout"] == "data"  # its files stayed

    st, o = d.sandbox("deleteSandbox", sb["id"])
    assert st == 200, o
    assert state(dbl, rid) in (None, "destroying", "destroyed"), state(dbl, rid)
    assert d.sandbox("getSandbox", sb["id"])[0] == 404
    no_secret_anywhere(d, dbl.key)
    no_secret_anywhere(d, "s3cret-value")


def test_modal_through_the_daemon(env):
    """createSandbox with provider modal and upstream's two sealed token
    fields: the sandbox runs on the Modal double (gRPC), execs come back
    with their exit codes and environment, files stay, delete terminates
    it; a missing token half is a clear 400 and nothing is made."""
    d, dbl = env, env.doubles["modal"]
    before = set(dbl.sandboxes)
    half = {"base": "busybox", "name": "modal-half", "provider": "modal", "modalTokenId": d.seal(dbl.token_id)}
    st, o = d.call(SB + "createSandbox", body=half, token="owner", timeout=60)
    assert st == 400 and "modalTokenSecret" in o["message"], o
    assert set(dbl.sandboxes) == before and "modal-half" not in names(d)
    st, sb = create(d, "modal", "life-modal", envs=[{"name": "GREETING", "value": "hello there"}])
    assert st == 200, sb
    assert (sb["provider"], sb["backend"], sb["status"]) == ("modal", "modal", "RUNNING"), sb
    rid = sb["remoteId"]
    assert state(dbl, rid) == "running"
    out = d.sh(sb["id"], "echo out; echo err >&2; exit 3")
    assert (out["stdout"], out["stderr"], out["exitCode"]) == ("out\n", "err\n", 3), out
    assert d.sh(sb["id"], "printenv GREETING")["stdout"] == "hello there\n"
    assert d.sh(sb["id"], "echo -n data > /tmp/f.txt")["exitCode"] == 0
    assert d.sh(sb["id"], "cat /tmp/f.txt")["stdout"] == "data"
    st, o = d.sandbox("deleteSandbox", sb["id"])
    assert st == 200, o
    assert state(dbl, rid) is None and dbl.sandboxes[rid].status == "terminated"
    assert d.sandbox("getSandbox", sb["id"])[0] == 404
    no_secret_anywhere(d, dbl.token_secret)
    assert all(r["authorized"] for r in dbl.requests if not r["route"].startswith("exec"))


def test_credentials_stored_sealed_and_shown_redacted(env):
    """The key of a create is kept sealed (never in the store as text),
    getPreferences shows the redaction, putPreferences replaces it."""
    d, dbl = env, env.doubles["daytona"]
    st, sb = create(d, "daytona", "creds-dtn")
    assert st == 200, sb
    st, prefs = d.call(SB + "getPreferences", {"id": sb["id"]})
    assert st == 200, prefs
    assert prefs[0]["name"] == "daytona" and prefs[0]["organizationId"] == "org-1"
    assert prefs[0]["redactedApiKey"].startswith(dbl.key[:11]) and "*" in prefs[0]["redactedApiKey"]
    assert dbl.key not in json.dumps(prefs)
    with open(os.path.join(d.data, "pocketenv.db"), "rb") as f:
        assert dbl.key.encode() not in f.read(), "the key is in the store as text"
    # a wrong key put with putPreferences is what the next call uses
    st, o = d.call(SB + "putPreferences", body={"sandboxId": sb["id"], "preferences": [
        {"$type": "io.pocketenv.sandbox.defs#sandboxProviderPref", "name": "daytona",
         "apiKey": d.seal("dtn-wrong-key-0123456789"), "organizationId": "org-1"}]})
    assert st == 200, o
    st, o = d.sandbox("exec", sb["id"], {"command": "true"})
    assert st == 502 and o["message"].startswith("daytona rejected the API key"), o
    assert "dtn-wrong-key" not in json.dumps(o)
    st, o = d.call(SB + "putPreferences", body={"sandboxId": sb["id"], "preferences": [
        {"$type": "io.pocketenv.sandbox.defs#sandboxProviderPref", "name": "daytona",
         "apiKey": d.seal(dbl.key), "organizationId": "org-1"}]})
    assert st == 200, o
    assert d.sh(sb["id"], "echo back")["stdout"] == "back\n"
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
    no_secret_anywhere(d, "dtn-wrong-key-0123456789")


def test_operator_credential(env):
    """hopx has an operator-wide key in the daemon's configuration: a
    create without one works with it."""
    d, dbl = env, env.doubles["hopx"]
    st, sb = d.call(SB + "createSandbox", body={"base": "busybox", "name": "op-hopx",
                                                "provider": "hopx"}, timeout=60)
    assert st == 200, sb
    assert sb["remoteId"] in alive(dbl)
    assert d.sh(sb["id"], "echo op")["stdout"] == "op\n"
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
    assert sb["remoteId"] not in alive(dbl)


def test_bad_input(env):
    """Unknown provider, missing and wrong credentials, a key that is not
    sealed: clear errors, nothing made on either side."""
    d, dbl = env, env.doubles["daytona"]
    before, made, had = names(d), len(dbl.seen("create")), alive(dbl)
    st, o = d.call(SB + "createSandbox", body={"base": "busybox", "name": "x-unknown",
                                                "provider": "azure"})
    assert st == 400, o
    st, o = d.call(SB + "createSandbox", body={"base": "busybox", "name": "x-missing",
                                                "provider": "daytona"})
    assert st == 400 and "daytonaApiKey" in o["message"], o
    st, o = d.call(SB + "createSandbox", body={"base": "busybox", "name": "x-plain",
                                                "provider": "daytona", "daytonaApiKey": dbl.key})
    assert st == 400 and "sealed" in o["message"], o
    assert dbl.key not in json.dumps(o)
    assert len(dbl.seen("create")) == made, "a refused create reached the provider"
    for bad in [{"daytonaApiKey": 42}, {"daytonaApiKey": ""}, {"daytonaApiKey": "x" * 100000},
                {"daytonaApiKey": d.seal("k" * 5000)},
                {"daytonaApiKey": d.seal(dbl.key), "daytonaOrganizationId": "o" * 300}]:
        st, o = d.call(SB + "createSandbox", body={"base": "busybox", "name": "x-bad",
                                                    "provider": "daytona", **bad})
        assert st == 400, (list(bad), o)
    assert len(dbl.seen("create")) == made, "a refused create reached the provider"
    st, o = create(d, "daytona", "x-wrong", key="dtn-wrong-key-0123456789")
    assert st == 502 and o["message"].startswith("daytona rejected the API key"), o
    assert names(d) == before, "a row was left"
    assert alive(dbl) == had, alive(dbl)
    no_secret_anywhere(d, "dtn-wrong-key-0123456789", [o])
    no_secret_anywhere(d, dbl.key, [o])


@pytest.mark.parametrize("p", ["daytona", "e2b"])
def test_provider_down_leaves_nothing_and_a_retry_works(env, p):
    """The provider makes the sandbox and then stops answering: 504, no
    row here, no sandbox there; the same create again works."""
    d, dbl = env, env.doubles[p]
    before, had = names(d), set(alive(dbl))
    dbl.fault("get", hang=True, times=1)
    t = time.monotonic()
    st, o = create(d, p, f"down-{p}")
    assert st == 504, o
    assert time.monotonic() - t < 30
    assert p in o["message"] and "did not answer" in o["message"], o
    assert names(d) == before
    assert alive(dbl) == had, f"left on {p}: {alive(dbl) - had}"
    dbl.clear_faults()
    dbl.fault("create", status=503, times=1)
    st, o = create(d, p, f"down-{p}")
    assert st == 502 and p in o["message"], o
    assert names(d) == before
    dbl.clear_faults()
    st, sb = create(d, p, f"down-{p}")
    assert st == 200, sb
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_capability_the_provider_lacks_is_501(env):
    """Vercel (v1) cannot start a stopped sandbox: 501 naming provider and
    capability, and the sandbox stays as it was. Nor has it egress denials
    or an egress policy of ours, nor our code-server."""
    d = env
    st, sb = create(d, "vercel", "vc-nostart")
    assert st == 200, sb
    assert d.sh(sb["id"], "echo vc")["stdout"] == "vc\n"
    assert d.sandbox("stopSandbox", sb["id"])[0] == 200
    st, o = d.sandbox("startSandbox", sb["id"])
    assert st == 501 and o["error"] == "NotSupported", o
    assert o["message"] == "not supported by vercel: start", o
    assert d.sandbox("getSandbox", sb["id"])[1]["sandbox"]["status"] == "STOPPED"
    # our egress proxy never sees a provider's traffic: no empty list that
    # would read as "nothing was refused"
    st, o = d.call(SB + "getNetworkDenials", {"id": sb["id"]})
    assert st == 501 and o["message"] == "not supported by vercel: egress denials", o
    # nor an egress policy: accepted, it would read as enforced
    deny = {"mode": "allowlist", "allowDomains": ["example.com"]}
    st, o = d.call(SB + "putNetworkPolicy", {"id": sb["id"]}, body={"policy": deny})
    assert st == 501 and o["message"].startswith("not supported by vercel: egress policy"), o
    assert d.call(SB + "getNetworkPolicy", {"id": sb["id"]})[1]["isDefault"] is True
    before = names(d)
    st, o = create(d, "vercel", "vc-policy", networkPolicy=deny)
    assert st == 501 and o["message"].startswith("not supported by vercel: egress policy"), o
    assert names(d) == before  # nothing half-made
    st, o = create(d, "vercel", "vc-novscode")  # a running one: not "not running"
    assert st == 200, o
    st, out = d.sandbox("exposeVscode", o["id"])
    assert st == 501 and out["message"] == "not supported by vercel: exposeVscode", out
    assert d.sandbox("deleteSandbox", o["id"])[0] == 200
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_snapshot_and_fork_where_the_provider_has_none_is_501(env):
    """Hopx has no snapshots: createSnapshot and forkSandbox of a hopx
    sandbox answer 501 naming the provider and the capability, and make
    nothing (no snapshot, no fork row)."""
    d = env
    st, sb = create(d, "hopx", "hx-nosnap")
    assert st == 200, sb
    before = names(d)
    st, o = d.sandbox("createSnapshot", sb["id"], {"name": "remote-snap"})
    assert st == 501 and o["error"] == "NotSupported", o
    assert o["message"] == "not supported by hopx: snapshot", o
    st, o = d.sandbox("forkSandbox", sb["id"], {"count": 2})
    assert st == 501 and o["message"] == "not supported by hopx: snapshot", o
    assert not [s for s in d.call(SB + "getSnapshots")[1]["snapshots"] if s["name"] == "remote-snap"]
    assert names(d) == before
    assert d.sh(sb["id"], "echo still")["stdout"] == "still\n"
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def cat(d, p, sid, path):
    """A file's bytes as an exec of `cat` prints them. Blaxel's exec output
    is its line log stream, which ends a last line without a newline with
    one: that newline is the stream's, not the file's."""
    out = d.sh(sid, f"cat {path}")["stdout"]
    return out[:-1] if p == "blaxel" and out.endswith("\n") else out


def snapshot_of(d, name):
    st, o = d.call(SB + "getSnapshot", {"id": name})
    return o["snapshot"] if st == 200 else None


@pytest.mark.parametrize("p", ["daytona", "e2b", "vercel", "blaxel"])
def test_remote_snapshot_restore_fork_and_rm(env, p):
    """Through our daemon, on the provider: a file written, a snapshot
    taken there (the row says where), the source deleted; a sandbox made
    from the snapshot has the file; fork -n 3 of it makes three
    independent sandboxes there; deleting the snapshots deletes them at the
    provider, with the credential they keep (their sandboxes are gone)."""
    d, dbl = env, env.doubles[p]
    key = dbl.key
    st, src = create(d, p, f"snap-src-{p}")
    assert st == 200, src
    assert d.sh(src["id"], "echo -n kept > /tmp/snap.txt")["exitCode"] == 0
    st, o = d.sandbox("createSnapshot", src["id"], {"name": f"rs-{p}"})
    assert st == 200, o
    snap = o["snapshot"]
    assert snap["provider"] == p and snap["sandboxId"] == src["id"], snap
    assert len(dbl.snapshots) == 1, dbl.snapshots
    (kept,) = dbl.snapshots.values()
    assert bytes(kept["fs"].files["/tmp/snap.txt"]) == b"kept"
    if p == "vercel":  # Vercel stops a sandbox to snapshot it (v1 cannot start it again)
        assert d.sandbox("getSandbox", src["id"])[1]["sandbox"]["status"] == "STOPPED"
    assert d.sandbox("deleteSandbox", src["id"])[0] == 200

    st, sb = create(d, p, f"snap-new-{p}", base=f"snapshot:rs-{p}")
    assert st == 200 and sb["status"] == "RUNNING", sb
    assert cat(d, p, sb["id"], "/tmp/snap.txt") == "kept"

    st, o = d.sandbox("forkSandbox", sb["id"], {"count": 3})
    assert st == 200, o
    forks = [f["id"] for f in o["sandboxes"]]
    assert len(forks) == 3 and snapshot_of(d, o["snapshot"])["provider"] == p
    for f in forks:
        got = d.wait_status(f, ["RUNNING", "FAILED"], timeout=30)
        assert got["status"] == "RUNNING" and got["backend"] == p, got
    for i, f in enumerate(forks):
        assert d.sh(f, f"echo -n fork{i} > /tmp/mine")["exitCode"] == 0
        assert cat(d, p, f, "/tmp/snap.txt") == "kept"
    for i, f in enumerate(forks):
        assert cat(d, p, f, "/tmp/mine") == f"fork{i}"
    if p != "vercel":  # the source runs on (Vercel stopped it)
        assert d.sh(sb["id"], "cat /tmp/mine")["exitCode"] != 0
    for x in forks + [sb["id"]]:
        assert d.sandbox("deleteSandbox", x)[0] == 200

    assert len(dbl.snapshots) == 2
    for name in (f"rs-{p}", o["snapshot"]):
        assert d.call(SB + "deleteSnapshot", {"id": name}, body={})[0] == 200
    wait_for(lambda: not dbl.snapshots, 20, f"the snapshots to go at {p}")
    assert [r for r in dbl.requests if r["route"] == "snapshot.delete" and r["status"] < 300]
    no_secret_anywhere(d, key, [snap])


@pytest.mark.parametrize("p", ["blaxel", "sprites"])
def test_remote_snapshot_restored_in_place(env, p):
    """Blaxel and Sprites put a sandbox back to one of its own snapshots in
    place (restoreSnapshot): what it wrote since is gone, it keeps its id
    and runs on. Onto another sandbox: 400 saying so. Sprites' checkpoints
    make no new sandbox: a fork, or a create from one, is 501 naming
    sprites and snapshot-base, and makes nothing. rm reaches Blaxel; a
    Sprites checkpoint has no delete there and goes with its sprite."""
    d, dbl = env, env.doubles[p]
    # Blaxel: a sized source, whose forks run with its snapshot's memory
    st, src = create(d, p, f"rip-{p}", **({"memory": 2} if p == "blaxel" else {}))
    assert st == 200, src
    st, other = create(d, p, f"rip-other-{p}")
    assert st == 200, other
    assert d.sh(src["id"], "echo -n before > /tmp/r.txt")["exitCode"] == 0
    st, o = d.sandbox("createSnapshot", src["id"], {"name": f"rip-{p}"})
    assert st == 200 and o["snapshot"]["provider"] == p, o
    assert len(dbl.snapshots) == 1
    assert d.sh(src["id"], "echo -n after > /tmp/r.txt; echo -n new > /tmp/n.txt")["exitCode"] == 0
    st, o = d.sandbox("restoreSnapshot", src["id"], {"snapshot": f"rip-{p}"})
    assert st == 200 and o["sandboxId"] == src["id"], o
    assert cat(d, p, src["id"], "/tmp/r.txt") == "before"
    assert d.sh(src["id"], "cat /tmp/n.txt")["exitCode"] != 0
    assert d.sandbox("getSandbox", src["id"])[1]["sandbox"]["status"] == "RUNNING"
    route = {"blaxel": "snapshot.restore", "sprites": "checkpoint.restore"}[p]
    assert [r for r in dbl.requests if r["route"] == route and r["status"] == 200]

    st, o = d.sandbox("restoreSnapshot", other["id"], {"snapshot": f"rip-{p}"})
    assert st == 400 and "was taken of another sandbox" in o["message"], o
    st, o = d.sandbox("restoreSnapshot", src["id"], {"snapshot": "nosuch"})
    assert st == 404 and o["error"] == "SnapshotNotFound", o
    if p == "sprites":
        before = names(d)
        st, o = d.sandbox("forkSandbox", src["id"], {"count": 2})
        assert st == 501 and o["message"].startswith("not supported by sprites: snapshot-base"), o
        st, o = create(d, p, "rip-from", base=f"snapshot:rip-{p}")
        assert st == 501 and o["message"].startswith("not supported by sprites: snapshot-base"), o
        assert "restoreSnapshot" in o["message"], o
        assert names(d) == before
        # a second checkpoint, kept until its sprite goes: then its row goes too
        st, o = d.sandbox("createSnapshot", src["id"], {"name": "rip-sprites-kept"})
        assert st == 200, o
    if p == "blaxel":  # the fork has the memory it asks (the source's, its snapshot's)
        st, o = d.sandbox("forkSandbox", src["id"], {"count": 1})
        assert st == 200, o
        (f,) = [x["id"] for x in o["sandboxes"]]
        got = d.wait_status(f, ["RUNNING", "FAILED"], timeout=30)
        assert got["status"] == "RUNNING", got
        assert dbl.sandboxes[got["remoteId"]].spec["runtime"]["memory"] == 2048
        assert cat(d, p, f, "/tmp/r.txt") == "before"
        st, o2 = create(d, p, "rip-bigger", base=f"snapshot:{o['snapshot']}", memory=4)
        assert st == 501 and "memory size of a sandbox from a snapshot" in o2["message"], o2
        assert "2048 MB" in o2["message"] and "rip-bigger" not in names(d), o2
        assert d.sandbox("deleteSandbox", f)[0] == 200
        assert d.call(SB + "deleteSnapshot", {"id": o["snapshot"]}, body={})[0] == 200
    assert d.call(SB + "deleteSnapshot", {"id": f"rip-{p}"}, body={})[0] == 200
    assert snapshot_of(d, f"rip-{p}") is None
    if p == "blaxel":
        wait_for(lambda: not dbl.snapshots, 20, "the snapshot to go at blaxel")
    else:  # no delete call there: the checkpoints go with their sprite
        assert len(dbl.snapshots) == 2
    for x in (src, other):
        assert d.sandbox("deleteSandbox", x["id"])[0] == 200
    wait_for(lambda: not dbl.snapshots, 20, f"nothing left at {p}")
    if p == "sprites":  # its checkpoint is gone there: no row lists it
        assert snapshot_of(d, "rip-sprites-kept") is None
        assert "event=snapshot_gone_with_sandbox" in d.log_text()
    if p == "sprites":
        no_secret_anywhere(d, dbl.key)


def test_remote_snapshot_deletion_refused_is_retried(env):
    """The provider refuses a snapshot's deletion once: the background job
    logs it (without the credential) and deletes it at the next tick."""
    d, dbl = env, env.doubles["daytona"]
    st, sb = create(d, "daytona", "snap-retry")
    assert st == 200, sb
    st, o = d.sandbox("createSnapshot", sb["id"], {"name": "rs-retry"})
    assert st == 200, o
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
    f = dbl.fault("snapshot.delete", times=1, status=409, message="snapshot in use")
    assert d.call(SB + "deleteSnapshot", {"id": "rs-retry"}, body={})[0] == 200
    wait_for(lambda: not dbl.snapshots, 20, "the snapshot to go at daytona after a refusal")
    assert f.hits == 1
    log = d.log_text()
    assert f"event=snapshot_remove_failed snapshot={o['snapshot']['id']}" in log
    assert "provider=daytona" in log
    no_secret_anywhere(d, dbl.key)


def test_remote_snapshot_stays_where_it_is_kept(env):
    """A daytona snapshot makes daytona sandboxes only: asking another
    provider (or this daemon's runtime) is a 400 that says where it is."""
    d = env
    st, sb = create(d, "daytona", "snap-where")
    assert st == 200, sb
    st, o = d.sandbox("createSnapshot", sb["id"], {"name": "rs-where"})
    assert st == 200, o
    before = names(d)
    st, o = create(d, "e2b", "snap-elsewhere", base="snapshot:rs-where")
    assert st == 400 and "kept by daytona" in o["message"], o
    assert names(d) == before
    # Daytona makes new sandboxes from a snapshot; it cannot put one back in place
    st, o = d.sandbox("restoreSnapshot", sb["id"], {"snapshot": "rs-where"})
    assert st == 501 and o["error"] == "NotSupported", o
    assert o["message"].startswith("not supported by daytona: snapshot-restore"), o
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
    assert d.call(SB + "deleteSnapshot", {"id": "rs-where"}, body={})[0] == 200
    wait_for(lambda: not env.doubles["daytona"].snapshots, 20, "the snapshot to go")


@pytest.mark.parametrize("p,action", [("daytona", "stop"), ("e2b", "stop"), ("hopx", "pause"),
                                      ("daytona", "snapshot-then-stop")])
def test_idle_policy_stops_a_remote_sandbox(env, p, action):
    """A remote sandbox idle past its policy's timeout is stopped through
    its provider (which keeps its files); pause, which no remote adapter
    declares, comes to a stop that says why; snapshot-then-stop takes the
    provider's snapshot first. A start brings it back."""
    d, dbl = env, env.doubles[p]
    name = f"idle-{p}-{action}"
    st, sb = create(d, p, name, idlePolicy={"action": action, "timeout": 1})
    assert st == 200, sb
    rid = sb["remoteId"]
    assert d.sh(sb["id"], "echo -n kept > /tmp/k")["exitCode"] == 0  # served: activity
    got = d.wait_status(sb["id"], ["STOPPED"], timeout=30)
    want = {"stop": "stopped after 1s without activity",
            "pause": f"stopped after 1s without activity ({p} cannot pause)",
            "snapshot-then-stop": "snapshot taken and stopped after 1s without activity"}[action]
    assert got["statusReason"] == want, got
    if action == "snapshot-then-stop":
        (snap,) = [x for x in d.call(SB + "getSnapshots")[1]["snapshots"]
                   if x["name"].startswith(f"{name}-idle-")]
        assert snap["provider"] == p and [v for v in dbl.snapshots.values()
                                          if bytes(v["fs"].files.get("/tmp/k", b"")) == b"kept"]
        assert d.call(SB + "deleteSnapshot", {"id": snap["id"]}, body={})[0] == 200
        wait_for(lambda: not dbl.snapshots, 20, "the idle snapshot to go")
    assert state(dbl, rid) in ("stopped", "stopping", "paused"), state(dbl, rid)
    assert d.sandbox("startSandbox", sb["id"])[0] == 200
    d.wait_status(sb["id"], ["RUNNING"])
    assert d.sh(sb["id"], "cat /tmp/k")["stdout"] == "kept"
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


# The double's word for a paused sandbox and for one running again.
PAUSED = {"e2b": ("paused", "running"), "daytona": ("paused", "started"),
          "runloop": ("suspended", "running")}


@pytest.mark.parametrize("p", sorted(PAUSED))
def test_idle_policy_pauses_a_remote_sandbox_that_can(env, p):
    """E2B and Daytona pause with memory kept, Runloop suspends (its disk
    kept): the idle policy's pause pauses it there (the row stays RUNNING,
    paused), and the next exec resumes it and says so; Hopx, without pause,
    comes to a stop saying why (above)."""
    d, dbl = env, env.doubles[p]
    paused, running = PAUSED[p]
    st, sb = create(d, p, f"idle-{p}-pause", idlePolicy={"action": "pause", "timeout": 1})
    assert st == 200, sb
    rid = sb["remoteId"]
    assert d.sh(sb["id"], "echo -n kept > /tmp/k")["exitCode"] == 0  # served: activity
    if p == "runloop":  # its suspend ends processes: a service starts again at the resume
        st, o = d.call(SV + "addService", {"sandboxId": sb["id"]}, body={"service": {
            "name": "web", "command": "echo up-rl; sleep 60"}})
        assert st == 200, o

        def runs():
            return [e for e in list(dbl.sandboxes[rid].execs) if "up-rl" in json.dumps(e)]
        wait_for(runs, 10, "the service on runloop")
    n = len(runs()) if p == "runloop" else 0
    wait_for(lambda: state(dbl, rid) == paused, 30, f"the idle pause at {p}")
    wait_for(lambda: d.sandbox("getSandbox", sb["id"])[1]["sandbox"].get("paused") is True, 10,
             "the row to say paused")
    if p == "runloop":  # ended with the suspend, and not restarted while paused
        wait_for(lambda: services(d, sb["id"])["web"]["status"] == "STOPPED", 10,
                 "the service to end with the suspend")
        assert "paused" in d.call(SV + "getServiceLogs", {"serviceId": o["service"]["id"]})[1]["logs"]
    got = d.sandbox("getSandbox", sb["id"])[1]["sandbox"]
    assert got["status"] == "RUNNING", got
    assert d.sh(sb["id"], "cat /tmp/k")["stdout"] == "kept"  # resumed by the exec
    assert state(dbl, rid) == running
    got = d.sandbox("getSandbox", sb["id"])[1]["sandbox"]
    assert got.get("resumedBy") == "exec" and not got.get("paused"), got
    if p == "runloop":  # its process ended with the suspend: a new one runs
        wait_for(lambda: len(runs()) > n, 10, "the service started again")
        assert services(d, sb["id"])["web"]["status"] == "RUNNING"
    assert d.sandbox("putIdlePolicy", sb["id"], {"action": "stop", "timeout": 3600})[0] == 200
    # our E2B API's pause reaches the provider's too
    from test_e2b import e2b_key
    req = urllib.request.Request(f"{d.url}/sandboxes/{sb['id']}/pause", data=b"", method="POST",
                                 headers={"X-API-Key": e2b_key(d.token)})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 204
    assert state(dbl, rid) == paused
    assert d.sh(sb["id"], "cat /tmp/k")["stdout"] == "kept" and state(dbl, rid) == running
    if p != "runloop":  # a terminal resumes it too, and says so (runloop's PTY: not ours)
        from wsclient import WS
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 204
        assert state(dbl, rid) == paused
        port = int(d.url.rsplit(":", 1)[1])
        ws = WS(port, f"/tty/{sb['id']}/ws?sessionId=wake&token={d.token}")
        assert ws.status == 101, ws.head
        ws.read_until("resumed it")
        assert state(dbl, rid) == running
        ws.send("exit\n")
        ws.wait_close()
        ws.close()
        got = d.sandbox("getSandbox", sb["id"])[1]["sandbox"]
        assert got.get("resumedBy") == "terminal" and not got.get("paused"), got
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_client_cannot_choose_the_provider_url(env):
    """A URL in the request (as an SSRF would put it) is never called: the
    URL is the operator's alone."""
    d, other = env, env.other
    url = other.url + "/api"
    st, sb = create(d, "daytona", "ssrf", apiUrl=url, daytonaApiUrl=url, baseUrl=url, url=url,
                    providerOptions={"apiUrl": url})
    if st == 200:
        assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
    assert other.requests == [], "the daemon called a URL the client chose"


def test_another_user_cannot_reach_a_remote_sandbox(env):
    d, dbl = env, env.doubles["e2b"]
    st, sb = create(d, "e2b", "mine-e2b")
    assert st == 200, sb
    bob = d.token_for("did:plc:bob-remote")
    d.others = getattr(d, "others", []) + [bob]
    execs = len(dbl.seen("exec"))
    for method in ["getSandbox", "exec", "stopSandbox", "startSandbox", "deleteSandbox"]:
        st, o = d.sandbox(method, sb["id"], token=bob)
        assert st == 404 and o["error"] == "SandboxNotFound", (method, o)
    st, o = d.call(SB + "getPreferences", {"id": sb["id"]}, token=bob)
    assert st == 404, o
    st, o = d.call("io.pocketenv.file.addFile", body={"file": {
        "sandboxId": sb["id"], "path": "/tmp/x", "content": d.seal("x")}}, token=bob)
    assert st == 404, o
    # nor its terminal, nor the streaming exec
    from wsclient import WS
    port = int(d.url.rsplit(":", 1)[1])
    ws = WS(port, f"/tty/{sb['id']}/ws?sessionId=b&token={bob}")
    assert ws.status in (403, 404), ws.head
    ws = WS(port, f"/exec/{sb['id']}/ws", headers={"Authorization": f"Bearer {bob}"})
    assert ws.status in (403, 404), ws.head
    assert len(dbl.seen("exec")) == execs and sb["remoteId"] in alive(dbl)
    assert not dbl.seen("fs.write")
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_provider_config_is_checked(tmp_path):
    """The operator's file: private, known providers, known fields."""
    import subprocess
    from conftest import BIN
    cases = [({"daytona": {"url": "http://127.0.0.1:1"}}, 0o644, "chmod 600"),
             ({"nosuch": {}}, 0o600, "not a remote provider"),
             ({"daytona": {"kee": "x"}}, 0o600, "unknown field 'kee'"),
             ({"daytona": {"url": "ftp://x"}}, 0o600, "http:// or https://"),
             ({"modal": {"ports": [3000, 70000]}}, 0o600, "modal.ports: a port is 1 to 65535"),
             ({"modal": {"ports": list(range(1, 10))}}, 0o600, "at most 8 ports"),
             ({"daytona": {"previewUrl": "http://x/{port}"}}, 0o600, "only hopx and runloop"),
             ({"hopx": {"previewUrl": "x/{port}"}}, 0o600, "previewUrl must be http://"),
             ({"e2b": {"previewCaFile": "/etc/hostname"}}, 0o600, "only hopx and runloop"),
             ({"runloop": {"previewCaFile": "ca.pem"}}, 0o600, "must be an absolute path"),
             ({"hopx": {"previewCaFile": "/nonexistent/ca.pem"}}, 0o600,
              "previewCaFile /nonexistent/ca.pem"),
             ({"runloop": {"previewCaFile": str(tmp_path / "notpem")}}, 0o600,
              "not a PEM certificate file")]
    (tmp_path / "notpem").write_text("a CA file that is no certificate\n")
    for conf, mode, want in cases:
        path = tmp_path / "p.json"
        path.write_text(json.dumps(conf))
        os.chmod(path, mode)
        r = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:1", "--data",
                            str(tmp_path / "data"), "--provider-config", str(path)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and want in r.stderr, (conf, r.stderr)


def test_files_and_volumes_of_a_remote_sandbox(env):
    """A file resource goes in through the provider at once and again at
    each start; a volume the provider cannot mount is said on the record."""
    d, dbl = env, env.doubles["daytona"]
    st, sb = create(d, "daytona", "res-dtn")
    assert st == 200, sb
    st, out = d.call("io.pocketenv.file.addFile", body={"file": {
        "sandboxId": sb["id"], "path": "/opt/app/conf.json", "content": d.seal('{"a": 1}\n')}})
    assert st == 200, out
    assert d.sh(sb["id"], "cat /opt/app/conf.json")["stdout"] == '{"a": 1}\n'
    assert "/opt/app/conf.json" in dbl.sandboxes[sb["remoteId"]].fs.files
    st, out = d.call("io.pocketenv.volume.addVolume", body={"volume": {
        "name": "data-dtn", "sandboxId": sb["id"], "path": "/data"}})
    assert st == 200, out
    assert d.sandbox("stopSandbox", sb["id"])[0] == 200
    # the provider keeps files across a stop; the start writes them again
    del dbl.sandboxes[sb["remoteId"]].fs.files["/opt/app/conf.json"]
    assert d.sandbox("startSandbox", sb["id"])[0] == 200
    got = d.wait_status(sb["id"], ["RUNNING"])
    assert got.get("statusReason", "").startswith("daytona cannot mount volumes: 1 volume"), got
    assert d.sh(sb["id"], "cat /opt/app/conf.json")["stdout"] == '{"a": 1}\n'
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


@pytest.mark.parametrize("p", ["daytona", "e2b", "hopx", "cloudflare", "modal"])
def test_terminal_of_a_remote_sandbox(env, p):
    """The terminal endpoints we serve (WebSocket and SSE) reach the
    provider's PTY: typed lines run there and come back, a resize reaches
    it (Modal: the size asked at start, its router having no resize), the
    shell's exit ends the session."""
    from wsclient import SSE, WS
    d, dbl = env, env.doubles[p]
    st, sb = create(d, p, f"term-{p}")
    assert st == 200, sb
    port = int(d.url.rsplit(":", 1)[1])
    ws = WS(port, f"/tty/{sb['id']}/ws?sessionId=t1&cols=100&rows=30&token={d.token}")
    assert ws.status == 101, ws.head
    ws.send("echo remote-hello\n")
    ws.read_until("remote-hello")
    pty = dbl.sandboxes[sb["remoteId"]].pty[-1]
    if p == "modal":
        assert (pty["cols"], pty["rows"]) == (100, 30), pty
        for i in range(2):  # each line typed is a stdin call of its own, in order
            ws.send(f"echo line-{i}\n")
            ws.read_until(f"line-{i}\r\n")
    else:
        assert (100, 30) in pty["resizes"], pty["resizes"]
    assert b"echo remote-hello\n" in bytes(pty["input"])

    sse = SSE(port, f"/tty/{sb['id']}/stream?sessionId=t2", {"Authorization": f"Bearer {d.token}"})
    assert sse.status == 200, sse.head
    req_body = b"echo via-sse\n"
    import urllib.request
    req = urllib.request.Request(f"{d.url}/tty/{sb['id']}/input?sessionId=t2", data=req_body,
                                 method="POST", headers={"Authorization": f"Bearer {d.token}"})
    with urllib.request.urlopen(req, timeout=15) as r:
        assert r.status == 204
    sse.read_output_until("via-sse")
    sse.close()

    ws.send("exit 3\n")
    ws.wait_close()
    ws.close()
    no_secret_anywhere(d, dbl.key)
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


@pytest.mark.parametrize("p", ["e2b", "daytona", "modal"])
def test_streaming_exec_of_a_remote_sandbox(env, p):
    """/exec/:id/ws (`pocketenv exec`) runs the command on the provider:
    stdout and stderr apart as they come, stdin where the provider takes
    it (E2B, Modal; Daytona's command reads end of file), the exit code."""
    from test_exec_stream import collect
    from wsclient import WS
    d, dbl = env, env.doubles[p]
    st, sb = create(d, p, f"xs-{p}", envs=[{"name": "WHO", "value": "remote"}])
    assert st == 200, sb
    port = int(d.url.rsplit(":", 1)[1])
    ws = WS(port, f"/exec/{sb['id']}/ws", headers={"Authorization": f"Bearer {d.token}"})
    assert ws.status == 101, ws.head
    script = "cat; printenv WHO; printenv EXTRA; echo oops >&2; exit 7"
    ws.send(json.dumps({"argv": ["sh", "-c", script], "env": {"EXTRA": "x1"}}))
    out, err, code, close = collect(ws, stdin=b"hello\n")
    want_in = b"hello\n" if p in ("e2b", "modal") else b""
    assert (out, err, code, close) == (want_in + b"remote\nx1\n", b"oops\n", 7, 1000)
    assert any(r["route"].startswith("exec") for r in dbl.requests), "it never reached the provider"
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_cp_between_remote_sandboxes(env):
    """pushDirectory packs a directory on one provider (Daytona), and
    pullDirectory unpacks the copy on another (E2B): upstream's `cp`."""
    d = env
    st, a = create(d, "daytona", "cp-from")
    assert st == 200, a
    st, b = create(d, "e2b", "cp-to")
    assert st == 200, b
    assert d.sh(a["id"], "mkdir -p /work/sub; echo one > /work/a.txt; "
                         "echo two > /work/sub/b.txt")["exitCode"] == 0
    st, o = d.call(SB + "pushDirectory", body={"sandboxId": a["id"], "directoryPath": "/work"})
    assert st == 200, o
    st, o2 = d.call(SB + "pullDirectory", body={"sandboxId": b["id"], "uuid": o["uuid"],
                                                 "directoryPath": "/dest"})
    assert st == 200, o2
    assert d.sh(b["id"], "cat /dest/a.txt; cat /dest/sub/b.txt")["stdout"] == "one\ntwo\n"
    # docker cp's forms are this daemon's own: not on a provider
    st, o = d.call(SB + "pushDirectory", body={"sandboxId": a["id"], "directoryPath": "/work",
                                                "includeRoot": True})
    assert st == 501 and o["message"].endswith("not supported by daytona: copy with includeRoot"), o
    for sb in (a, b):
        assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_cp_of_a_directory_on_modal(env):
    """pushDirectory and pullDirectory (upstream's `cp`) on a Modal
    sandbox: the adapter lists, reads and writes through Modal's fs tool
    and we pack and unpack the tar, so a directory tree goes out and back."""
    d, dbl = env, env.doubles["modal"]
    st, sb = create(d, "modal", "cp-modal")
    assert st == 200, sb
    assert d.sh(sb["id"], "mkdir -p /work/sub; echo one > /work/a.txt; "
                          "echo two > /work/sub/b.txt")["exitCode"] == 0
    st, o = d.call(SB + "pushDirectory", body={"sandboxId": sb["id"], "directoryPath": "/work"})
    assert st == 200, o
    st, o2 = d.call(SB + "pullDirectory", body={"sandboxId": sb["id"], "uuid": o["uuid"],
                                                 "directoryPath": "/dest"})
    assert st == 200, o2
    assert d.sh(sb["id"], "cat /dest/a.txt; cat /dest/sub/b.txt")["stdout"] == "one\ntwo\n"
    files = dbl.sandboxes[sb["remoteId"]].fs.snapshot()
    assert bytes(files["/dest/sub/b.txt"]) == b"two\n", sorted(files)
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_preview_of_a_remote_sandbox_is_the_providers(env):
    """exposePort of a remote sandbox answers the provider's preview URL
    and the header it wants (Daytona's preview token, never the API key);
    the link answers with it and refuses without it."""
    import urllib.error
    import urllib.request
    d, dbl = env, env.doubles["daytona"]
    st, sb = create(d, "daytona", "pv-dtn")
    assert st == 200, sb
    st, o = d.call(SB + "exposePort", {"id": sb["id"]}, body={"port": 3000})
    assert st == 200, o
    url, headers = o["previewUrl"], o.get("previewHeaders", {})
    assert url.startswith(dbl.url) and dbl.key not in url and dbl.key not in json.dumps(o), o
    assert list(headers) == ["x-daytona-preview-token"], o
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=10)
    assert e.value.code == 401
    st, o = d.call(SB + "getExposedPorts", {"id": sb["id"]})
    assert st == 200 and o["ports"][0]["previewUrl"] == url, o
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_preview_of_a_modal_sandbox_is_its_tunnel(env):
    """A Modal sandbox gets a tunnel for each port of the operator's
    `ports` (asked at create: Modal opens none later); exposePort answers
    that tunnel's URL, which reaches the port; another port is 501."""
    import urllib.request
    d, dbl = env, env.doubles["modal"]
    st, sb = create(d, "modal", "pv-modal")
    assert st == 200, sb
    assert list(dbl.sandboxes[sb["remoteId"]].tunnels) == [3000]
    st, o = d.call(SB + "exposePort", {"id": sb["id"]}, body={"port": 3000})
    assert st == 200, o
    url = o["previewUrl"]
    assert url.startswith("http://127.0.0.1:") and not o.get("previewHeaders"), o
    assert dbl.key not in json.dumps(o) and dbl.token_secret not in json.dumps(o)
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200 and f"preview of {sb['remoteId']} port 3000" in r.read().decode()
    st, o = d.call(SB + "exposePort", {"id": sb["id"]}, body={"port": 8080})
    assert st == 501 and "not supported by modal: preview of port 8080" in o["message"], o
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


# What a create of each provider asks for, and where its double keeps it
# (the double's own record of the request it received).
IMAGE_AND_SIZES = {
    "daytona": ({"base": "daytonaio/sandbox:0.4.3", "vcpus": 2, "memory": 2, "disk": 8},
                lambda sb: (sb.snapshot, sb.cpu, sb.memory, sb.disk),
                ("daytonaio/sandbox:0.4.3", 2, 2, 8)),
    "runloop": ({"base": "bp-node", "vcpus": 2, "memory": 2, "disk": 8},
                lambda sb: (sb.blueprint, sb.launch.get("resource_size_request"),
                            sb.launch.get("custom_cpu_cores"), sb.launch.get("custom_gb_memory"),
                            sb.launch.get("custom_disk_size")),
                ("bp-node", "CUSTOM_SIZE", 2, 2, 8)),
    "e2b": ({"base": "my-team/py-template"}, lambda sb: sb.template, "my-team/py-template"),
    "hopx": ({"base": "code-interpreter"}, lambda sb: sb.template, "code-interpreter"),
    "blaxel": ({"base": "blaxel/base-image:latest", "memory": 2},
               lambda sb: (sb.spec["runtime"]["image"], sb.spec["runtime"]["memory"]),
               ("blaxel/base-image:latest", 2048)),
    "sprites": ({"vcpus": 2, "memory": 1, "disk": 8}, lambda sb: sb.config,
                {"cpus": 2, "ram_mb": 1024, "storage_gb": 8}),
    "vercel": ({"vcpus": 2}, lambda sb: sb.vcpus, 2),
}


@pytest.mark.parametrize("p", sorted(IMAGE_AND_SIZES))
def test_image_and_sizes_reach_the_provider(env, p):
    """createSandbox's base (an image, template, snapshot or blueprint of
    the provider) and its vcpus, memory and disk (GB) arrive in the
    provider's own create call, as the double recorded it; the record
    shows what was asked."""
    d, dbl = env, env.doubles[p]
    extra, got, want = IMAGE_AND_SIZES[p]
    body = dict(extra)
    body.setdefault("base", "debian")  # a plain base: the provider's default image
    st, sb = create(d, p, f"sized-{p}", **body)
    assert st == 200, sb
    assert got(dbl.sandboxes[sb["remoteId"]]) == want
    st, view = d.sandbox("getSandbox", sb["id"])
    assert st == 200
    for k in ("vcpus", "memory", "disk"):
        assert view["sandbox"].get(k) == extra.get(k), (k, view["sandbox"])
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_a_plain_base_is_the_providers_default(env):
    """busybox and debian (this daemon's plain bases) are the provider's
    own default image; no size asked is no size sent."""
    d = env
    for base in ("busybox", "debian"):
        st, sb = create(d, "e2b", f"plain-{base}", base=base)
        assert st == 200, sb
        assert env.doubles["e2b"].sandboxes[sb["remoteId"]].template == "base"
        assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
    st, sb = create(d, "daytona", "plain-dtn", base="debian")
    assert st == 200, sb
    made = env.doubles["daytona"].seen("create")[-1]
    assert made["status"] == 200 and "vcpus" not in sb, sb
    assert env.doubles["daytona"].sandboxes[sb["remoteId"]].snapshot == "daytonaio/sandbox:double"
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


REFUSED = [
    ("e2b", {"vcpus": 2}, "not supported by e2b: cpu size (the request's vcpus)"),
    ("hopx", {"memory": 2}, "not supported by hopx: memory size (the request's memory)"),
    ("blaxel", {"disk": 8}, "not supported by blaxel: disk size (the request's disk)"),
    ("vercel", {"memory": 2}, "not supported by vercel: memory size (the request's memory)"),
    ("vercel", {"base": "node22"}, "not supported by vercel: choice of image (the request's base)"),
    ("sprites", {"base": "ubuntu:22.04"},
     "not supported by sprites: choice of image (the request's base)"),
]


@pytest.mark.parametrize("p,extra,message", REFUSED, ids=[f"{p}-{list(x)[0]}" for p, x, _ in REFUSED])
def test_what_the_provider_cannot_take_is_501(env, p, extra, message):
    """An image or a size the provider has no field for is refused (501,
    naming the provider and the request's field) before anything reaches
    it, and leaves no row: never a sandbox of another size or image than
    asked."""
    d, dbl = env, env.doubles[p]
    before, made = names(d), len(dbl.seen("create"))
    body = {"base": "debian", **extra}
    st, o = create(d, p, f"refused-{p}", **body)
    assert (st, o.get("error"), o.get("message")) == (501, "NotSupported", message), o
    assert len(dbl.seen("create")) == made, "a refused create reached the provider"
    assert names(d) == before


def test_a_template_of_this_daemon_is_refused_on_a_provider(env):
    """openclaw is a template this daemon builds: no provider has it, so a
    remote create of it is 400 naming the provider, not the provider's
    default image in its place; a bad image name is 400 too."""
    d, dbl = env, env.doubles["e2b"]
    made = len(dbl.seen("create"))
    st, o = create(d, "e2b", "tmpl-e2b", base="openclaw")
    assert st == 400 and "openclaw" in o["message"] and "e2b" in o["message"], o
    st, o = create(d, "e2b", "tmpl-e2b", base="bad image;rm")
    assert st == 400, o
    assert len(dbl.seen("create")) == made


def test_preview_of_an_e2b_sandbox(env):
    """E2B's preview through exposePort: a self-hosted E2B (here its
    double) serves a port on its shared sandbox host, routed by the headers
    the answer names; the stand-in server of the double's sandbox answers
    through it, and the API key is no part of it."""
    import urllib.request
    d, dbl = env, env.doubles["e2b"]
    st, sb = create(d, "e2b", "pv-e2b")
    assert st == 200, sb
    st, o = d.call(SB + "exposePort", {"id": sb["id"]}, body={"port": 3000})
    assert st == 200, o
    url, headers = o["previewUrl"], o.get("previewHeaders", {})
    assert headers == {"E2b-Sandbox-Id": sb["remoteId"], "E2b-Sandbox-Port": "3000"}, o
    assert url.startswith(dbl.url) and dbl.key not in json.dumps(o), o
    with urllib.request.urlopen(urllib.request.Request(url + "index.html", headers=headers),
                                timeout=10) as r:
        assert r.status == 200
        assert r.read().decode() == f"preview of {sb['remoteId']} port 3000: GET /index.html\n"
    assert dbl.seen("preview")[-1]["status"] == 200
    st, o = d.call(SB + "getExposedPorts", {"id": sb["id"]})
    assert st == 200 and o["ports"][0]["previewUrl"] == url, o
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_preview_of_a_blaxel_sandbox(env):
    """Blaxel's preview is an object of its own: exposePort makes it (once:
    a second exposure of the port reads it back) and answers its URL, which
    reaches the stand-in server of the double's sandbox."""
    import urllib.request
    d, dbl = env, env.doubles["blaxel"]
    st, sb = create(d, "blaxel", "pv-blx")
    assert st == 200, sb
    st, o = d.call(SB + "exposePort", {"id": sb["id"]}, body={"port": 3000})
    assert st == 200, o
    url = o["previewUrl"]
    assert dbl.sandboxes[sb["remoteId"]].previews["port-3000"]["port"] == 3000
    assert dbl.key not in json.dumps(o) and "previewHeaders" not in o, o
    with urllib.request.urlopen(url + "app", timeout=10) as r:
        assert r.read().decode() == f"preview of {sb['remoteId']} port 3000: GET /app\n"
    assert d.call(SB + "unexposePort", {"id": sb["id"]}, body={"port": 3000})[0] == 200
    st, o = d.call(SB + "exposePort", {"id": sb["id"]}, body={"port": 3000})
    assert st == 200 and o["previewUrl"] == url, o
    assert len(dbl.seen("preview.create")) == 1
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def proxied(d, url, path="", token=None):
    """(status, body) of a request to our preview proxy at previewUrl url
    (Host form), with a Bearer token or none."""
    import http.client
    host = url.split("//", 1)[1].split("/", 1)[0]
    c = http.client.HTTPConnection("127.0.0.1", int(d.url.rsplit(":", 1)[1]), timeout=20)
    c.request("GET", "/" + path, headers={"Host": host, **(
        {"Authorization": f"Bearer {token}"} if token else {})})
    r = c.getresponse()
    out = (r.status, r.read().decode(errors="replace"))
    c.close()
    return out


@pytest.mark.parametrize("p", ["hopx", "runloop"])
def test_preview_through_our_proxy(env, p):
    """Hopx's preview hosts are public and Runloop's tunnel serves every
    port: both go through our preview proxy, so a remote port is private
    or public by the same rules as a local one. The stand-in server of the
    double's sandbox answers through our previewUrl for the owner; nobody
    else gets a private port; the provider's URL and Runloop's tunnel token
    reach no answer and no log line."""
    d, dbl = env, env.doubles[p]
    st, sb = create(d, p, "pv-" + p)
    assert st == 200, sb
    rid = sb["remoteId"]
    st, o = d.call(SB + "exposePort", {"id": sb["id"]}, body={"port": 3000})
    assert st == 200, o
    url = o["previewUrl"]
    assert url.startswith("http://3000-") and ".localhost:" in url, o
    assert "previewHeaders" not in o and dbl.url not in json.dumps(o) and "shareUrl" in o, o
    st, body = proxied(d, url, "index.html", token=d.token)
    assert (st, body) == (200, f"preview of {rid} port 3000: GET /index.html\n")
    # another user: as missing; nobody: must sign in; the share URL opens it
    bob = d.token_for("did:plc:bob-preview")
    assert proxied(d, url, "index.html", token=bob)[0] == 404
    assert proxied(d, url, "index.html")[0] == 401
    assert proxied(d, url, o["shareUrl"][len(url):]) == (
        200, f"preview of {rid} port 3000: GET /\n")
    seen = len(dbl.seen("preview"))
    assert proxied(d, url, token=bob)[0] == 404 and len(dbl.seen("preview")) == seen
    # a public port opens without a credential
    st, o = d.call(SB + "exposePort", {"id": sb["id"]}, body={"port": 3001, "public": True})
    assert st == 200, o
    assert proxied(d, o["previewUrl"], "a") == (200, f"preview of {rid} port 3001: GET /a\n")
    st, o = d.call(SB + "getExposedPorts", {"id": sb["id"]})
    assert st == 200 and {x["previewUrl"].split("-", 1)[0] for x in o["ports"]} == {
        "http://3000", "http://3001"}, o
    if p == "runloop":  # its tunnel is authenticated: the token went to the double only
        tunnel = dbl.sandboxes[rid].tunnel
        assert tunnel["auth_mode"] == "authenticated" and len(dbl.seen("tunnel")) == 1
        assert dbl.seen("preview")[-1]["status"] == 200
        assert dbl.seen("preview")[-1]["scheme"] == "https"  # its tunnel host is https
        no_secret_anywhere(d, tunnel["auth_token"], [o])
    no_secret_anywhere(d, dbl.key, [o])
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_preview_over_tls_is_verified(env):
    """Runloop's tunnel host is https: the proxy speaks TLS to it and
    trusts it only with a certificate for that host from the system's or
    the operator's CAs (previewCaFile). A page and a WebSocket reach the
    sandbox's port over TLS; a certificate from another CA or for another
    host ends in a 502 that says which and why, and the tunnel token the
    proxy would add reaches neither the answer, the log nor the host."""
    from wsclient import WS
    d, dbl = env, env.doubles["runloop"]
    st, sb = create(d, "runloop", "pv-tls")
    assert st == 200, sb
    rid = sb["remoteId"]
    st, o = d.call(SB + "exposePort", {"id": sb["id"]}, body={"port": 3000})
    assert st == 200, o
    url, token = o["previewUrl"], dbl.sandboxes[rid].tunnel["auth_token"]
    assert proxied(d, url, "a", token=d.token) == (200, f"preview of {rid} port 3000: GET /a\n")
    assert dbl.seen("preview")[-1]["scheme"] == "https"
    # a body of many TLS records, all of it (the proxy reads past what one record holds)
    n = 3 * 1000 * 1000 + 7
    st, body = proxied(d, url, f"big?bytes={n}", token=d.token)
    assert st == 200 and body == ("0123456789" * (n // 10 + 1))[:n]
    ws = WS(int(d.url.rsplit(":", 1)[1]), f"/p/{sb['id']}/3000/ws",
            headers={"Authorization": f"Bearer {d.token}"})
    assert ws.status == 101, ws.head
    ws.send("hello over tls")
    assert ws.recv() == (1, f"preview of {rid} port 3000 echoes hello over tls".encode())
    big = "x" * 200000  # a message of many records each way
    ws.send(big)
    assert ws.recv() == (1, f"preview of {rid} port 3000 echoes {big}".encode())
    ws.close()
    answers = []
    seen = len(dbl.seen("preview"))
    try:
        for cert, why in (("untrusted", "untrusted certificate"),
                          ("wrongname", "hostname mismatch")):
            d.tls_front["cert"] = cert
            st, body = proxied(d, url, "a", token=d.token)
            answers.append(body)
            err = json.loads(body)
            assert (st, err["error"]) == (502, "UpstreamFailure"), body
            assert "preview host localhost failed" in err["message"] and why in err["message"], body
    finally:
        d.tls_front["cert"] = "good"
    assert len(dbl.seen("preview")) == seen  # refused at the handshake: no request went
    assert "event=preview_tls_failed" in d.log_text()
    no_secret_anywhere(d, token, answers)
    assert proxied(d, url, "b", token=d.token)[0] == 200
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_ssh_keys_and_what_is_not_applied_on_a_remote_sandbox(env, tmp_path):
    """putSshKeys on a running remote sandbox writes the pair through the
    provider where a local sandbox has it, and every start writes it again;
    a Tailscale key, which only this daemon's own sandboxes run, is named
    in the record's statusReason instead of being dropped in silence."""
    import subprocess
    d, dbl = env, env.doubles["daytona"]
    path = str(tmp_path / "k")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f", path],
                   check=True)
    priv, pub = open(path).read(), open(path + ".pub").read().strip()
    st, sb = create(d, "daytona", "ssh-dtn")
    assert st == 200, sb
    rid = sb["remoteId"]
    st, k = d.call(SB + "putSshKeys", body={"id": sb["id"], "privateKey": d.seal(priv),
                                             "publicKey": pub})
    assert st == 200, k
    fs = dbl.sandboxes[rid].fs
    assert fs.read("/root/.ssh/id_ed25519").decode() == priv
    assert fs.read("/root/.ssh/id_ed25519.pub").decode() == pub + "\n"
    fs.remove("/root/.ssh/id_ed25519")
    st, o = d.call(SB + "putTailscaleAuthKey", body={
        "id": sb["id"], "authKey": d.seal("tskey-auth-k" + os.urandom(12).hex() + "-x")})
    assert st == 200, o
    assert d.sandbox("stopSandbox", sb["id"])[0] == 200
    d.wait_status(sb["id"], ["STOPPED"])
    assert d.sandbox("startSandbox", sb["id"])[0] == 200
    got = d.wait_status(sb["id"], ["RUNNING"])
    assert fs.read("/root/.ssh/id_ed25519").decode() == priv  # written again at start
    reason = got.get("statusReason") or ""
    assert "tailscale key not applied" in reason and "daytona" in reason, got
    assert "service" not in reason, got
    assert priv not in d.log_text()
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


SV = "io.pocketenv.service."


def test_tailscale_key_on_a_remote_sandbox(env):
    """putTailscaleAuthKey on a running remote sandbox brings Tailscale up
    through exec where the image has it: tailscaled as a supervised unit
    (restarted when it dies, as a service is), then, once it answers,
    `tailscale up --auth-key=file:` with the key in a 0600 file removed
    after; where the image lacks either program, the record says the key
    is not applied and why. The key never reaches a command line, an
    environment, the double's request log or the daemon's log."""
    import hashlib
    from tests.doubles._core import TS_CRASH, TS_STARTS, TS_UPS
    d, dbl = env, env.doubles["e2b"]
    st, sb = create(d, "e2b", "ts-e2b")
    assert st == 200, sb
    sid, rid = sb["id"], sb["remoteId"]
    key = "tskey-auth-k" + os.urandom(12).hex() + "-x"
    fs = dbl.sandboxes[rid].fs
    writes = len(dbl.seen("fs.write"))

    def put():
        st, o = d.call(SB + "putTailscaleAuthKey", body={"id": sid, "authKey": d.seal(key)})
        assert st == 200, o
        return d.sandbox("getSandbox", sid)[1]["sandbox"].get("statusReason") or ""

    assert "tailscale key not applied: no tailscale in the image on e2b" in put()
    # tailscale without its daemon: the key is not sent either
    fs.write("/usr/bin/tailscale", b"#!double-program tailscale\n")
    assert "tailscale key not applied: no tailscaled in the image on e2b" in put()
    assert len(dbl.seen("fs.write")) == writes  # no tailscale: the key is not sent at all

    def starts():
        return int(fs.read(TS_STARTS)) if fs.exists(TS_STARTS) else 0

    def ups():
        return [json.loads(x) for x in fs.read(TS_UPS).decode().splitlines()] \
            if fs.exists(TS_UPS) else []
    # the pair (the double's stand-ins: tests/doubles/_core.py PROGRAMS)
    fs.write("/usr/sbin/tailscaled", b"#!double-program tailscaled\n")
    assert "tailscale" not in put()
    assert starts() == 1
    want = {"key_sha256": hashlib.sha256(key.encode()).hexdigest(), "mode": 0o600,
            "hostname": "ts-e2b"}
    assert ups() == [want]
    assert len(dbl.seen("fs.write")) == writes + 1  # the key file, then removed
    assert not fs.exists("/run/pocketenv/tailscale-authkey")
    assert fs.stat("/run/pocketenv")["mode"] == 0o700
    # supervised: when tailscaled dies it is started again
    fs.write(TS_CRASH, b"")
    wait_for(lambda: starts() == 2, 15, "tailscaled restarted after it died")
    # a second put while it runs: the same tailscaled, `up` again
    assert "tailscale" not in put() and starts() == 2 and ups() == [want, want]
    # and again at every start
    assert d.sandbox("stopSandbox", sid)[0] == 200
    d.wait_status(sid, ["STOPPED"])
    assert d.sandbox("startSandbox", sid)[0] == 200
    got = d.wait_status(sid, ["RUNNING"])
    assert "tailscale" not in (got.get("statusReason") or ""), got
    assert starts() == 3 and ups() == [want] * 3
    assert not fs.exists("/run/pocketenv/tailscale-authkey")
    launches = [e for e in dbl.sandboxes[rid].execs if (e.get("argv") or [""])[0] == "tailscaled"]
    assert len(launches) == 3 and "--tun=userspace-networking" in launches[0]["argv"], launches
    assert key not in json.dumps(dbl.sandboxes[rid].execs)
    assert key not in json.dumps(dbl.seen()) and key not in json.dumps(dbl.sandboxes[rid].env)
    no_secret_anywhere(d, key)
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def services(d, sid):
    st, o = d.call(SV + "getServices", {"sandboxId": sid})
    assert st == 200, o
    return {v["name"]: v for v in o["services"]}


def test_services_of_a_remote_sandbox(env):
    """A remote sandbox's services run through its provider as they do on a
    local one: started at addService and at every start (a streaming exec
    the daemon holds open), their output in getServiceLogs, restarted when
    they fail, ended by stopService and by stopping the sandbox."""
    d, dbl = env, env.doubles["e2b"]
    st, sb = create(d, "e2b", "svc-e2b")
    assert st == 200, sb
    sid, rid = sb["id"], sb["remoteId"]

    def runs(word):
        """The double's execs whose command holds word."""
        return [e for e in list(dbl.sandboxes[rid].execs) if word in json.dumps(e)]
    st, o = d.call(SV + "addService", {"sandboxId": sid}, body={"service": {
        "name": "web", "command": "echo up-web; sleep 50"}})
    assert st == 200, o
    web = o["service"]["id"]
    wait_for(lambda: services(d, sid)["web"]["status"] == "RUNNING" and runs("up-web"), 10,
             "the service on the provider")

    def logs(v):
        st, o = d.call(SV + "getServiceLogs", {"serviceId": v})
        assert st == 200, o
        return o["logs"]
    wait_for(lambda: "up-web" in logs(web), 10, "the service's output")
    # a failing one is restarted, and says why it died
    st, o = d.call(SV + "addService", {"sandboxId": sid}, body={"service": {
        "name": "bad", "command": "echo boom-bad >&2; exit 3"}})
    assert st == 200, o
    wait_for(lambda: len(runs("boom-bad")) >= 2, 10, "a restart of the failing service")
    bad = services(d, sid)["bad"]
    assert bad.get("exitCode") == 3 and "boom-bad" in bad.get("lastError", ""), bad
    assert d.call(SV + "stopService", {"serviceId": o["service"]["id"]}, post=True)[0] == 200
    # stopping the sandbox ends the service; starting it starts it again
    assert d.sandbox("stopSandbox", sid)[0] == 200
    d.wait_status(sid, ["STOPPED"])
    assert services(d, sid)["web"]["status"] == "STOPPED"
    n, nb = len(runs("up-web")), len(runs("boom-bad"))
    assert d.sandbox("startSandbox", sid)[0] == 200
    d.wait_status(sid, ["RUNNING"])
    wait_for(lambda: len(runs("up-web")) > n, 10, "the service started again")
    wait_for(lambda: services(d, sid)["web"]["status"] == "RUNNING", 10, "RUNNING again")
    assert len(runs("boom-bad")) == nb  # stopped by its owner: not started again
    assert d.call(SV + "stopService", {"serviceId": web}, post=True)[0] == 200
    assert services(d, sid)["web"]["status"] == "STOPPED"
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_backup_and_restore_of_a_remote_sandbox(env):
    """createBackup of a remote sandbox's directory packs it through its
    provider (a tar of its files) into this daemon's backups; restoreBackup
    writes it back after the files changed. A provider without files to
    pack (runloop: no listing, no tar) is 501 and keeps nothing."""
    d, dbl = env, env.doubles["daytona"]
    st, sb = create(d, "daytona", "bk-dtn")
    assert st == 200, sb
    assert d.sh(sb["id"], "mkdir -p /work/sub && echo -n one > /work/a.txt"
                          " && echo -n two > /work/sub/b.txt")["exitCode"] == 0
    st, o = d.call(SB + "createBackup", {"id": sb["id"]}, {"directory": "/work"})
    assert st == 200, o
    b = o["backup"]
    assert (b["sandboxId"], b["directory"]) == (sb["id"], "/work"), b
    assert os.path.exists(os.path.join(d.data, "backups", b["id"] + ".tar"))
    assert d.sh(sb["id"], "echo -n changed > /work/a.txt && rm /work/sub/b.txt")["exitCode"] == 0
    st, o = d.call(SB + "restoreBackup", body={"backupId": b["id"]})
    assert st == 200, o
    fs = dbl.sandboxes[sb["remoteId"]].fs
    assert (fs.read("/work/a.txt"), fs.read("/work/sub/b.txt")) == (b"one", b"two")
    st, o = d.call(SB + "getBackups", {"id": sb["id"]})
    assert st == 200 and [x["id"] for x in o["backups"]] == [b["id"]], o
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200

    st, sb = create(d, "runloop", "bk-rl")
    assert st == 200, sb
    st, o = d.call(SB + "createBackup", {"id": sb["id"]}, {"directory": "/work"})
    assert st == 501 and o["message"] == "backup of /work: not supported by runloop: tar", o
    assert d.call(SB + "getBackups", {"id": sb["id"]})[1]["backups"] == []
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_repo_clone_on_a_remote_sandbox(env):
    """createSandbox's repo is cloned in a remote sandbox too: `git clone --
    URL DIR` from an argv runs through its provider after the create, and
    the record's statusReason says how it went (the double's toy shell has
    no git: the same words as a local image without git)."""
    d, dbl = env, env.doubles["daytona"]
    st, sb = create(d, "daytona", "repo-dtn", repo="https://example.com/me/proj.git")
    assert st == 200, sb

    def reason():
        return d.sandbox("getSandbox", sb["id"])[1]["sandbox"].get("statusReason") or ""
    assert wait_for(lambda: "repo not cloned" in reason(), timeout=20), reason()
    assert reason() == "repo not cloned: the image has no git", reason()
    scripts = [str(e.get("script")) for e in dbl.sandboxes[sb["remoteId"]].execs]
    # each word quoted for the provider's shell line: the URL stays one word
    assert any("'git' 'clone' '--' 'https://example.com/me/proj.git' 'proj'" in x
               for x in scripts), scripts
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_e2b_sdk_on_a_remote_sandbox(env):
    """E2B's SDK, pointed at our daemon, drives a sandbox that Daytona's
    double runs: envd's process and filesystem calls and /files go through
    lib/sandbox to the provider, and what Daytona lacks (stdin) or the
    provider interface has not (a directory watch) is refused naming it."""
    from test_e2b import drive, e2b_key
    d, dbl = env, env.doubles["daytona"]
    st, sb = create(d, "daytona", "e2b-dtn")
    assert st == 200, sb
    try:
        out = drive(d, "remote", template=sb["id"], timeout=120,
                    env={"E2B_DRIVE_LACKS": "1"})
        assert out["run"] == {"stdout": "out\n", "stderr": "err\n", "exitCode": 0}, out
        assert out["exit3"] == {"exitCode": 3, "stdout": "before\n"}, out
        assert out["read"] == "hello file", out
        assert {"name": "a.txt", "type": "file"} in out["list"], out
        assert out["readMissing"]["name"] == "FileNotFoundError", out
        # the SDK's command and file reached the provider
        remote = dbl.sandboxes[sb["remoteId"]]
        assert remote.fs.files["/tmp/e2b/a.txt"] == b"hello file"
        assert any("echo out" in (x.get("script") or "") for x in remote.execs), remote.execs
        assert "not supported by daytona: stdin" in out["stdin"]["message"], out
        assert "not supported by daytona: watching a directory" in out["watch"]["message"], out
        # the code interpreter's gateway takes its request on stdin
        req = urllib.request.Request(d.url + "/contexts", data=b'{"language": "python"}',
                                     method="POST", headers={
                                         "Content-Type": "application/json",
                                         "E2b-Sandbox-Id": sb["id"],
                                         "X-Access-Token": e2b_key(d.token)})
        try:
            urllib.request.urlopen(req, timeout=30)
            raise AssertionError("a context on a provider without stdin")
        except urllib.error.HTTPError as e:
            assert e.code == 501 and b"not supported by daytona: stdin" in e.read()
    finally:
        assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_a_daemon_restart_settles_remote_creates_and_supervises_remote_services_again(env, tmp_path):
    """kill -9 while a Daytona create waits for its sandbox to run (the
    double holds its polls): at the restart the row, INITIALIZING with the
    provider's id already written down, is settled: the half-made sandbox is
    deleted there and the create is made again (RUNNING). An E2B sandbox's
    service, whose exec stream died with the daemon, runs again under the
    new daemon and its logs go on. Its own daemon (it is killed), on the
    module's doubles."""
    dt, e2 = env.doubles["daytona"], env.doubles["e2b"]
    data, tok = str(tmp_path / "data"), str(tmp_path / "token.json")
    port = free_port()
    procs = []

    def start_daemon():
        d = ResDaemon(data, port, tok)
        d.log_path = str(tmp_path / f"daemon-{len(procs)}.log")
        log = open(d.log_path, "w")
        d.proc = subprocess.Popen(
            [BIN, "serve", "--listen", d.url[len("http://"):], "--data", data, "--token-file", tok,
             "--rate-limit", "0", "--provider-config", str(env.tmp / "providers.json")],
            stderr=log)
        procs.append((d.proc, log))
        wait_for(lambda: d.healthy() or d.proc.poll() is not None, 15, "/healthz")
        assert d.proc.poll() is None, d.log_text()
        with open(tok) as f:
            d.token = json.load(f)["token"]
        d.public_key = banner_key(d)
        d.doubles = env.doubles
        return d

    def runs(rid, word):
        return [e for e in list(e2.sandboxes[rid].execs) if word in json.dumps(e)]

    def rows(d):
        st, o = d.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local", "limit": 100})
        return o["sandboxes"] if st == 200 else []

    def create_dies(d):
        try:
            create(d, "daytona", "rs-mid")
        except OSError:  # the daemon was killed under it
            pass

    try:
        d = start_daemon()
        st, sb = create(d, "e2b", "rs-svc")
        assert st == 200, sb
        sid, erid = sb["id"], sb["remoteId"]
        st, o = d.call(SV + "addService", {"sandboxId": sid}, body={"service": {
            "name": "web", "command": "echo up-again; sleep 60"}})
        assert st == 200, o
        svc = o["service"]["id"]
        wait_for(lambda: runs(erid, "up-again"), 10, "the service on e2b")
        # three more, changed at their providers while no daemon runs
        behind = {}
        for p, name in (("hopx", "rs-hx"), ("e2b", "rs-gone"), ("daytona", "rs-dstop")):
            st, o = create(d, p, name)
            assert st == 200, o
            behind[name] = o
        # a create whose sandbox never comes up before the kill
        before = set(dt.sandboxes)
        dt.fault("get", hang=True)
        threading.Thread(target=create_dies, args=(d,), daemon=True).start()
        mid = wait_for(lambda: [s for s in rows(d) if s["name"] == "rs-mid" and s.get("remoteId")],
                       15, "the provider's id on the row")[0]
        assert mid["status"] == "INITIALIZING" and mid["remoteId"] in dt.sandboxes
        half = mid["remoteId"]
        n = len(runs(erid, "up-again"))
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        dt.clear_faults()
        env.doubles["hopx"].sandboxes[behind["rs-hx"]["remoteId"]].status = "paused"
        del e2.sandboxes[behind["rs-gone"]["remoteId"]]
        dt.sandboxes[behind["rs-dstop"]["remoteId"]].state = "stopped"

        d = start_daemon()
        got = d.wait_status(mid["id"], ["RUNNING", "FAILED"], timeout=30)
        assert got["status"] == "RUNNING", got
        assert got["remoteId"] != half and got["remoteId"] in dt.sandboxes
        assert half not in dt.sandboxes, "the half-made sandbox was left at daytona"
        assert set(dt.sandboxes) - before == {got["remoteId"]}
        assert d.sh(mid["id"], "echo made")["stdout"] == "made\n"
        # the service runs again, and its new output is in its logs
        wait_for(lambda: len(runs(erid, "up-again")) > n, 15, "the service started again")
        wait_for(lambda: services(d, sid)["web"]["status"] == "RUNNING", 10, "RUNNING")
        wait_for(lambda: "up-again" in d.call(SV + "getServiceLogs", {"serviceId": svc})[1]["logs"],
                 10, "the service's logs under the new daemon")
        # the others are what their providers say: hopx cannot pause (its
        # pause is our stop), e2b lost it, daytona's resumes on next use
        got = d.wait_status(behind["rs-hx"]["id"], ["STOPPED"])
        assert got["statusReason"] == "stopped at hopx while pocketenv serve was not running"
        got = d.wait_status(behind["rs-gone"]["id"], ["FAILED"])
        assert got["statusReason"] == f"e2b has no sandbox {behind['rs-gone']['remoteId']} any more"
        dstop = behind["rs-dstop"]["id"]
        wait_for(lambda: d.sandbox("getSandbox", dstop)[1]["sandbox"].get("paused"), 10,
                 "the stopped daytona sandbox to be paused")
        assert d.sh(dstop, "echo back")["stdout"] == "back\n"
        assert d.sandbox("getSandbox", dstop)[1]["sandbox"]["resumedBy"] == "exec"
        for x in [sid, mid["id"]] + [v["id"] for v in behind.values()]:
            assert d.sandbox("deleteSandbox", x)[0] == 200
    finally:
        dt.clear_faults()
        for p, log in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                assert p.wait(30) == 0
            log.close()
