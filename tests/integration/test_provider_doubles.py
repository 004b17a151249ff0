"""Doubles you can trust: each remote provider's double (tests/doubles)
is driven by that provider's own SDK from npm (tests/doubles/sdk/*.mjs),
and what the SDK got back is checked against what the double saw. The
Cloudflare bridge has no client SDK: its test speaks the reference's wire
contract itself. Then the fault machinery every adapter test will lean on:
each fault kind, seen by a client, and through an SDK where it is cheap.

No daemon, no sandbox: these tests run on loopback only.
"""
import asyncio
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tests.doubles import PROVIDERS, start  # noqa: E402

SDK_DIR = os.path.join(ROOT, "tests", "doubles", "sdk")
SDKS = {"sprites": "@fly/sprites", "daytona": "@daytonaio/sdk", "vercel": "@vercel/sandbox", "deno": "@deno/sandbox",
        "e2b": "e2b", "runloop": "@runloop/api-client",
        "hopx": "@hopx-ai/sdk", "blaxel": "@blaxel/core", "kubernetes": "@kubernetes/client-node", "modal": "modal"}


def node_version():
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
    return tuple(int(x) for x in out.strip().lstrip("v").split(".")[:2])


def node_major():
    return node_version()[0]


def need_sdk(provider):
    if shutil.which("node") is None:
        pytest.skip("node is not installed (scripts/setup installs it)")
    if node_version() < (20, 18):
        # undici 7 (@vercel/sandbox), the global WebSocket (@fly/sprites) and
        # Promise.withResolvers-era code need it; Debian 12's own nodejs is 18
        pytest.skip(f"the providers' SDKs need Node.js >= 20.18, this is {'.'.join(map(str, node_version()))}")
    pkg = SDKS[provider]
    if not os.path.isfile(os.path.join(ROOT, "node_modules", *pkg.split("/"), "package.json")):
        pytest.skip(f"{pkg} is not installed: run `npm ci` (package.json pins it)")


def node_args():
    # @fly/sprites uses the global WebSocket: Node >= 22 has it, 20 and 21 behind a flag
    return ["--experimental-websocket"] if node_major() < 22 else []


def run_node(provider, d, script=None, code=None, extra_env=None, timeout=90):
    """Run an SDK script (or inline ES module code) against double d; return
    the JSON it printed last."""
    need_sdk(provider)
    env = dict(os.environ, DOUBLE_URL=d.url, DOUBLE_KEY=d.key, **(extra_env or {}))
    env.pop("NODE_OPTIONS", None)
    if script:
        cmd = ["node", *node_args(), os.path.join(SDK_DIR, script)]
    else:
        cmd = ["node", *node_args(), "--input-type=module", "-e", code]
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{provider} SDK script failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-4000:]}"
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON from the SDK script:\n{p.stdout}\n{p.stderr[-4000:]}"
    return json.loads(lines[-1])


@pytest.fixture
def double(request):
    d = start(request.param)
    yield d
    d.stop()


def routes(d):
    return [(r["method"], r["route"], r["status"]) for r in d.requests]


# ------------------------------------------------------------------ SDK lifecycles

def test_sprites_sdk_lifecycle():
    with start("sprites") as d:
        got = run_node("sprites", d, "sprites.mjs", extra_env={"SANDBOX_NAME": "pe-t1"})
        assert got["created"]["name"] == "pe-t1" and got["created"]["status"] == "cold"
        assert got["created"]["url"].startswith(d.url + "/__preview__/pe-t1/")
        assert got["exec"] == {"stdout": "hi\nhello-env\n", "stderr": "oops", "exitCode": 0}
        assert got["fail"] == {"name": "ExecError", "exitCode": 3, "stdout": "before\n"}
        assert got["stream"] == {"exitCode": 0, "chunks": ["one\n", "two\n"]}
        assert "typed\r\n" in got["pty"]["screen"]
        assert {"type": "exit", "exit_code": 5} in got["pty"]["messages"]
        assert got["read"] == "hello" and got["list"] == ["a.txt"] and got["readMissing"] == "ENOENT"
        assert got["afterDelete"] == 404
        assert got["badToken"] == {"name": "APIError", "statusCode": 401, "errorCode": "unauthorized"}
        # what the double saw
        assert d.sandboxes == {}
        seen = routes(d)
        assert ("POST", "create", 201) in seen and ("DELETE", "delete", 204) in seen
        assert [r for r in d.seen("get") if r["status"] == 401][0]["authorized"] is False
        creates = d.seen("create")
        assert len(creates) == 1 and creates[0]["authorized"]
        execs = [r for r in d.seen("exec") if r["status"] == 101]
        assert len(execs) == 4 and execs[1]["query"]["cmd"] == ["sh", "-c", "echo before; exit 3"]
        assert ("PUT", "fs.write", 200) in seen and ("GET", "fs.read", 404) in seen


def test_sprites_double_records_execs_and_pty():
    """The lifecycle test deletes its sprite; here one is kept to check
    what the double recorded of an exec and a terminal."""
    with start("sprites") as d:
        code = """
import { SpritesClient } from '@fly/sprites';
const c = new SpritesClient(process.env.DOUBLE_KEY, { baseURL: process.env.DOUBLE_URL });
const s = await c.createSprite('keep');
await s.execFile('sh', ['-c', 'printf x >&2; echo y']);
const p = s.spawn('bash', [], { tty: true, rows: 24, cols: 80 });
await new Promise((r) => p.on('spawn', r));
p.resize(120, 40);
p.stdin.write('exit 7\\r');
await p.wait();
console.log(JSON.stringify({ ok: true }));
process.exit(0);
"""
        assert run_node("sprites", d, code=code) == {"ok": True}
        sb = d.sandboxes["keep"]
        assert sb.status == "running"  # an exec woke it
        assert sb.execs[0]["argv"] == ["sh", "-c", "printf x >&2; echo y"]
        assert (sb.execs[0]["stdout"], sb.execs[0]["stderr"], sb.execs[0]["exit_code"]) == ("y\n", "x", 0)
        assert sb.pty[0]["exit_code"] == 7 and sb.pty[0]["resizes"] == [(120, 40)]
        assert bytes(sb.pty[0]["input"]) == b"exit 7\r"


def test_daytona_sdk_lifecycle():
    with start("daytona") as d:
        got = run_node("daytona", d, "daytona.mjs")
        sid = got["created"]["id"]
        assert got["created"]["state"] == "started" and got["created"]["toolbox"] == d.url + "/toolbox"
        assert got["exec"] == {"exitCode": 0, "result": "hi\noopshello-env\n"}
        assert got["fail"] == {"exitCode": 3, "result": "before\n"}
        assert got["stream"] == {"stdoutChunks": ["one\n", "three\n"], "stderrChunks": ["two"], "exitCode": 0}
        assert got["pty"]["exitCode"] == 5 and "typed\r\n" in got["pty"]["screen"]
        assert got["read"] == "hello" and got["list"] == ["a.txt"]
        assert got["readMissing"] == "DaytonaNotFoundError"
        assert got["preview"]["denied"] == 401 and got["preview"]["allowed"] == 200
        assert got["preview"]["body"].startswith(f"preview of {sid} port 3000")
        assert got["stopped"] == "stopped" and got["restarted"] == "started"
        assert got["execStopped"] == {"name": "DaytonaConflictError", "statusCode": 409}
        assert got["readAfterRestart"] == "kept"  # the disk survives stop
        assert got["afterDelete"] == {"name": "DaytonaNotFoundError", "statusCode": 404}
        assert got["badKey"] == {"name": "DaytonaAuthenticationError", "statusCode": 401, "message": "Invalid API key"}
        assert d.sandboxes == {}
        seen = routes(d)
        for want in [("POST", "create", 200), ("POST", "stop", 200), ("POST", "start", 200),
                     ("DELETE", "delete", 200), ("POST", "exec", 409), ("GET", "pty", 101),
                     ("POST", "pty.resize", 200), ("GET", "exec.logs", 101)]:
            assert want in seen, want
        # the wait loops polled through the transitional states
        assert len(d.seen("get", "GET")) >= 6


DAYTONA_PAUSE = """
import { Daytona } from '@daytonaio/sdk';
const dt = new Daytona({ apiKey: process.env.DOUBLE_KEY, apiUrl: process.env.DOUBLE_URL + '/api', target: 'us' });
const sb = await dt.create();
await sb.fs.uploadFile(Buffer.from('kept'), '/tmp/k');
// the SDK has no pause of its own (0.164): the documented call, as the adapter sends it
const r = await fetch(process.env.DOUBLE_URL + '/api/sandbox/' + sb.id + '/pause',
                      { method: 'POST', headers: { Authorization: 'Bearer ' + process.env.DOUBLE_KEY } });
const out = { pauseStatus: r.status, pauseState: (await r.json()).state };
await (await dt.get(sb.id)).refreshData();
out.paused = (await dt.get(sb.id)).state;
try { await sb.fs.downloadFile('/tmp/k'); out.readPaused = 'read'; }
catch (e) { out.readPaused = e.statusCode; }
await sb.start();  // Daytona's start resumes a paused sandbox
out.resumed = sb.state;
out.read = (await sb.fs.downloadFile('/tmp/k')).toString();
await sb.delete();
console.log(JSON.stringify(out));
process.exit(0);
"""


def test_daytona_sdk_resumes_a_paused_sandbox():
    """The double's pause as the adapter calls it (POST /sandbox/{id}/pause;
    the SDK has no pause call), seen by the SDK as "paused" with its toolbox
    refused; the SDK's own start() resumes it, files kept."""
    with start("daytona") as d:
        got = run_node("daytona", d, code=DAYTONA_PAUSE)
        assert got == {"pauseStatus": 200, "pauseState": "pausing", "paused": "paused",
                       "readPaused": 409, "resumed": "started", "read": "kept"}
        assert ("POST", "pause", 200) in routes(d) and ("POST", "start", 200) in routes(d)


def test_vercel_sdk_lifecycle():
    with start("vercel") as d:
        got = run_node("vercel", d, "vercel.mjs")
        sid = got["created"]["id"]
        assert got["foreignUrls"] == []
        assert got["created"]["status"] == "pending"
        assert got["exec"] == {"exitCode": 0, "stdout": "hi\nhello-env\n", "stderr": "oops"}
        assert got["fail"] == {"exitCode": 3, "stdout": "before\n"}
        assert got["stream"] == {"logs": [["stdout", "one\n"], ["stderr", "two"], ["stdout", "three\n"]], "exitCode": 0}
        assert got["read"] == "hello" and got["readRel"] == "in cwd" and got["readMissing"] is None
        assert got["list"] == ["a.txt", "d"]
        assert got["preview"]["status"] == 200 and got["preview"]["body"].startswith(f"preview of {sid} port 3000")
        assert got["stopped"] == "stopped"
        assert got["afterStop"] == {"name": "Error", "status": 410, "code": "sandbox_stopped"}
        assert got["badToken"]["status"] == 403 and got["badToken"]["json"]["error"]["invalidToken"] is True
        sb = d.sandboxes[sid]  # v1 has no delete: a stopped sandbox stays listed
        assert sb.status == "stopped" and sb.project == "prj_double" and sb.team == "team_double"
        assert sb.fs.read("/vercel/sandbox/rel.txt") == b"in cwd"
        assert sb.execs[1]["argv"] == ["sh", "-c", "echo before; exit 3"] and sb.execs[1]["exit_code"] == 3
        assert all(r["query"].get("teamId") == ["team_double"] for r in d.requests if r["route"] != "preview")


def test_deno_sdk_lifecycle():
    with start("deno") as d:
        got = run_node("deno", d, "deno.mjs")
        sid = got["created"]["id"]
        assert re.fullmatch(r"sbx_ord_[0-9a-hjkmnp-z]{20}", sid)
        assert got["exec"] == {"code": 0, "success": True, "stdout": "hi\nhello-env\n", "stderr": "oops"}
        assert got["fail"] == {"code": 3, "success": False, "stdout": "before\n"}
        assert got["stream"] == {"chunks": ["one\n", "two\n"], "code": 0}
        assert got["stdin"] == "from stdin"
        assert got["read"] == "hello" and got["readBytes"] == [0, 1, 2, 255]
        assert got["list"] == ["a.txt", "b.bin"] and got["readMissing"]["code"] == "ENOENT"
        assert got["preview"]["status"] == 200
        assert got["afterKill"] == {"name": "ConnectionEstablishmentError", "status": 404, "code": "SANDBOX_NOT_FOUND"}
        assert got["badToken"]["name"] == "InvalidTokenError"
        sb = d.sandboxes[sid]
        assert sb.status == "stopped" and sb.stop_reason == "killed"
        assert sb.config["memory_mb"] == 1280 and sb.config["labels"] == {"pocketenv": "t1"}
        assert sb.env["GREETING"] == "hello-env"  # set over RPC after create, as the SDK does
        # the session-bound sandbox ended with its WebSocket
        session = d.sandboxes[got["sessionId"]]
        assert session.session_bound and session.status == "stopped" and session.stop_reason == "session closed"
        methods = [r["path"] for r in d.seen("rpc.*")]
        for m in ("envSet", "spawn", "processWait", "writeTextFile", "readTextFile", "writeFile", "readDir", "remove"):
            assert m in methods, m


def test_e2b_sdk_lifecycle():
    """e2b's SDK over the control plane and envd's Connect-RPC (JSON codec,
    enveloped streams), reaching envd through the shared-host headers."""
    with start("e2b") as d:
        got = run_node("e2b", d, "e2b.mjs")
        sid = got["created"]["id"]
        assert got["created"]["running"] is True
        assert got["exec"] == {"stdout": "hi\nhello-env\n", "stderr": "oops", "exitCode": 0}
        assert got["fail"] == {"exitCode": 3, "stdout": "before\n"}
        assert got["stream"] == {"exitCode": 0, "chunks": ["one\n", "two\n"]}
        assert got["stdin"] == "from stdin"
        assert got["pty"]["exitCode"] == 5 and "typed\r\n" in got["pty"]["screen"]
        assert got["read"] == "hello" and got["list"] == ["a.txt"] and got["readMissing"] == "FileNotFoundError"
        assert got["paused"] is True and got["info"] == "paused" and got["readAfterResume"] == "back\n"
        assert got["afterDelete"] == "SandboxNotFoundError"
        assert got["badKey"]["name"] == "AuthenticationError"
        assert d.sandboxes == {}
        seen = routes(d)
        for want in [("POST", "create", 201), ("POST", "pause", 204), ("POST", "connect", 201),
                     ("DELETE", "delete", 204), ("GET", "fs.read", 404), ("POST", "process.Update", 200),
                     ("POST", "process.SendInput", 200), ("POST", "create", 401)]:
            assert want in seen, want
        envd = [r for r in d.requests if r["route"] in ("exec", "fs.read", "fs.write")]
        assert envd and all(r["authorized"] for r in envd)  # the X-Access-Token of create
        assert [r for r in d.seen("create") if r["status"] == 401][0]["authorized"] is False
        assert all(r["path"] != f"/sandboxes/{sid}" or r["method"] != "GET" or r["status"] in (200, 404)
                   for r in d.requests)


E2B_SNAPSHOTS = """
import { Sandbox } from 'e2b'
process.env.E2B_API_URL = process.env.DOUBLE_URL
process.env.E2B_SANDBOX_URL = process.env.DOUBLE_URL
process.env.E2B_API_KEY = process.env.DOUBLE_KEY
const src = await Sandbox.create('base')
await src.files.write('/tmp/s.txt', 'snapped')
const snap = await Sandbox.createSnapshot(src.sandboxId)
await src.files.write('/tmp/s.txt', 'changed later')
const copy = await Sandbox.create(snap.snapshotId)
const out = { snapshotId: snap.snapshotId, read: await copy.files.read('/tmp/s.txt') }
await copy.kill()
await src.kill()
out.deleted = await Sandbox.deleteSnapshot(snap.snapshotId)
out.deletedAgain = await Sandbox.deleteSnapshot(snap.snapshotId)
console.log(JSON.stringify(out))
"""


def test_e2b_sdk_snapshots():
    """e2b's Sandbox.createSnapshot, a sandbox made from its id, and
    deleteSnapshot (false the second time: the double's 404)."""
    with start("e2b") as d:
        got = run_node("e2b", d, code=E2B_SNAPSHOTS)
        assert got["read"] == "snapped", got
        assert got["deleted"] is True and got["deletedAgain"] is False, got
        assert d.snapshots == {} and ("POST", "snapshot", 201) in routes(d)


VERCEL_SNAPSHOTS = """
import { Sandbox } from '@vercel/sandbox'
const url = process.env.DOUBLE_URL, API = 'https://vercel.com/api'
const toDouble = (input, init = {}) => {
  const u = String(input instanceof Request ? input.url : input)
  if (!u.startsWith(API)) throw new Error('outside the API base: ' + u)
  const { dispatcher, ...rest } = init
  return fetch(url + u.slice(API.length), rest)
}
const creds = { token: process.env.DOUBLE_KEY, teamId: 'team_double', projectId: 'prj_double', fetch: toDouble }
const src = await Sandbox.create({ ...creds, timeout: 600000 })
await src.writeFiles([{ path: '/vercel/sandbox/s.txt', content: Buffer.from('snapped') }])
const snap = await src.snapshot()
const out = { status: snap.status, source: snap.sourceSandboxId === src.sandboxId }
out.srcAfter = (await Sandbox.get({ ...creds, sandboxId: src.sandboxId })).status
const copy = await Sandbox.create({ ...creds, source: { type: 'snapshot', snapshotId: snap.snapshotId } })
const r = await copy.runCommand('cat', ['/vercel/sandbox/s.txt'])
out.read = await r.stdout()
out.copySource = copy.sourceSnapshotId === snap.snapshotId
await snap.delete()
out.deleted = snap.status
console.log(JSON.stringify(out))
"""


def test_vercel_sdk_snapshots():
    """@vercel/sandbox's sandbox.snapshot() (the source stops), a sandbox
    made from it (source: snapshot), and snapshot.delete(); the source is
    "snapshotting" on its way to stopped. (Not
    Snapshot.get: 1.9.3 does not pass its `fetch` option on, so it would
    call vercel.com.)"""
    with start("vercel") as d:
        got = run_node("vercel", d, code=VERCEL_SNAPSHOTS)
        assert got == {"status": "created", "source": True, "srcAfter": "snapshotting", "read": "snapped",
                       "copySource": True, "deleted": "deleted"}, got
        assert d.snapshots == {}


BLAXEL_SNAPSHOTS = """
process.env.BL_API_URL = process.env.DOUBLE_URL + '/v0'
process.env.BL_WORKSPACE = process.env.DOUBLE_WORKSPACE
process.env.BL_API_KEY = process.env.DOUBLE_KEY
const { SandboxInstance, Snapshot } = await import('@blaxel/core')
const out = {}
const src = await SandboxInstance.create({ name: 'snap-src' })
await SandboxInstance.get('snap-src')
await src.fs.write('/tmp/s.txt', 'snapped')
const snap = await src.snapshots.create('keep-1')
out.created = { name: snap.name, status: snap.status, source: snap.source.name }
out.firstLook = (await Snapshot.get(snap.id)).status
out.secondLook = (await Snapshot.get(snap.id)).status
out.listed = (await src.snapshots.list()).map((x) => x.name)
await src.fs.write('/tmp/s.txt', 'changed')
out.restored = await src.snapshots.restore(snap.name)
await SandboxInstance.get('snap-src')
out.afterRestore = await src.fs.read('/tmp/s.txt')
await SandboxInstance.delete('snap-src')
out.sourceDeleted = (await Snapshot.get(snap.id)).source.deleted
out.fork = await snap.fork('snap-copy')
const copy = await SandboxInstance.get('snap-copy')
out.copyStatus = copy.status
await SandboxInstance.get('snap-copy')
out.copyRead = await copy.fs.read('/tmp/s.txt')
const page = await Snapshot.list()
out.workspace = page.data.map((x) => x.name)
await Snapshot.delete(snap.id)
try {
  await Snapshot.get(snap.id)
  out.afterDelete = 'still there'
} catch (e) {
  out.afterDelete = e?.error ?? String(e?.message ?? e).slice(0, 100)
}
await SandboxInstance.delete('snap-copy')
console.log(JSON.stringify(out))
process.exit(0)
"""


def test_blaxel_sdk_snapshots():
    """@blaxel/core 0.3's snapshots against the double: sandbox.snapshots
    .create (the workspace call), Snapshot.get ("pending", then "ready"),
    .list, .restore onto its sandbox (the files back), Snapshot.fork after
    the source is deleted (the copy has the snapshot's files), Snapshot
    .list and .delete (not found after)."""
    with start("blaxel") as d:
        got = run_node("blaxel", d, code=BLAXEL_SNAPSHOTS, extra_env={"DOUBLE_WORKSPACE": d.workspace})
        assert got["created"] == {"name": "keep-1", "status": "pending", "source": "snap-src"}, got
        assert (got["firstLook"], got["secondLook"]) == ("pending", "ready"), got
        assert got["listed"] == ["keep-1"] and got["restored"]["name"] == "snap-src", got
        assert got["afterRestore"] == "snapped" and got["sourceDeleted"] is True, got
        assert got["fork"]["name"] == "snap-copy" and got["fork"]["type"] == "sandbox", got
        assert got["copyStatus"] == "DEPLOYING" and got["copyRead"] == "snapped", got
        assert got["workspace"] == ["keep-1"] and got["afterDelete"].endswith(" not found"), got
        assert d.snapshots == {} and d.sandboxes == {}
        seen = routes(d)
        for want in [("POST", "snapshot.root", 200), ("POST", "snapshot.restore", 200),
                     ("POST", "snapshot.fork", 200), ("DELETE", "snapshot.delete", 204),
                     ("GET", "snapshot.get", 404)]:
            assert want in seen, want


SPRITES_CHECKPOINTS = """
import { SpritesClient } from '@fly/sprites'
const client = new SpritesClient(process.env.DOUBLE_KEY, { baseURL: process.env.DOUBLE_URL })
const sprite = await client.createSprite('ckpt-1')
const fs = sprite.filesystem('/')
await fs.writeFile('/tmp/s.txt', 'snapped')
const out = { created: [] }
for await (const m of await sprite.createCheckpoint('before the change')) out.created.push(m.type)
out.list = (await sprite.listCheckpoints()).map((c) => [c.id, c.comment])
out.got = (await sprite.getCheckpoint('v1')).comment
await fs.writeFile('/tmp/s.txt', 'changed')
out.restored = []
for await (const m of await sprite.restoreCheckpoint('v1')) out.restored.push(m.type)
out.afterRestore = await fs.readFile('/tmp/s.txt', 'utf8')
try {
  await sprite.getCheckpoint('v9')
  out.missing = 'found'
} catch (e) {
  out.missing = String(e.message)
}
await sprite.delete()
console.log(JSON.stringify(out))
process.exit(0)
"""


def test_sprites_sdk_checkpoints():
    """@fly/sprites' checkpoints against the double: createCheckpoint's
    NDJSON stream (info, then complete), listCheckpoints and
    getCheckpoint by id, restoreCheckpoint (the files back), a missing
    one; the checkpoints go with their sprite."""
    with start("sprites") as d:
        got = run_node("sprites", d, code=SPRITES_CHECKPOINTS)
        assert got["created"] == ["info", "info", "complete"], got
        assert got["list"] == [["v1", "before the change"]] and got["got"] == "before the change", got
        assert got["restored"][-1] == "complete" and got["afterRestore"] == "snapped", got
        assert got["missing"] == "Checkpoint not found: v9", got
        assert d.snapshots == {} and d.sandboxes == {}
        assert ("POST", "checkpoint.restore", 200) in routes(d)


def test_e2b_double_refuses_envd_calls_without_the_access_token():
    async def scenario(d):
        h = {"X-API-Key": d.key}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{d.url}/sandboxes", headers=h, json={"templateID": "base", "secure": True}) as r:
                created = await r.json()
            sid, token = created["sandboxID"], created["envdAccessToken"]
            envd = {"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": "49983"}
            async with s.get(f"{d.url}/files", params={"path": "/tmp/x"}, headers=envd) as r:
                no_token = r.status
            async with s.get(f"{d.url}/files", params={"path": "/tmp/x"},
                             headers={**envd, "X-Access-Token": token}) as r:
                with_token = (r.status, (await r.json())["message"])
            return no_token, with_token

    with start("e2b") as d:
        assert asyncio.run(scenario(d)) == (401, (404, "path '/tmp/x' does not exist"))


def test_runloop_sdk_lifecycle():
    """@runloop/api-client: long polls through 408s, executions with SSE
    tails, stdin, kill, files, suspend/resume, shutdown."""
    with start("runloop") as d:
        got = run_node("runloop", d, "runloop.mjs")
        assert got["created"] == {"status": "provisioning"} and got["running"] == "running"
        assert got["exec"] == {"stdout": "hi\nhello-env\n", "stderr": "oops", "exit": 0}
        assert got["fail"] == {"stdout": "before\n", "exit": 3}
        assert got["stream"] == {"chunks": ["one\n", "two\n"], "exit": 0}
        assert got["stdin"] == "from stdin" and got["killed"] == 143
        assert got["read"] == "hello" and got["download"] == [0, 1, 2, 255] and got["readMissing"] == 404
        assert got["suspended"] == "suspended" and got["resumed"] == "running" and got["readAfterResume"] == "hello"
        assert got["shutdown"] == {"status": "shutdown", "reason": "api_shutdown"}
        assert got["afterShutdown"] == "shutdown"  # shut down devboxes stay listed
        assert got["badKey"]["status"] == 401 and got["badKey"]["name"] == "AuthenticationError"
        (sb,) = d.sandboxes.values()
        assert sb.destroyed and sb.execs[0]["exit_code"] == 0
        seen = routes(d)
        for want in [("POST", "create", 200), ("POST", "wait", 408), ("POST", "wait", 200),
                     ("GET", "exec.stdout", 200), ("POST", "exec.stdin", 200), ("POST", "exec.kill", 200),
                     ("POST", "fs.write", 200), ("POST", "fs.read", 404), ("POST", "suspend", 200),
                     ("POST", "resume", 200), ("POST", "shutdown", 200), ("GET", "get", 401)]:
            assert want in seen, want


def test_hopx_sdk_lifecycle():
    """@hopx-ai/sdk: the control plane with X-API-Key, the agent at the
    sandbox's public_host with the JWT of create or token/refresh."""
    with start("hopx") as d:
        got = run_node("hopx", d, "hopx.mjs")
        assert got["created"] == {"status": "running", "publicHost": d.url}
        assert got["exec"] == {"stdout": "hi\nhello-env\n", "stderr": "oops", "exitCode": 0}
        assert got["fail"] == {"stdout": "before\n", "exitCode": 3}
        assert got["stream"] == [["stdout", "one\n"], ["stdout", "two\n"], ["complete", True]]
        assert got["streamExit"] == 0
        assert got["pty"]["exitCode"] == 5 and "typed\r\n" in got["pty"]["screen"]
        assert got["read"] == "hello" and got["readBytes"] == [0, 1, 2, 255] and got["list"] == ["a.txt", "b.bin"]
        assert got["readMissing"] == "FileNotFoundError"
        assert got["paused"] == "paused" and got["resumed"] == "running"
        assert got["afterDelete"] in ("SandboxExpiredError", "NotFoundError")
        assert got["badKey"]["status"] == 401 and got["badKey"]["name"] == "AuthenticationError"
        assert d.sandboxes == {}
        seen = routes(d)
        for want in [("POST", "create", 201), ("POST", "token", 200), ("PATCH", "env", 200),
                     ("POST", "cmd.run", 200), ("GET", "exec", 101), ("GET", "terminal", 101),
                     ("GET", "fs.read", 200), ("POST", "pause", 200), ("POST", "resume", 200),
                     ("DELETE", "delete", 204), ("POST", "create", 401)]:
            assert want in seen, want
        agent = [r for r in d.requests if r["route"].startswith(("cmd", "exec", "fs.", "terminal", "env"))]
        assert agent and all(r["authorized"] for r in agent)  # every agent call had a JWT of ours


def test_blaxel_sdk_lifecycle():
    """@blaxel/core: the control plane with its two headers, the sandbox
    API at metadata.url, processes, streamed logs, files, delete."""
    with start("blaxel") as d:
        ws = {"DOUBLE_WORKSPACE": d.workspace}
        got = run_node("blaxel", d, "blaxel.mjs", extra_env=ws)
        assert got["created"] == {"name": "pe-t1", "status": "DEPLOYING"}
        assert got["exec"] == {"stdout": "hi\nhello-env\n", "stderr": "oops", "exitCode": 0, "status": "completed"}
        assert got["fail"] == {"stdout": "before\n", "exitCode": 3, "status": "failed"}
        assert got["stream"] == {"lines": [["stdout", "one"], ["stderr", "two"]], "exitCode": 0}
        assert got["read"] == "hello" and got["readBinary"] == [0, 1, 2, 255] and got["list"] == ["a.txt", "b.bin"]
        assert got["readMissing"] == 404
        assert got["afterDelete"]["error"] == "sandbox pe-t1 not found"
        assert d.sandboxes == {}
        bad = run_node("blaxel", d, "blaxel.mjs", extra_env={**ws, "BAD_KEY": "bl_wrong"})
        assert bad["badKey"]["status"] == "unauthorized"
        seen = routes(d)
        for want in [("POST", "create", 200), ("GET", "get", 200), ("POST", "exec", 200),
                     ("GET", "exec.stream", 200), ("PUT", "fs", 200), ("GET", "fs", 404),
                     ("DELETE", "delete", 200), ("GET", "get", 404), ("GET", "get", 401)]:
            assert want in seen, want
        assert [r for r in d.seen("get") if r["status"] == 401][0]["authorized"] is False


def test_modal_sdk_lifecycle():
    """Modal's JS SDK (gRPC over HTTP/2 through @grpc/grpc-js) against the
    double: control plane, then exec and stdio on the command router whose
    URL and JWT the double handed out, files through the SDK's fs tool."""
    with start("modal") as d:
        got = run_node("modal", d, "modal.mjs")
        sid = got["created"]["id"]
        assert got["exec"] == {"stdout": "hi\n", "stderr": "oops", "exitCode": 0}
        assert got["fail"] == {"stdout": "before\n", "exitCode": 3}
        assert got["stdin"] == {"stdout": "from stdin", "exitCode": 0}
        assert got["read"] == "hello" and got["readMissing"] == "SandboxFilesystemNotFoundError"
        assert got["list"] == [["a.txt", "file", 5]]
        assert "in-pty\r\n" in got["pty"]["stdout"] and got["pty"]["exitCode"] == 5
        assert got["pollBefore"] is None and got["waited"] == 137  # terminated: 137, as Modal reports it
        assert got["badKey"]["code"] == 16  # UNAUTHENTICATED
        sb = d.sandboxes[sid]
        assert sb.status == "terminated" and sb.image == ["FROM alpine:3.21"]
        assert sb.milli_cpu == 2000 and sb.memory_mb == 1024 and sb.timeout_secs == 600
        assert bytes(sb.fs.read("/tmp/a.txt")) == b"hello"
        assert (sb.pty[-1]["rows"], sb.pty[-1]["cols"]) == (24, 80)  # the SDK's default terminal
        seen = [(r["route"], r["status"]) for r in d.requests]
        for want in [("app", 0), ("image", 0), ("create", 0), ("task", 0), ("router", 0), ("exec", 0),
                     ("exec.stdio", 0), ("exec.wait", 0), ("exec.stdin:stream", 0), ("delete", 0),
                     ("auth.token", 16)]:
            assert want in seen, want
        cp = [r for r in d.requests if not r["route"].startswith("exec") and r["status"] == 0]
        assert cp and all(r["authorized"] for r in cp)


def grpc_curl(d, path, body=b"", headers=()):
    """One gRPC call with the curl tool over h2c: (grpc-status, its message)."""
    cmd = ["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-", "-X", "POST",
           "-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary", "@-",
           "--max-time", "10"]
    for h in headers:
        cmd += ["-H", h]
    p = subprocess.run(cmd + [d.url + path], input=body, capture_output=True, timeout=20)
    head = p.stdout.decode(errors="replace")
    status = [ln.split(":", 1)[1].strip() for ln in head.splitlines() if ln.lower().startswith("grpc-status:")]
    msg = [ln.split(":", 1)[1].strip() for ln in head.splitlines() if ln.lower().startswith("grpc-message:")]
    return (int(status[0]) if status else None), (msg[0] if msg else "")


def test_modal_double_rejects_a_wrong_token_and_bad_input_as_grpc_does():
    from tests.doubles.modal import pb_encode
    with start("modal") as d:
        app = pb_encode((1, "pocketenv"), (3, 1))
        frame = b"\0" + len(app).to_bytes(4, "big") + app
        path = "/modal.client.ModalClient/AppGetOrCreate"
        for hdrs in ([], [f"x-modal-token-id: {d.token_id}", "x-modal-token-secret: as-wrong"],
                     [f"x-modal-token-id: {d.token_id}x", f"x-modal-token-secret: {d.token_secret}"]):
            assert grpc_curl(d, path, frame, hdrs)[0] == 16, hdrs
        good = [f"x-modal-token-id: {d.token_id}", f"x-modal-token-secret: {d.token_secret}"]
        assert grpc_curl(d, path, frame, good) == (0, "")
        assert grpc_curl(d, path, b"\0\0\0\0\x03\xff\xff\xff", good)[0] == 3  # not protobuf: INVALID_ARGUMENT
        assert grpc_curl(d, path, b"\1\0\0", good)[0] == 3  # not one uncompressed message
        assert grpc_curl(d, "/modal.client.ModalClient/NoSuchRpc", frame, good)[0] == 12  # UNIMPLEMENTED
        assert d.seen("unknown")[0]["status"] == 12
        # a router call with the control plane's token but no task JWT
        assert grpc_curl(d, "/modal.task_command_router.TaskCommandRouter/TaskExecWait",
                         b"\0\0\0\0\0", good)[0] == 16


def test_kubernetes_sdk_lifecycle():
    """@kubernetes/client-node through a kubeconfig: it creates a pod, its
    watch sees it added, running and deleted, it execs into it (exit code
    from the status channel, stdin closed with v5's close message, a TTY),
    forwards a port to a server in it (PortForward, v4.channel.k8s.io: the
    port prefix of each channel taken off, the kubelet's error on channel
    1) and deletes it; a wrong token is 401. The double runs the commands for
    real (the pod's environment reaches them)."""
    with start("kubernetes") as d:
        got = run_node("kubernetes", d, "kubernetes.mjs")
        assert got["created"] == {"name": "sdk-pod", "phase": "Pending"} and got["read"] == "Running"
        assert got["exec"] == {"status": "Failure", "exitCode": 3, "stdout": "hi\nfrom-env\n", "stderr": "oops\n"}
        assert got["ok"] == {"status": "Success", "exitCode": 0, "stdout": "fine\n", "stderr": ""}
        assert got["stdin"]["stdout"] == "from stdin" and got["stdin"]["exitCode"] == 0
        assert got["tty"]["exitCode"] == 5 and "typed\r\n" in got["tty"]["stdout"]
        assert got["serve"]["exitCode"] == 0, got["serve"]
        fwd = got["forward"]
        assert fwd["protocol"] == "v4.channel.k8s.io" and fwd["stderr"] == "", fwd
        assert fwd["stdout"].startswith("HTTP/1.") and fwd["stdout"].endswith("\r\n\r\nserved-in-pod\n"), fwd
        refused = got["forwardRefused"]
        assert refused["stdout"] == "" and "failed to connect" in refused["stderr"], refused
        assert [e[0] for e in got["events"]] == ["ADDED", "MODIFIED", "DELETED"]
        assert got["events"][1][2] == "Running"
        assert got["afterDelete"] == 404 and got["badKey"] == 401
        assert d.sandboxes == {}
        seen = routes(d)
        for want in [("POST", "create", 201), ("GET", "exec", 101), ("DELETE", "delete", 200),
                     ("GET", "get", 404), ("GET", "list", 401)]:
            assert want in seen, want
        assert len(d.seen("exec")) == 5 and d.seen("watch") and len(d.seen("portforward")) == 2


def test_cloudflare_bridge_contract():
    """The bridge Worker has no client SDK: the reference's contract
    (providers.md 7.8), spoken by hand, plus a PTY session."""
    async def scenario(d):
        h = {"Authorization": f"Bearer {d.key}"}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{d.url}/v1/sandbox", headers=h) as r:
                assert r.status == 200
                sid = (await r.json())["id"]
            assert re.fullmatch(r"[a-z2-7]{24}", sid)
            states = []
            for _ in range(2):
                async with s.get(f"{d.url}/v1/sandbox/{sid}/running", headers=h) as r:
                    states.append((await r.json())["running"])
            assert states == [False, True]
            body = {"argv": ["sh", "-c", "echo hi; printf oops >&2; exit 3"], "timeout_ms": 10000, "cwd": "/workspace"}
            async with s.post(f"{d.url}/v1/sandbox/{sid}/exec", headers=h, json=body) as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
                events = parse_sse(await r.text())
            assert events == [("stdout", base64.b64encode(b"hi\n").decode()),
                              ("stderr", base64.b64encode(b"oops").decode()), ("exit", '{"exit_code": 3}')]
            async with s.put(f"{d.url}/v1/sandbox/{sid}/file/workspace/a.txt", headers=h, data=b"hello") as r:
                assert (r.status, await r.json()) == (200, {"ok": True})
            async with s.get(f"{d.url}/v1/sandbox/{sid}/file/workspace/a.txt", headers=h) as r:
                assert (r.status, await r.read()) == (200, b"hello")
            async with s.get(f"{d.url}/v1/sandbox/{sid}/file/etc/passwd", headers=h) as r:
                assert r.status == 400 and (await r.json())["code"] == "invalid_request"
            async with s.get(f"{d.url}/v1/sandbox/{sid}/pty", headers=h) as r:
                assert r.status == 400  # a plain GET
            async with s.ws_connect(f"{d.url}/v1/sandbox/{sid}/pty?cols=80&rows=24&session=s1", headers=h) as ws:
                assert json.loads((await ws.receive()).data) == {"type": "ready"}
                await ws.send_str(json.dumps({"type": "resize", "cols": 100, "rows": 40}))
                await ws.send_bytes(b"cat /workspace/a.txt\r")
                screen = await read_until(ws, b"hello")
                await ws.send_bytes(b"exit 2\r")
                tail = [m async for m in ws]
            assert b"cat /workspace/a.txt\r\nhello" in screen
            assert json.loads(tail[-1].data) == {"type": "exit", "code": 2}
            async with s.post(f"{d.url}/v1/sandbox/{sid}/tunnel/8080", headers=h) as r:
                tunnel = await r.json()
            async with s.get(tunnel["url"]) as r:
                assert r.status == 200 and (await r.text()).startswith(f"preview of {sid} port 8080")
            async with s.delete(f"{d.url}/v1/sandbox/{sid}", headers=h) as r:
                assert r.status == 204
            async with s.post(f"{d.url}/v1/sandbox", headers={"Authorization": "Bearer wrong"}) as r:
                assert (r.status, await r.json()) == (401, {"error": "Unauthorized", "code": "unauthorized"})
            async with s.get(f"{d.url}/health") as r:
                assert r.status == 200
        return sid

    with start("cloudflare") as d:
        sid = asyncio.run(scenario(d))
        assert sid not in d.sandboxes
        assert d.seen("create")[-1]["status"] == 401 and not d.seen("create")[-1]["authorized"]


def test_cloudflare_sleep_loses_files_and_sessions_keep_state():
    async def scenario(d, sid):
        h = {"Authorization": f"Bearer {d.key}", "Session-Id": "s1"}
        async with aiohttp.ClientSession() as s:
            for argv in (["sh", "-c", "cd /workspace; mkdir -p sub; cd sub; export X=1"], ["sh", "-c", "pwd; env"]):
                async with s.post(f"{d.url}/v1/sandbox/{sid}/exec", headers=h, json={"argv": argv}) as r:
                    events = parse_sse(await r.text())
            return b"".join(base64.b64decode(data) for ev, data in events if ev == "stdout").decode()

    with start("cloudflare") as d:
        sid = create_cf(d)
        out = asyncio.run(scenario(d, sid))
        assert out.startswith("/workspace/sub\n") and "X=1\n" in out
        d.sandboxes[sid].fs.write("/workspace/f", b"x")
        d.call(d.sleep, sid)
        assert "/workspace/f" not in d.sandboxes[sid].fs.files


def create_cf(d):
    req = urllib.request.Request(f"{d.url}/v1/sandbox", method="POST", headers={"Authorization": f"Bearer {d.key}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["id"]


def parse_sse(text):
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], fields.get("data")))
    return events


async def read_until(ws, needle, timeout=10):
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while needle not in buf:
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if msg.type == aiohttp.WSMsgType.BINARY:
            buf.extend(msg.data)
        elif msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"WebSocket ended before {needle!r}: {bytes(buf)!r}")
    return bytes(buf)


# ------------------------------------------------------------------ faults through the SDKs

def test_daytona_sdk_surfaces_injected_5xx_then_recovers():
    with start("daytona") as d:
        d.fault("create", status=503, times=1)
        code = """
import { Daytona } from '@daytonaio/sdk';
const dt = new Daytona({ apiKey: process.env.DOUBLE_KEY, apiUrl: process.env.DOUBLE_URL + '/api', target: 'us' });
const out = {};
try { await dt.create(); out.first = 'created'; } catch (e) { out.first = { name: e.name, statusCode: e.statusCode }; }
const sb = await dt.create();
out.second = sb.state;
console.log(JSON.stringify(out));
process.exit(0);
"""
        got = run_node("daytona", d, code=code)
        assert got == {"first": {"name": "DaytonaError", "statusCode": 503}, "second": "started"}
        assert [r["status"] for r in d.seen("create")] == [503, 200]
        assert len(d.sandboxes) == 1  # the failed create left nothing behind


def test_vercel_sdk_retries_a_5xx():
    with start("vercel") as d:
        d.fault("create", status=502, times=1)
        code = """
import { Sandbox } from '@vercel/sandbox';
const API = 'https://vercel.com/api';
const f = (u, { dispatcher, ...rest } = {}) => fetch(process.env.DOUBLE_URL + String(u).slice(API.length), rest);
const sb = await Sandbox.create({ token: process.env.DOUBLE_KEY, teamId: 't', projectId: 'p', fetch: f });
console.log(JSON.stringify({ id: sb.sandboxId }));
process.exit(0);
"""
        got = run_node("vercel", d, code=code)
        assert [r["status"] for r in d.seen("create")] == [502, 200]
        assert list(d.sandboxes) == [got["id"]]


def test_sprites_sdk_sees_a_dropped_exec_websocket():
    with start("sprites") as d:
        d.fault("exec", drop_after=1)
        code = """
import { SpritesClient } from '@fly/sprites';
const c = new SpritesClient(process.env.DOUBLE_KEY, { baseURL: process.env.DOUBLE_URL });
const s = await c.createSprite('drop');
try {
  await s.execFile('sh', ['-c', 'echo one; echo two; echo three']);
  console.log(JSON.stringify({ result: 'completed' }));
} catch (e) {
  console.log(JSON.stringify({ name: e.name, exitCode: e.exitCode, stdout: e.stdout }));
}
process.exit(0);
"""
        got = run_node("sprites", d, code=code)
        # one frame got through, then the connection died without an exit frame
        assert got == {"name": "ExecError", "exitCode": -1, "stdout": "one\n"}


def test_deno_sdk_sees_an_rpc_fault():
    with start("deno") as d:
        d.fault("rpc.readTextFile", status=500, message="disk on fire")
        code = """
import { Sandbox } from '@deno/sandbox';
const u = process.env.DOUBLE_URL;
const sb = await Sandbox.create({ token: process.env.DOUBLE_KEY, sandboxEndpoint: u, apiEndpoint: u });
let out;
try {
  await sb.fs.readTextFile('/etc/hostname');
  out = 'read';
} catch (e) {
  out = { name: e.name, message: e.message };
}
await sb.kill();
console.log(JSON.stringify(out));
process.exit(0);
"""
        got = run_node("deno", d, code=code)
        assert got["name"] == "RpcError" and "disk on fire" in got["message"]


# ------------------------------------------------------------------ the doubles themselves

@pytest.mark.parametrize("double", sorted(PROVIDERS), indirect=True)
def test_double_listens_on_loopback_only(double):
    host, port = double.url.split("://")[1].split(":")
    assert host == "127.0.0.1"
    if double.name == "modal":  # gRPC over h2c: an asyncio server of its own
        socks = double._server.sockets
    else:
        socks = [sock for site in double._runner.sites for sock in site._server.sockets]
    assert [(s.family, s.getsockname()[0]) for s in socks] == [(socket.AF_INET, "127.0.0.1")]


# Providers whose key travels in a header of its own, not "Authorization: Bearer".
KEY_HEADER = {"e2b": "X-API-Key", "hopx": "X-API-Key", "blaxel": "X-Blaxel-Authorization"}


def key_auth(double, value):
    """Headers that send `value` where double's provider wants its key."""
    name = KEY_HEADER.get(double.name)
    if value is None:
        return {}
    if name is None:
        return {"Authorization": value}
    if double.name == "blaxel":  # a bearer token in a header of its own, with the workspace
        return {name: value if value.startswith("Bearer ") else f"Bearer {value}",
                "X-Blaxel-Workspace": double.workspace}
    return {name: value.removeprefix("Bearer ")}


# Modal speaks gRPC: its credential and bad-input checks are test_modal_double_* below.
HTTP_DOUBLES = sorted(p for p in PROVIDERS if p != "modal")


@pytest.mark.parametrize("double", HTTP_DOUBLES, indirect=True)
def test_double_rejects_a_wrong_credential_in_the_providers_shape(double):
    path = {"sprites": "/v1/sprites", "daytona": "/api/sandbox", "vercel": "/v1/sandboxes",
            "deno": "/api/v3/sandboxes", "cloudflare": "/v1/sandbox/aaaa/running", "e2b": "/v2/sandboxes",
            "runloop": "/v1/devboxes", "hopx": "/v1/sandboxes", "blaxel": "/v0/sandboxes",
            "kubernetes": "/api/v1/namespaces/default/pods"}[double.name]
    want = {"sprites": (401, {"error": "unauthorized"}),
            "daytona": (401, {"statusCode": 401, "error": "Unauthorized"}),
            "vercel": (403, {"error": {"code": "forbidden", "message": "Not authorized", "invalidToken": True}}),
            "deno": (401, {"code": "INVALID_TOKEN"}),
            "cloudflare": (401, {"error": "Unauthorized", "code": "unauthorized"}),
            "e2b": (401, {"code": 401}), "runloop": (401, {"error": "unauthorized"}),
            "hopx": (401, {"code": "unauthorized"}), "blaxel": (401, {"code": "unauthorized"}),
            "kubernetes": (401, {"kind": "Status", "reason": "Unauthorized", "code": 401})}[double.name]
    wrong = (None, "Bearer wrong", f"Bearer {double.key}x")
    wrong += (double.key,) if double.name not in KEY_HEADER else ()
    for auth in wrong:
        status, body = http(double.url + path, headers=key_auth(double, auth))
        assert status == want[0], (auth, status, body)
        assert want[1].items() <= json.loads(body).items()
    if double.name in KEY_HEADER:  # the key as a bearer token is no key
        status, _ = http(double.url + path, auth=f"Bearer {double.key}")
        assert status == want[0]
    status, _ = http(double.url + path, headers=key_auth(double, f"Bearer {double.key}"))
    assert status == 200


@pytest.mark.parametrize("double", HTTP_DOUBLES, indirect=True)
def test_double_answers_bad_input_in_the_providers_shape(double):
    js = {"Content-Type": "application/json", **key_auth(double, f"Bearer {double.key}")}
    bad = {"sprites": ("POST", "/v1/sprites", js), "daytona": ("POST", "/api/sandbox", js),
           "vercel": ("POST", "/v1/sandboxes", js), "cloudflare": ("POST", "/v1/sandbox/aaaa/exec", js),
           "deno": ("GET", "/api/v3/sandboxes/create", {"x-deno-sandbox-config": "%%not base64%%",
                                                          **key_auth(double, f"Bearer {double.key}")}),
           "e2b": ("POST", "/sandboxes", js), "runloop": ("POST", "/v1/devboxes", js),
           "hopx": ("POST", "/v1/sandboxes", js), "blaxel": ("POST", "/v0/sandboxes", js),
           "kubernetes": ("POST", "/api/v1/namespaces/default/pods", js)}[double.name]
    shape = {"sprites": lambda b: b["error"] and b["message"], "daytona": lambda b: b["statusCode"] and b["error"],
             "vercel": lambda b: b["error"]["code"] and b["error"]["message"],
             "cloudflare": lambda b: b["error"] and b["code"], "deno": lambda b: b["code"] and b["message"],
             "e2b": lambda b: b["code"] and b["message"], "runloop": lambda b: b["error"] and b["message"],
             "hopx": lambda b: b["code"] and b["message"], "blaxel": lambda b: b["error"] and b["code"],
             "kubernetes": lambda b: b["kind"] == "Status" and b["code"] and b["message"]}
    status, body = http(double.url + bad[1], bad[0], None, b"{not json" if bad[0] == "POST" else None, headers=bad[2])
    assert status == 400 and shape[double.name](json.loads(body)), body
    status, body = http(double.url + "/no/such/route", "GET", None, headers=key_auth(double, f"Bearer {double.key}"))
    assert status == 404 and shape[double.name](json.loads(body)), body
    assert double.seen("unknown")[0]["status"] == 404


def http(url, method="GET", auth=None, data=None, timeout=10, headers=None):
    h = dict(headers or {})
    if auth:
        h["Authorization"] = auth
    req = urllib.request.Request(url, method=method, data=data, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def test_fault_kinds_as_a_client_sees_them():
    with start("sprites") as d:
        url, auth = d.url + "/v1/sprites", f"Bearer {d.key}"
        d.fault("list", status=503, retry_after=2, times=1)
        req = urllib.request.Request(url, headers={"Authorization": auth})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 503 and e.value.headers["Retry-After"] == "2"
        assert json.loads(e.value.read())["error"] == "injected_fault"
        assert http(url, auth=auth)[0] == 200  # times=1: spent

        d.fault("list", status=429, code="sprite_creation_rate_limited", retry_after=2, times=1)
        status, body = http(url, auth=auth)
        assert status == 429 and json.loads(body)["error"] == "sprite_creation_rate_limited"
        assert json.loads(body)["retry_after_seconds"] == 2

        d.fault("list", unauthorized=True, times=1)
        assert http(url, auth=auth)[0] == 401  # whatever the credential

        d.fault("list", garbage=True, times=1)
        status, body = http(url, auth=auth)
        assert status == 200 and not body.startswith("{")

        d.fault("list", reset=True, times=1)
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(req, timeout=10).read()

        d.fault("list", delay=0.5, times=1)
        t0 = time.monotonic()
        assert http(url, auth=auth)[0] == 200
        assert time.monotonic() - t0 >= 0.5

        d.fault("list", hang=True, times=1)
        t0 = time.monotonic()
        with pytest.raises((TimeoutError, urllib.error.URLError, socket.timeout)):
            urllib.request.urlopen(req, timeout=1).read()
        assert 0.9 <= time.monotonic() - t0 < 5
        assert [r["status"] for r in d.seen("list")][:2] == [503, 200]

        # the same through the control endpoint, for a double in another process
        status, body = http(d.url + "/__double__/faults", method="POST",
                            data=json.dumps({"route": "get", "status": 500, "times": 1}).encode(),
                            headers={"Content-Type": "application/json"})
        assert status == 200 and json.loads(body)["route"] == "get"
        assert http(d.url + "/v1/sprites/nope", auth=auth)[0] == 500
        assert http(d.url + "/v1/sprites/nope", auth=auth)[0] == 404
        status, body = http(d.url + "/__double__/faults", method="POST", data=b'{"route":"x","bogus":1}',
                            headers={"Content-Type": "application/json"})
        assert status == 400 and "bogus" in body
        state = json.loads(http(d.url + "/__double__/state")[1])
        assert state["provider"] == "sprites" and state["requests"]


def test_stream_faults_drop_and_slow_a_websocket():
    async def exec_frames(d, name):
        url = f"{d.url}/v1/sprites/{name}/exec?cmd=sh&cmd=-c&cmd=echo+hello+world&stdin=false"
        frames = []
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(url, headers={"Authorization": f"Bearer {d.key}"}) as ws:
                async for m in ws:
                    if m.type == aiohttp.WSMsgType.BINARY:
                        frames.append(m.data)
                close_code = ws.close_code
        return frames, None, close_code

    with start("sprites") as d:
        http(d.url + "/v1/sprites", method="POST", auth=f"Bearer {d.key}", data=b'{"name":"w"}',
             headers={"Content-Type": "application/json"})
        frames, _, code = asyncio.run(exec_frames(d, "w"))
        assert frames == [b"\x01hello world\n", b"\x03\x00"] and code == 1000

        d.fault("exec", chunk_delay=0.1, times=1)
        frames, _, code = asyncio.run(exec_frames(d, "w"))
        assert b"".join(f[1:] for f in frames[:-1]) == b"hello world\n" and len(frames) == 4
        sent = d.seen("exec")[-1]["sent"]  # when the double sent each piece
        assert len(sent) == 3 and all(b - a >= 0.1 for a, b in zip(sent, sent[1:]))

        d.fault("exec", drop_after=1, times=1)
        frames, _, code = asyncio.run(exec_frames(d, "w"))
        assert frames == [b"\x01hello world\n"] and code != 1000  # no exit frame, no clean close


def test_interpreter_does_what_its_docstring_says():
    from tests.doubles._core import Interpreter, MemFS

    async def run(script, env=None, fs=None):
        fs = fs or MemFS()
        got = {1: bytearray(), 2: bytearray()}

        async def out(fd, data):
            got[fd].extend(data)
        code = await Interpreter(fs, env or {}).run_script(script, out)
        return code, bytes(got[1]), bytes(got[2])

    fs = MemFS()
    fs.write("/tmp/a.txt", b"hello")
    cases = [
        ("echo hi", None, (0, b"hi\n", b"")),
        ("echo -n hi", None, (0, b"hi", b"")),
        ("printf 'a %s %d%%\\n' x 3", None, (0, b"a x 3%\n", b"")),
        ("printf oops >&2; exit 3", None, (3, b"", b"oops")),
        ("echo out 1>&2", None, (0, b"", b"out\n")),
        ("cat /tmp/a.txt", None, (0, b"hello", b"")),
        ("cat /nope", None, (1, b"", b"cat: /nope: No such file or directory\n")),
        ("env", {"B": "2", "A": "1"}, (0, b"A=1\nB=2\n", b"")),
        ("printenv A", {"A": "1"}, (0, b"1\n", b"")),
        ("false && echo no || echo yes", None, (0, b"yes\n", b"")),
        ("echo x > /tmp/b; cat /tmp/b; rm /tmp/b; test -e /tmp/b", None, (1, b"x\n", b"")),
        ("exit 300", None, (44, b"", b"")),
        ("nosuch arg", None, (127, b"", b"sh: nosuch: command not found\n")),
        ("echo a | cat", None, (2, b"", None)),
        ("echo $(id)", None, (2, b"", None)),
    ]
    for script, env, want in cases:
        got = asyncio.run(run(script, env, fs))
        if want[2] is None:
            assert got[:2] == want[:2] and b"unsupported" in got[2], script
        else:
            assert got == want, script


def test_exec_timeouts_and_signals():
    """What adapters will lean on beyond the SDK runs: Daytona's execute
    timeout (408), a Sprites signal frame, a Vercel kill, the bridge's
    timeout_ms (an SSE error event)."""
    async def sprites_signal(d):
        h = {"Authorization": f"Bearer {d.key}"}
        async with aiohttp.ClientSession() as s:
            await s.post(f"{d.url}/v1/sprites", json={"name": "x"}, headers=h)
            url = f"{d.url}/v1/sprites/x/exec?cmd=sh&cmd=-c&cmd=echo+a;+sleep+30;+echo+b&stdin=true"
            async with s.ws_connect(url, headers=h) as ws:
                assert json.loads((await ws.receive()).data)["type"] == "session_info"
                assert (await ws.receive()).data == b"\x01a\n"
                await ws.send_str(json.dumps({"type": "signal", "signal": "SIGINT"}))
                frames = [m.data async for m in ws]
        return frames

    with start("sprites") as d:
        t0 = time.monotonic()
        assert asyncio.run(sprites_signal(d)) == [bytes([3, 130])]
        assert time.monotonic() - t0 < 10 and d.sandboxes["x"].execs[0]["exit_code"] == 130

    with start("daytona") as d:
        auth = f"Bearer {d.key}"
        status, body = http(f"{d.url}/api/sandbox", "POST", auth, b"{}", headers={"Content-Type": "application/json"})
        sid = json.loads(body)["id"]
        for _ in range(2):
            http(f"{d.url}/api/sandbox/{sid}", auth=auth)
        t0 = time.monotonic()
        status, body = http(f"{d.url}/toolbox/{sid}/process/execute", "POST", auth,
                            json.dumps({"command": "sleep 30", "timeout": 1}).encode(),
                            headers={"Content-Type": "application/json"})
        assert status == 408 and json.loads(body)["statusCode"] == 408 and time.monotonic() - t0 < 10

    with start("vercel") as d:
        auth, js = f"Bearer {d.key}", {"Content-Type": "application/json"}
        _, body = http(f"{d.url}/v1/sandboxes?teamId=t", "POST", auth, b'{"projectId":"p"}', headers=js)
        sid = json.loads(body)["sandbox"]["id"]
        _, body = http(f"{d.url}/v1/sandboxes/{sid}/cmd", "POST", auth,
                       json.dumps({"command": "sleep", "args": ["30"]}).encode(), headers=js)
        cid = json.loads(body)["command"]["id"]
        status, body = http(f"{d.url}/v1/sandboxes/{sid}/{cid}/kill", "POST", auth, b'{"signal":9}', headers=js)
        assert status == 200 and json.loads(body)["command"]["exitCode"] == 137

    with start("cloudflare") as d:
        sid = create_cf(d)
        status, body = http(f"{d.url}/v1/sandbox/{sid}/exec", "POST", f"Bearer {d.key}",
                            json.dumps({"argv": ["sleep", "30"], "timeout_ms": 300}).encode(),
                            headers={"Content-Type": "application/json"})
        assert status == 200
        (event, data), = parse_sse(body)
        assert event == "error" and json.loads(data)["code"] == "exec_error"


def test_sprites_sdk_reads_a_rate_limit():
    with start("sprites") as d:
        d.fault("create", status=429, code="sprite_creation_rate_limited", retry_after=2, times=1)
        code = """
import { SpritesClient } from '@fly/sprites';
const c = new SpritesClient(process.env.DOUBLE_KEY, { baseURL: process.env.DOUBLE_URL });
try {
  await c.createSprite('r');
  console.log(JSON.stringify({ created: true }));
} catch (e) {
  const got = { limited: e.isCreationRateLimited(), retry: e.getRetryAfterSeconds(), status: e.statusCode };
  console.log(JSON.stringify(got));
}
process.exit(0);
"""
        assert run_node("sprites", d, code=code) == {"limited": True, "retry": 2, "status": 429}
        assert d.sandboxes == {}
