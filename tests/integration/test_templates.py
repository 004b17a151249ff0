"""Templates (docs/templates.md): agents that really run.

The slow tests build templates from the npm registry and Debian's archive
into one shared image directory ($PE_TEMPLATE_CACHE, else one per pytest
run: each template is built once per run) and run the real agents against
a model API double (model_double.py). The double runs in a network
namespace this file makes (10.123.0.4/30, its own /30: test_network.py
uses 10.123.0.0/30), which sandboxes reach through their NAT like any
host outside; nothing else is opened. The agents get the double's URL as
a variable and the key as a secret, as a user would give them.
"""
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import http.server
import urllib.error
import urllib.request

import pytest

from conftest import BIN, kill_tree, wait_for
from test_daemon import serving

HERE = os.path.dirname(os.path.abspath(__file__))
UP_HOST, UP_NS, UP_PORT = "10.123.0.5", "10.123.0.6", 8000
DOUBLE_URL = f"http://{UP_NS}:{UP_PORT}"
REPLY = "Pocketenv double says: the sandbox reached me."
BUILD_TIMEOUT = 1800  # a first build of a template: Debian, Node.js, the agent
SB = "io.pocketenv.sandbox."


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def double(tmp_path_factory):
    """The model API double in a namespace of its own: yields the path of
    its request log (one JSON line per request)."""
    tag = os.getpid() % 100000
    ns, host_if, ns_if = f"pt-md-{tag}", f"pt-mh-{tag}", f"pt-mn-{tag}"
    log = str(tmp_path_factory.mktemp("double") / "requests.jsonl")
    open(log, "w").close()
    proc = None
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{UP_HOST}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "-n", ns, "addr", "add", f"{UP_NS}/30", "dev", ns_if)
        sh("ip", "-n", ns, "link", "set", ns_if, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable,
                                 os.path.join(HERE, "model_double.py"), UP_NS, str(UP_PORT), log,
                                 REPLY], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        assert proc.stdout.readline() == "ready\n"
        yield log
    finally:
        if proc:
            kill_tree(proc)
            proc.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def requests_seen(log):
    with open(log) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(autouse=True)
def debian_first(request):
    """A slow test builds templates, which start from Debian's image: the
    run's first use of it (conftest.py), so that it is built once."""
    if request.node.get_closest_marker("slow"):
        request.getfixturevalue("debian_first_use")


@pytest.fixture(scope="module")
def tdaemon(tmp_path_factory, template_images):
    with serving(tmp_path_factory.mktemp("tdaemon"),
                 env={"POCKETENV_IMAGES": template_images}) as d:
        yield d


def create(d, base, name, envs=(), secrets_=()):
    # the open network (not the template's default policy): the double is
    # reached by address
    body = {"base": base, "name": name, "networkPolicy": None,
            "envs": [{"name": k, "value": v} for k, v in envs],
            "secrets": [{"name": k, "value": v} for k, v in secrets_]}
    st, sb = d.call(SB + "createSandbox", body=body)
    assert st == 200, sb
    got = d.wait_status(sb["id"], ["RUNNING", "FAILED"], timeout=BUILD_TIMEOUT)
    assert got["status"] == "RUNNING", got
    return got


def run(d, ident, command, timeout=600):
    st, out = d.call(SB + "exec", {"id": ident}, {"command": command}, timeout=timeout)
    assert st == 200, out
    return out


def key():
    return "sk-test-" + secrets.token_hex(16)


# ---- the agents ----

@pytest.mark.slow
def test_claude_code_runs_against_the_double(tdaemon, double):
    k = key()
    sb = create(tdaemon, "claude", "cc", envs=[("ANTHROPIC_BASE_URL", DOUBLE_URL),
                                               ("DISABLE_TELEMETRY", "1"),
                                               ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")],
                secrets_=[("ANTHROPIC_API_KEY", k)])
    assert sb["baseSandbox"] == "claude-code"
    out = run(tdaemon, "cc", "claude -p 'Say hello to the double' < /dev/null")
    assert out["exitCode"] == 0 and REPLY in out["stdout"], out
    calls = [r for r in requests_seen(double)
             if r["path"].startswith("/v1/messages") and r["headers"].get("x-api-key") == k]
    asked = [r for r in calls if r["path"].split("?")[0] == "/v1/messages"]
    assert asked, requests_seen(double)[-5:]
    body = asked[-1]["body"]
    assert body["model"] and body["max_tokens"] > 0, body
    assert "Say hello to the double" in json.dumps(body["messages"]), body
    assert asked[-1]["headers"].get("anthropic-version"), asked[-1]["headers"]


REACH_DOUBLE = ("node -e \"require('http').get('" + DOUBLE_URL + "/', r => console.log('status', "
                "r.statusCode)).on('error', e => console.log('error', e.code))"
                ".setTimeout(3000, function () { console.log('timeout'); this.destroy(); })\"")


@pytest.mark.slow
def test_pooled_agent_sandbox_runs_with_its_templates_policy(tmp_path_factory, template_images,
                                                               double):
    """--pool claude-code=1: a create naming no policy is served from the
    pool (answered RUNNING) and has the template's egress policy, which
    holds (the double, an address outside it, is not reached); a create
    asking for the open network starts its own and reaches it."""
    from test_pool import pool_metrics
    with serving(tmp_path_factory.mktemp("tpool"), extra=["--pool", "claude-code=1"],
                 env={"POCKETENV_IMAGES": template_images}) as d:
        st, sb = d.call(SB + "createSandbox", body={"base": "claude-code", "networkPolicy": None})
        assert st == 200 and sb["status"] == "INITIALIZING", sb  # not the pool's
        got = d.wait_status(sb["id"], ["RUNNING", "FAILED"], timeout=BUILD_TIMEOUT)
        assert got["status"] == "RUNNING", got
        assert "status 404" in run(d, sb["id"], REACH_DOUBLE)["stdout"]
        wait_for(lambda: pool_metrics(d, "claude-code").get("ready") == 1, 60,
                 "the claude-code pool to fill")
        st, sb = d.call(SB + "createSandbox", body={"base": "claude-code"})
        assert st == 200 and sb["status"] == "RUNNING", sb  # the pool's
        assert pool_metrics(d, "claude-code")["claimed"] == 1
        st, pol = d.call(SB + "getNetworkPolicy", {"id": sb["id"]})
        assert st == 200 and pol["policy"]["allowDomains"][0] == "api.anthropic.com", pol
        out = run(d, sb["id"], REACH_DOUBLE)["stdout"]
        assert "status" not in out and ("error" in out or "timeout" in out), out


@pytest.mark.slow
def test_secret_and_variable_put_later_reach_the_agent(tdaemon, double):
    """The key and base URL put after the create (secret put / env put, as
    upstream's SDK sends them) reach claude in the next exec."""
    k = key()
    sb = create(tdaemon, "claude-code", "cc-later")
    tdaemon.call("io.pocketenv.variable.addVariable", body={"variable": {
        "sandboxId": sb["id"], "name": "ANTHROPIC_BASE_URL", "value": DOUBLE_URL}})
    st, out = tdaemon.call("io.pocketenv.secret.addSecret", body={"secret": {
        "sandboxId": sb["id"], "name": "ANTHROPIC_API_KEY", "value": k}})
    assert st == 200, out
    out = run(tdaemon, "cc-later", "DISABLE_TELEMETRY=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 "
                                   "claude -p 'Say hello later' < /dev/null")
    assert out["exitCode"] == 0 and REPLY in out["stdout"], out
    asked = [r for r in requests_seen(double) if r["path"].split("?")[0] == "/v1/messages"
             and r["headers"].get("x-api-key") == k]
    assert asked and "Say hello later" in json.dumps(asked[-1]["body"]["messages"])


@pytest.mark.slow
def test_codex_runs_against_the_double(tdaemon, double):
    k = key()
    create(tdaemon, "codex", "cx", envs=[("OPENAI_BASE_URL", DOUBLE_URL + "/v1")],
           secrets_=[("CODEX_API_KEY", k)])
    # `codex exec` reads its key from CODEX_API_KEY (OPENAI_API_KEY only
    # through `codex login --with-api-key`), its base URL from its config
    # (openai_base_url), given here from the variable.
    out = run(tdaemon, "cx", "cd /tmp && codex exec --skip-git-repo-check "
                             "-c openai_base_url=\"\\\"$OPENAI_BASE_URL\\\"\" "
                             "'Say hello to the double' < /dev/null")
    assert out["exitCode"] == 0 and REPLY in out["stdout"], out
    asked = [r for r in requests_seen(double) if r["path"].split("?")[0] == "/v1/responses"
             and r["headers"].get("Authorization", r["headers"].get("authorization"))
             == f"Bearer {k}"]
    assert asked, requests_seen(double)[-5:]
    body = asked[-1]["body"]
    assert body["model"] and "Say hello to the double" in json.dumps(body["input"]), body


@pytest.mark.slow
def test_openclaw_gateway_runs_and_its_agent_answers(tdaemon, double):
    """openclaw (upstream's default base, as the CLI sends it: an at-uri)
    starts with its gateway as a service, RUNNING once the gateway
    listens; its port is known to the ports API; `openclaw agent`
    answers from the double with the key of the secret."""
    k = key()
    did = tdaemon.call("io.pocketenv.actor.getProfile")[1]["did"]
    create(tdaemon, f"at://{did}/io.pocketenv.sandbox/openclaw", "claw",
           envs=[("OPENAI_BASE_URL", DOUBLE_URL + "/v1")], secrets_=[("OPENAI_API_KEY", k)])
    st, svcs = tdaemon.call("io.pocketenv.service.getServices", {"sandboxId": "claw"})
    assert st == 200, svcs
    gw = [s for s in svcs["services"] if s["name"] == "openclaw-gateway"]
    assert gw and gw[0]["status"] == "RUNNING" and gw[0]["ports"] == [18789], svcs
    st, ports = tdaemon.call(SB + "getExposedPorts", {"id": "claw"})
    assert st == 200 and 18789 in [p["port"] for p in ports["ports"]], ports
    # Through the gateway (the service), which has the sandbox's secrets
    # and variables; the CLI signs in with the gateway's token.
    out = run(tdaemon, "claw", "cd /root && OPENCLAW_GATEWAY_TOKEN=$(cat .openclaw/gateway-token) "
                               "openclaw agent --agent main --session-id pocketenv-test "
                               "-m 'Say hello to the double' < /dev/null")
    assert out["exitCode"] == 0 and REPLY in out["stdout"], out
    asked = [r for r in requests_seen(double) if r["path"].split("?")[0] == "/v1/responses"
             and r["headers"].get("authorization") == f"Bearer {k}"]
    assert asked, requests_seen(double)[-5:]
    # openclaw may follow the answer with requests of its own (an
    # activity recap), so the prompt is looked for in any of them.
    assert any("Say hello to the double" in json.dumps(r["body"]["input"]) for r in asked), \
        [json.dumps(r["body"]["input"])[:200] for r in asked]


@pytest.mark.slow
def test_upstream_cli_create_with_no_flags_runs_openclaw(tdaemon):
    """What upstream's `pocketenv create` sends with no flags (reference
    §6.2: openclaw's at-uri under upstream's catalog DID, provider
    cloudflare): accepted, RUNNING once the gateway listens, and the
    gateway answers inside the sandbox."""
    body = {"base": "at://did:plc:aturpi2ls3yvsmhc6wybomun/io.pocketenv.sandbox/openclaw",
            "provider": "cloudflare"}
    st, sb = tdaemon.call(SB + "createSandbox", body=body)
    assert st == 200 and sb["baseSandbox"] == "openclaw", sb
    got = tdaemon.wait_status(sb["id"], ["RUNNING", "FAILED"], timeout=BUILD_TIMEOUT)
    assert got["status"] == "RUNNING", got
    out = run(tdaemon, sb["id"], "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18789/")
    assert out["exitCode"] == 0 and out["stdout"] == "200", out
    assert tdaemon.sandbox("deleteSandbox", sb["id"])[0] == 200


@pytest.mark.slow
def test_vscode_page_through_the_preview_proxy(tdaemon):
    """vscode: exposeVscode starts code-server from the template and its
    page comes through the daemon's preview proxy."""
    import http.client
    create(tdaemon, "vscode", "vs")
    st, out = tdaemon.call(SB + "exposeVscode", {"id": "vs"}, post=True)
    assert st == 200, out
    host = out["previewUrl"].split("//", 1)[1].rstrip("/")
    port = int(tdaemon.url.rsplit(":", 1)[1])

    def page():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/", headers={"Host": host, "Authorization": f"Bearer {tdaemon.token}"})
        r = c.getresponse()
        body = r.read()
        c.close()
        # code-server answers / with a redirect to its workbench
        if r.status in (301, 302):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            loc = r.getheader("Location")
            path = loc if loc.startswith("/") else "/" + loc.lstrip("./")
            c.request("GET", path, headers={"Host": host,
                                            "Authorization": f"Bearer {tdaemon.token}"})
            r = c.getresponse()
            body = r.read()
            c.close()
        return (r.status, body) if r.status == 200 else None
    st, body = wait_for(page, 120, "code-server's page through the preview")
    assert b"code-server" in body or b"vscode" in body.lower(), body[:500]


# ---- bad input ----

def test_unknown_and_vendor_only_templates_are_refused_at_once(tdaemon):
    """An unknown name: 400 listing the bases; a catalog name whose tool
    only a vendor's site has: 400 TemplateNotAvailable saying so; nothing
    made. getSandboxes lists every template with its at-uri and whether
    it is available here."""
    before = tdaemon.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local"})[1]
    st, out = tdaemon.call(SB + "createSandbox", body={"base": "no-such-template"})
    assert st == 400 and out["error"] == "InvalidRequest", out
    assert out["message"].startswith("unknown base no-such-template; bases available here: "
                                     "busybox, debian, openclaw, claude-code"), out
    for name in ["cursor", "kiro", "mise", "nix", "pkgx", "wasmer", "docker", "nullclaw",
                 "picoclaw", "zeroclaw", "opencrust", "nanoclaw", "crush"]:
        st, out = tdaemon.call(SB + "createSandbox", body={"base": name})
        assert (st, out["error"]) == (400, "TemplateNotAvailable"), out
        assert "installs only from a vendor's download site" in out["message"], out
    st, cat = tdaemon.call(SB + "getSandboxes", {"limit": 100})
    by = {t["name"]: t for t in cat["sandboxes"]}
    assert by["cursor"]["available"] is False and "vendor" in by["cursor"]["unavailableReason"]
    for name in ["openclaw", "claude-code", "codex", "gemini", "opencode", "vscode", "python",
                 "amp", "copilot", "kilo"]:
        assert by[name]["available"] is True, by[name]
        assert by[name]["uri"].startswith("at://did:key:") and \
            by[name]["uri"].endswith("/io.pocketenv.sandbox/" + name), by[name]
    assert "node" not in by  # a layer, not a base
    # an agent's default egress policy: its provider and the registries
    want = {"mode": "allowlist", "allowDomains": [
        "api.anthropic.com", "console.anthropic.com", "statsig.anthropic.com", "claude.ai",
        "registry.npmjs.org", "pypi.org", "files.pythonhosted.org", "deb.debian.org",
        "security.debian.org"]}
    assert by["claude-code"]["networkPolicy"] == want, by["claude-code"]
    assert "api.openai.com" in by["codex"]["networkPolicy"]["allowDomains"]
    assert "networkPolicy" not in by["python"] and "networkPolicy" not in by["busybox"]
    after = tdaemon.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local"})[1]
    assert after["total"] == before["total"]  # nothing made


# ---- the other agents: their command on PATH ----

with open(os.path.join(HERE, "..", "..", "templates", "pins.json")) as f:
    PINS = json.load(f)["npm_packages"]


@pytest.mark.slow
@pytest.mark.parametrize("name,package,command", [
    ("gemini", "@google/gemini-cli", "gemini"), ("opencode", "opencode-ai", "opencode"),
    ("amp", "@sourcegraph/amp", "amp"), ("copilot", "@github/copilot", "copilot"),
    ("kilo", "@kilocode/cli", "kilo")])
def test_agent_command_is_on_path(tdaemon, name, package, command):
    """Each npm agent's template: its command on PATH, at the pinned
    version (what `console` would start)."""
    create(tdaemon, name, "ag-" + name)
    out = run(tdaemon, "ag-" + name, f"command -v {command} && {command} --version < /dev/null")
    assert out["exitCode"] == 0, out
    assert out["stdout"].startswith(f"/usr/local/bin/{command}\n"), out
    assert PINS[package]["version"] in out["stdout"], out
    assert tdaemon.sandbox("deleteSandbox", "ag-" + name)[0] == 200


# ---- the code interpreter ----

KERNEL_CLIENT = r"""
import json, urllib.request, uuid
from tornado import ioloop, websocket

BASE = "127.0.0.1:8888"

def start_kernel():
    req = urllib.request.Request(f"http://{BASE}/api/kernels", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["id"]

async def cell(ws, code):
    mid = uuid.uuid4().hex
    await ws.write_message(json.dumps({
        "header": {"msg_id": mid, "username": "test", "session": "s", "version": "5.3",
                   "msg_type": "execute_request"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    text, status, idle = "", None, False
    while status is None or not idle:
        m = json.loads(await ws.read_message())
        if m["parent_header"].get("msg_id") != mid:
            continue
        if m["msg_type"] == "stream":
            text += m["content"]["text"]
        elif m["msg_type"] == "error":
            text += m["content"]["ename"] + ": " + m["content"]["evalue"]
        elif m["msg_type"] == "execute_reply":
            status = m["content"]["status"]
        elif m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            idle = True
    return [status, text]

async def main():
    kid = start_kernel()
    ws = await websocket.websocket_connect(f"ws://{BASE}/api/kernels/{kid}/channels")
    print(json.dumps([await cell(ws, "secret_number = 6 * 7"),
                      await cell(ws, "print(secret_number + 1)")]))

ioloop.IOLoop.current().run_sync(main, timeout=120)
"""


@pytest.mark.slow
def test_python_kernel_keeps_state_between_cells(tdaemon):
    """The python template's kernel server (a service, RUNNING once it
    listens): two cells in one kernel, the second sees the first's
    variable."""
    create(tdaemon, "python", "py")
    st, svcs = tdaemon.call("io.pocketenv.service.getServices", {"sandboxId": "py"})
    assert [(s["name"], s["status"], s["ports"]) for s in svcs["services"]] == [
        ("jupyter-server", "RUNNING", [8888])], svcs
    out = run(tdaemon, "py", "python3 - <<'EOF'\n" + KERNEL_CLIENT + "EOF\n")
    assert out["exitCode"] == 0, out
    assert json.loads(out["stdout"].strip().splitlines()[-1]) == [["ok", ""], ["ok", "43\n"]], out


# ---- building on first use ----

def cached(template_images, name):
    """Template name (and its layers) in the shared cache, built once."""
    if os.path.exists(os.path.join(template_images, name, "image.json")):
        return
    env = dict(os.environ, POCKETENV_IMAGES=template_images)
    r = subprocess.run([BIN, "--data", template_images.rstrip("/") + ".data", "image", "build",
                        name], env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert r.returncode == 0, r.stderr


def fresh_images(template_images, path, layers):
    """An image directory of its own holding only `layers` of the cache
    (hard links: images are read-only lowerdirs; each built first if the
    cache lacks it), for a test that watches what a build adds."""
    os.makedirs(path)
    for name in layers:
        cached(template_images, name)
        subprocess.run(["cp", "-al", os.path.join(template_images, name),
                        os.path.join(path, name)], check=True)
    return str(path)


def layers_in(path):
    return sorted(n for n in os.listdir(path) if not n.startswith(".lock"))


@pytest.mark.slow
def test_first_create_builds_once_and_says_what_it_builds(template_images, tmp_path):
    """Two creates of a template not built yet: both INITIALIZING with a
    statusReason naming the build, one build between them, both RUNNING
    with the agent on PATH."""
    cached(template_images, "node")
    images = fresh_images(template_images, tmp_path / "images", ["busybox", "debian", "node"])
    (tmp_path / "d").mkdir()
    with serving(tmp_path / "d", env={"POCKETENV_IMAGES": images}) as d:
        ids = []
        for name in ["cx1", "cx2"]:
            st, sb = d.call(SB + "createSandbox", body={"base": "codex", "name": name})
            assert st == 200 and sb["status"] == "INITIALIZING", sb
            ids.append(sb["id"])
        reasons = {i: set() for i in ids}

        def both_running():
            done = True
            for i in ids:
                st, o = d.sandbox("getSandbox", i)
                assert st == 200, o
                s = o["sandbox"]
                assert s["status"] in ("INITIALIZING", "RUNNING"), s
                if s["status"] == "INITIALIZING":
                    reasons[i].add(s.get("statusReason", ""))
                    done = False
            return done
        wait_for(both_running, BUILD_TIMEOUT, "both codex sandboxes to run")
        for i in ids:
            assert any(r.startswith("building template codex (first use)") for r in reasons[i]), \
                reasons[i]
        log = d.log_text()
        assert log.count("template layer codex: building") == 1, log
        assert log.count("template layer codex: built") == 1, log
        assert "template layer node: building" not in log
        for name in ["cx1", "cx2"]:
            out = run(d, name, "codex --version")
            assert out["exitCode"] == 0 and "codex" in out["stdout"], out
    assert layers_in(images) == ["busybox", "codex", "debian", "node"]


@pytest.mark.slow
def test_image_build_shows_progress_and_one_line_outcome(template_images, tmp_path):
    """`pocketenv image build codex` on a terminal: the step, the package
    and bytes rewritten in place, then one line saying what was built."""
    import pty
    cached(template_images, "node")
    images = fresh_images(template_images, tmp_path / "images", ["debian", "node"])
    env = dict(os.environ, POCKETENV_IMAGES=images)
    master, slave = pty.openpty()
    proc = subprocess.Popen([BIN, "--data", str(tmp_path / "data"), "image", "build", "codex"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=BUILD_TIMEOUT) == 0, seen
    text = seen.decode(errors="replace")
    assert re.search(r"\r\x1b\[K\[codex\] npm install @openai/codex  [0-9.]+ [KM]iB", text), text
    lines = [l.strip() for l in text.replace("\r\x1b[K", "\n").split("\n") if l.strip()]
    assert lines[-1].startswith("template codex is built (codex ") and " MiB, node " in \
        lines[-1] and lines[-1].endswith(" s"), lines[-1]
    assert layers_in(images) == ["codex", "debian", "node"]
    # The same pins give the same layer: this build and the shared cache's
    # (another build, at another time) hold the same tree, byte for byte.
    cached(template_images, "codex")
    assert tree_manifest(os.path.join(images, "codex", "rootfs")) == \
        tree_manifest(os.path.join(template_images, "codex", "rootfs"))


def tree_manifest(root):
    """Every entry under root: its type, mode, owner, and its content's
    sha256 or its link's target (times left out: they are the build's)."""
    import hashlib
    import stat
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            what = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if stat.S_ISLNK(st.st_mode):
                what += (os.readlink(path),)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    what += (hashlib.file_digest(f, "sha256").hexdigest(),)
            out[os.path.relpath(path, root)] = what
    assert out, root
    return out


# ---- bad input ----

@pytest.mark.slow  # Debian's image and Node.js come from the network first
def test_registry_unreachable_fails_the_build_and_leaves_nothing(template_images, tmp_path):
    """The npm registry unreachable (a closed port on loopback): the
    build step that fetches says so, and no layer or part of one is left;
    the same through the daemon, whose sandbox is FAILED with that
    reason."""
    cached(template_images, "debian")
    images = fresh_images(template_images, tmp_path / "images", ["busybox", "debian"])
    env = dict(os.environ, POCKETENV_IMAGES=images, POCKETENV_NPM_REGISTRY="http://127.0.0.1:9/")
    r = subprocess.run([BIN, "--data", str(tmp_path / "data"), "image", "build", "codex"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("pocketenv: build template codex: step node: ") and \
        "127.0.0.1:9" in last, r.stderr
    assert layers_in(images) == ["busybox", "debian"]
    # Node.js there, the agent's tarball cannot be fetched.
    cached(template_images, "node")
    subprocess.run(["cp", "-al", os.path.join(template_images, "node"),
                    os.path.join(images, "node")], check=True)
    (tmp_path / "d").mkdir()
    with serving(tmp_path / "d", env={"POCKETENV_IMAGES": images,
                                      "POCKETENV_NPM_REGISTRY": "http://127.0.0.1:9/"}) as d:
        st, sb = d.call(SB + "createSandbox", body={"base": "codex", "name": "nonet"})
        assert st == 200, sb
        got = d.wait_status(sb["id"], ["RUNNING", "FAILED"], timeout=300)
        assert got["status"] == "FAILED", got
        # (the agent's tarball is fetched on the host, checked against its
        # pinned integrity, before npm installs it in the build sandbox)
        assert got["statusReason"].startswith("build template codex: step codex: download "
                                              "@openai/codex@"), got
        assert "127.0.0.1 port 9" in got["statusReason"], got
    assert layers_in(images) == ["busybox", "debian", "node"]


@pytest.mark.slow
def test_template_service_that_fails_to_start_fails_the_create(tdaemon, template_images):
    """python's kernel server made to fail (a PYTHONHOME with no Python in
    it): the sandbox is FAILED with the service's own last words, and no
    runtime sandbox or service process is left."""
    st, sb = tdaemon.call(SB + "createSandbox", body={
        "base": "python", "name": "badpy", "envs": [{"name": "PYTHONHOME",
                                                     "value": "/nonexistent"}]})
    assert st == 200, sb
    got = tdaemon.wait_status(sb["id"], ["RUNNING", "FAILED"], timeout=BUILD_TIMEOUT)
    assert got["status"] == "FAILED", got
    assert re.match(r"the template's service jupyter-server did not start \(exit status \d+\): "
                    r".+", got["statusReason"]), got
    ls = subprocess.run([BIN, "--data", tdaemon.data, "runtime", "ls", "--json"],
                        env=dict(os.environ, POCKETENV_IMAGES=template_images),
                        capture_output=True, text=True, check=True)
    assert sb["id"] not in ls.stdout
