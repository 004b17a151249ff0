"""The E2B API on the daemon (issue 16, docs/e2b.md): E2B's own SDK from npm
(package.json pins `e2b`), pointed at the daemon only by E2B_API_URL,
E2B_SANDBOX_URL and E2B_API_KEY, makes and drives ordinary Pocketenv
sandboxes. Raw HTTP checks what the SDK never sends: bad keys, other users'
sandboxes, broken Connect envelopes."""
import base64
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import urllib.parse

import pytest

from conftest import BIN, wait_for
from test_daemon import serving
from test_daemon_restart import served  # noqa: F401 (a fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVE = os.path.join(ROOT, "tests", "e2b", "drive.mjs")


def e2b_key(token):
    """Our token in the shape E2B's SDK insists on: e2b_ and hex."""
    return "e2b_" + token.encode().hex()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("e2b")) as d:
        d.port = int(d.url.rsplit(":", 1)[1])
        yield d


def need_sdk():
    if shutil.which("node") is None:
        pytest.skip("node is not installed (scripts/setup installs it)")
    if not os.path.isfile(os.path.join(ROOT, "node_modules", "e2b", "package.json")):
        pytest.skip("e2b is not installed: run `npm ci` (package.json pins it)")


def drive(d, scenario, key=None, timeout=180, template="busybox", env=None, url=None):
    """Run a scenario of tests/e2b/drive.mjs against d (at url: another
    daemon's address) and return what it printed."""
    need_sdk()
    env = dict(os.environ, E2B_API_URL=url or d.url, E2B_SANDBOX_URL=url or d.url,
               E2B_API_KEY=key or e2b_key(d.token), **(env or {}))
    env.pop("NODE_OPTIONS", None)
    p = subprocess.run(["node", DRIVE, scenario, template], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert "error" not in out, out
    return out


def request(d, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one raw request."""
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def api(d, method, path, body=None, key="owner"):
    h = {"Content-Type": "application/json"}
    if key == "owner":
        key = d.token
    if key is not None:
        h["X-API-Key"] = key
    st, _, raw = request(d, method, path, json.dumps(body) if body is not None else None, h)
    return st, (json.loads(raw) if raw else None)


def envd(d, sandbox_id, path, body, key="owner", content_type="application/json"):
    h = {"Content-Type": content_type, "E2b-Sandbox-Id": sandbox_id,
         "E2b-Sandbox-Port": "49983", "Connect-Protocol-Version": "1"}
    if key == "owner":
        key = d.token
    if key is not None:
        h["X-Access-Token"] = key
    return request(d, "POST", path, body, h)


def envelopes(raw):
    """[(flags, JSON)] of a Connect stream's body."""
    out = []
    while raw:
        flags, n = struct.unpack(">BI", raw[:5])
        out.append((flags, json.loads(raw[5:5 + n])))
        raw = raw[5 + n:]
    return out


def create(d, **extra):
    st, sb = api(d, "POST", "/sandboxes", {"templateID": "busybox", "timeout": 300, **extra})
    assert st == 201, sb
    return sb


def test_sdk_flow_commands_files_lifecycle(daemon):
    out = drive(daemon, "flow")
    assert out["run"] == {"stdout": "hi there\n", "stderr": "oops\n", "exitCode": 0}
    assert out["exit3"] == {"exitCode": 3}
    assert out["streamedBeforeInput"] is True
    assert out["background"]["stdout"] == "ready\ngot ping\n"
    assert out["background"]["exitCode"] == 0
    assert out["listed"] and out["killed"] and out["killedWait"] == {"exitCode": 137}
    assert out["read"] == "hello file"
    assert out["list"] == [{"name": "a.txt", "type": "file", "size": 10}]
    assert out["exists"] == [True, False]
    assert out["makeDir"] is True and out["afterRename"] == "hello file"
    assert out["afterRemove"] is False
    assert out["readMissing"]["name"] == "FileNotFoundError"
    assert out["info"] == {"sandboxId": out["sandboxId"], "templateId": "busybox",
                           "metadata": {"suite": "e2b"}, "state": "running"}
    assert out["inList"] and out["isRunning"]
    assert out["kill"] is True and out["killedAgain"] is False
    # Gone for our own API too: it was a Pocketenv sandbox all along.
    assert daemon.sandbox("getSandbox", out["sandboxId"])[0] == 404


def test_sdk_wrong_key_is_an_authentication_error(daemon):
    other_key = e2b_key("not-a-token")
    out = drive(daemon, "badKey", key=other_key)
    assert out["create"]["name"] == "AuthenticationError", out


def test_sdk_unknown_sandbox(daemon):
    out = drive(daemon, "unknown")
    assert out["connect"]["name"] == "SandboxNotFoundError"
    assert out["getInfo"]["name"] == "SandboxNotFoundError"
    assert out["kill"] is False


def test_e2b_sandboxes_are_pocketenv_sandboxes(daemon):
    sb = create(daemon, envVars={"FROM_E2B": "yes"})
    sid = sb["sandboxID"]
    st, mine = daemon.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local"})
    assert st == 200 and sid in [s["id"] for s in mine["sandboxes"]]
    st, got = daemon.sandbox("getSandbox", sid)
    assert st == 200 and got["sandbox"]["status"] == "RUNNING"
    # Its variables are the sandbox's, seen by our exec as by E2B's.
    st, ex = daemon.sandbox("exec", sid, {"command": "echo $FROM_E2B"})
    assert (st, ex["stdout"]) == (200, "yes\n")
    # And our delete is E2B's kill.
    assert daemon.sandbox("deleteSandbox", sid)[0] == 200
    assert api(daemon, "GET", f"/sandboxes/{sid}")[0] == 404


def test_timeout_kills_the_sandbox(daemon):
    sid = create(daemon)["sandboxID"]
    assert api(daemon, "POST", f"/sandboxes/{sid}/timeout", {"timeout": 1})[0] == 204
    wait_for(lambda: api(daemon, "GET", f"/sandboxes/{sid}")[0] == 404, 20,
             "the sandbox to be killed at its timeout")
    assert daemon.sandbox("getSandbox", sid)[0] == 404


def test_pause_resume_connect(daemon):
    sid = create(daemon)["sandboxID"]
    assert api(daemon, "POST", f"/sandboxes/{sid}/pause")[0] == 204
    assert api(daemon, "POST", f"/sandboxes/{sid}/pause")[0] == 409
    st, info = api(daemon, "GET", f"/sandboxes/{sid}")
    assert (st, info["state"]) == (200, "paused")
    st, got = api(daemon, "POST", f"/sandboxes/{sid}/connect", {"timeout": 60})
    assert st == 201 and got["sandboxID"] == sid
    st, got = api(daemon, "POST", f"/sandboxes/{sid}/connect", {"timeout": 60})
    assert st == 200
    assert api(daemon, "GET", f"/sandboxes/{sid}")[1]["state"] == "running"
    assert api(daemon, "DELETE", f"/sandboxes/{sid}")[0] == 204


def test_sdk_pause_keeps_processes_and_memory(daemon):
    """E2B's pause freezes the sandbox: a background shell counting in a
    variable is still there after connect and counts on from its value."""
    out = drive(daemon, "pauseKeeps")
    assert out["counting"] is True and out["pausedState"] == "paused"
    assert out["resumedFrom"] >= 3
    assert out["continues"] is True and out["samePid"] is True
    assert out["stateAfter"] == "running"


def test_authz_other_users_and_bad_keys(daemon):
    sid = create(daemon)["sandboxID"]
    other = daemon.token_for("did:key:zSomeoneElseE2b")
    answers = []
    for key in (None, "not-a-jwt", e2b_key("nope"), "e2b_zz", "e2b_0"):
        st, out = api(daemon, "GET", f"/sandboxes/{sid}", key=key)
        assert st == 401, out
        answers.append(json.dumps(out))
        assert api(daemon, "POST", "/sandboxes", {"templateID": "busybox"}, key=key)[0] == 401
        assert api(daemon, "GET", "/v2/sandboxes", key=key)[0] == 401
        st, _, raw = envd(daemon, sid, "/filesystem.Filesystem/Stat", b'{"path":"/"}', key=key)
        assert st == 401 and json.loads(raw)["code"] == "unauthenticated", raw
    # Another user: the sandbox does not exist for them, on either plane.
    for method, path in (("GET", f"/sandboxes/{sid}"), ("DELETE", f"/sandboxes/{sid}"),
                         ("POST", f"/sandboxes/{sid}/timeout"),
                         ("POST", f"/sandboxes/{sid}/pause"),
                         ("POST", f"/sandboxes/{sid}/connect")):
        st, out = api(daemon, method, path, {"timeout": 5}, key=e2b_key(other))
        assert st == 404, (path, out)
        answers.append(json.dumps(out))
    st, lst = api(daemon, "GET", "/v2/sandboxes", key=other)
    assert (st, lst) == (200, [])
    # `pocketenv token create --e2b` mints a key of the shape the SDK takes.
    key = subprocess.run([BIN, "--data", daemon.data, "token", "create", "--e2b"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert key.startswith("e2b_") and set(key[4:]) <= set("0123456789abcdef")
    st, lst = api(daemon, "GET", "/v2/sandboxes", key=key)
    assert st == 200 and sid in [s["sandboxID"] for s in lst]
    st, _, raw = envd(daemon, sid, "/filesystem.Filesystem/Stat", b'{"path":"/"}', key=other)
    assert st == 404, raw
    st, _, raw = envd(daemon, sid, "/process.Process/List", b"{}", key=other)
    assert st == 404, raw
    for a in answers:
        assert "did:" not in a
    assert api(daemon, "GET", f"/sandboxes/{sid}")[1]["state"] == "running"
    assert api(daemon, "DELETE", f"/sandboxes/{sid}")[0] == 204


def test_bad_connect_requests_get_connect_errors(daemon):
    sid = create(daemon)["sandboxID"]
    start = "/process.Process/Start"
    good = json.dumps({"process": {"cmd": "/bin/sh", "args": ["-c", "echo ok"]}}).encode()
    ct = "application/connect+json"
    cases = [
        (b"", "invalid_argument"),                                  # no envelope
        (b"\x00\x00\x00", "invalid_argument"),                      # short head
        (struct.pack(">BI", 0, len(good) + 7) + good, "invalid_argument"),  # length lies
        (struct.pack(">BI", 1, len(good)) + good, "unimplemented"),          # compressed
        (struct.pack(">BI", 0, 1 << 30) + good, "resource_exhausted"),       # oversized frame
        (struct.pack(">BI", 0, 5) + b"nope!", "invalid_argument"),           # not JSON
        (struct.pack(">BI", 0, 2) + b"{}", "invalid_argument"),              # no process
    ]
    for body, code in cases:
        st, h, raw = envd(daemon, sid, start, body, content_type=ct)
        assert st == 200 and h["Content-Type"].startswith(ct), (body[:8], st, raw)
        (flags, end), = envelopes(raw)
        assert flags == 2 and end["error"]["code"] == code, (body[:8], end)
    # A body over the route's limit is refused before it is read.
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as so:
        so.sendall(f"POST {start} HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {sid}\r\n"
                   f"X-Access-Token: {daemon.token}\r\nContent-Type: {ct}\r\n"
                   f"Content-Length: {2 << 20}\r\n\r\n".encode())
        assert so.recv(4096).startswith(b"HTTP/1.1 413")
    # Unary calls: not JSON, not an object, unknown method, unknown pid.
    for path, body, code in (("/process.Process/List", b"[", "invalid_argument"),
                             ("/filesystem.Filesystem/Stat", b"[]", "invalid_argument"),
                             ("/filesystem.Filesystem/Watch", b"{}", "unimplemented"),
                             ("/process.Process/Nope", b"{}", "unimplemented"),
                             ("/process.Process/SendSignal",
                              b'{"process":{"pid":99999},"signal":"SIGNAL_SIGKILL"}', "not_found")):
        st, _, raw = envd(daemon, sid, path, body)
        assert json.loads(raw)["code"] == code, (path, raw)
        assert 400 <= st < 600
    # No E2b-Sandbox-Id: said so.
    st, _, raw = request(daemon, "POST", start, good,
                         {"Content-Type": ct, "X-Access-Token": daemon.token})
    assert st == 400 and b"E2b-Sandbox-Id" in raw
    # The daemon is unharmed: a good Start streams and ends.
    st, _, raw = envd(daemon, sid, start, struct.pack(">BI", 0, len(good)) + good,
                      content_type=ct)
    evs = envelopes(raw)
    assert st == 200 and "start" in evs[0][1]["event"], evs
    assert {"data": {"stdout": "b2sK"}} in [e["event"] for _, e in evs[1:-1]]
    assert evs[-1] == (2, {}) and evs[-2][1]["event"]["end"]["exited"] is True
    assert daemon.healthy()
    assert api(daemon, "DELETE", f"/sandboxes/{sid}")[0] == 204


def test_files_http_api(daemon):
    sid = create(daemon)["sandboxID"]
    h = {"E2b-Sandbox-Id": sid, "X-Access-Token": daemon.token,
         "Content-Type": "application/octet-stream"}
    q = urllib.parse.urlencode({"path": "/tmp/x/bytes.bin"})
    data = bytes(range(256)) * 64
    st, _, raw = request(daemon, "POST", f"/files?{q}", data, h)
    assert st == 200 and json.loads(raw) == [{"path": "/tmp/x/bytes.bin", "name": "bytes.bin",
                                              "type": "file"}]
    st, _, raw = request(daemon, "GET", f"/files?{q}", None, h)
    assert (st, raw) == (200, data)
    q = urllib.parse.urlencode({"path": "/tmp/x/none"})
    st, _, raw = request(daemon, "GET", f"/files?{q}", None, h)
    assert st == 404 and json.loads(raw)["code"] == 404
    st, _, raw = request(daemon, "GET", "/files?path=", None, h)
    assert st == 400
    # Without a key nothing is stored, not even for a moment.
    st, _, _ = request(daemon, "POST", f"/files?{q}", data,
                       {"E2b-Sandbox-Id": sid, "Content-Type": "application/octet-stream"})
    assert st == 401
    st, _, _ = request(daemon, "GET", "/health", None, {"E2b-Sandbox-Id": sid,
                                                        "X-Access-Token": daemon.token})
    assert st == 204
    assert api(daemon, "DELETE", f"/sandboxes/{sid}")[0] == 204


def test_bad_create_bodies(daemon):
    before = api(daemon, "GET", "/v2/sandboxes")[1]
    for body, want in (({}, "templateID"), ({"templateID": "nope-such"}, None),
                       ({"templateID": "busybox", "timeout": -1}, "timeout"),
                       ({"templateID": "busybox", "envVars": {"A": 1}}, "envVars"),
                       ({"templateID": "busybox", "envVars": ["x"]}, "envVars"),
                       ({"templateID": "busybox", "metadata": {"k": "v" * 9000}}, "metadata")):
        st, out = api(daemon, "POST", "/sandboxes", body)
        assert st == 400 and isinstance(out["code"], int), (body, out)
        if want:
            assert want in out["message"], out
    st, _, raw = request(daemon, "POST", "/sandboxes", b'{"templateID":',
                         {"X-API-Key": daemon.token, "Content-Type": "application/json"})
    assert st == 400
    st, lst = api(daemon, "GET", "/v2/sandboxes")
    assert st == 200 and lst == before  # nothing was made


def test_sdk_pty_input_resize_exit(daemon):
    out = drive(daemon, "pty")
    assert out == {"echoed": True, "resized": True, "exit": 5}


def test_sdk_watch_dir(daemon):
    out = drive(daemon, "watch")
    assert out["seen"] is True
    assert {"create:f.txt", "write:f.txt", "remove:f.txt"} <= set(out["types"])
    assert out["missing"]["name"] == "FileNotFoundError"


def test_sdk_watch_dir_recursive(daemon):
    out = drive(daemon, "watchRecursive")
    assert out["newSeen"] is True and out["seen"] is True, out


def open_watch(daemon, sid, request):
    """A WatchDir stream on sid, past its start message: (connection, response)."""
    body = json.dumps(request).encode()
    h = {"Content-Type": "application/connect+json", "E2b-Sandbox-Id": sid,
         "X-Access-Token": daemon.token}
    c = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    c.request("POST", "/filesystem.Filesystem/WatchDir",
              struct.pack(">BI", 0, len(body)) + body, h)
    r = c.getresponse()
    assert r.status == 200
    assert read_envelope(r)[1] == {"start": {}}
    return c, r


def test_recursive_watch_follows_no_symlink(daemon, tmp_path):
    """A recursive watch walks the directories under it, never a symlink:
    one that points at a host directory leads nowhere."""
    sid = create(daemon)["sandboxID"]
    host_dir = tmp_path / "hostdir2"
    host_dir.mkdir()
    st, ex = daemon.sandbox("exec", sid, {"command": f"mkdir -p /tmp/rw/sub {host_dir} && "
                                                     f"ln -s {host_dir} /tmp/rw/link && "
                                                     "ln -s / /tmp/rw/root"})
    assert st == 200 and ex["exitCode"] == 0, ex
    c, r = open_watch(daemon, sid, {"path": "/tmp/rw", "recursive": True})
    (host_dir / "from-host").write_text("x")
    st, _ = daemon.sandbox("exec", sid, {"command": f"touch {host_dir}/in-sandbox /tmp/rw/sub/x"})
    assert st == 200
    assert read_envelope(r)[1] == {"filesystem": {"name": "sub/x", "type": 1}}
    c.close()
    assert api(daemon, "DELETE", f"/sandboxes/{sid}")[0] == 204


def test_watch_stays_inside_the_sandbox(daemon, tmp_path):
    """A symlink in the sandbox pointing at a host directory is resolved inside
    the sandbox (RESOLVE_IN_ROOT): the watch never sees the host's directory."""
    sid = create(daemon)["sandboxID"]
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    st, ex = daemon.sandbox("exec", sid, {"command": f"ln -s {host_dir} /tmp/link && "
                                                     f"mkdir -p {host_dir}"})
    assert st == 200 and ex["exitCode"] == 0, ex
    c, r = open_watch(daemon, sid, {"path": "/tmp/link"})
    # A file made on the host's directory is not an event; one made in the
    # sandbox's directory of that name is.
    (host_dir / "from-host").write_text("x")
    st, _ = daemon.sandbox("exec", sid, {"command": f"touch {host_dir}/from-sandbox"})
    assert st == 200
    assert read_envelope(r)[1] == {"filesystem": {"name": "from-sandbox", "type": 1}}
    c.close()
    assert api(daemon, "DELETE", f"/sandboxes/{sid}")[0] == 204


def test_sdk_agent_loop(daemon):
    out = drive(daemon, "agent")
    assert out["steps"] == [{"stdout": "step 0 done", "value": "6"},
                            {"stdout": "step 1 done", "value": "12"},
                            {"stdout": "step 2 done", "value": "24"}]


def test_sdk_reattach_to_a_running_command(daemon):
    out = drive(daemon, "reattach")
    assert out["first"] == {"stdout": "first\ngot again\n", "exitCode": 0}
    assert out["second"] == {"seen": "got again\n", "exitCode": 0}
    assert out["unknown"]["name"] == "NotFoundError"


def test_sdk_list_filters(daemon):
    out = drive(daemon, "listFilter")
    assert out == {"byMeta": True, "byMeta2": 0, "paused": True, "running": False,
                   "byTemplate": 0}
    for q in ("metadata=%25zz", "metadata=k%3D%2500", "metadata=novalue"):
        st, body = api(daemon, "GET", f"/v2/sandboxes?{q}")
        assert st == 400 and "metadata" in body["message"], (q, body)


@pytest.mark.parametrize("body,status", [
    # a multipart upload without a part named file: said, nothing written
    (b"--B0\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--B0--\r\n", 400),
    # a part that never ends: refused by the server's multipart reader
    (b"--B0\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nno end", 400),
])
def test_broken_multipart_uploads_to_files(daemon, body, status):
    sid = create(daemon)["sandboxID"]
    q = urllib.parse.urlencode({"path": "/tmp/up.txt"})
    st, _, raw = request(daemon, "POST", f"/files?{q}", body,
                         {"E2b-Sandbox-Id": sid, "X-Access-Token": daemon.token,
                          "Content-Type": "multipart/form-data; boundary=B0"})
    assert st == status, raw
    st, _, _ = request(daemon, "GET", f"/files?{q}", None,
                       {"E2b-Sandbox-Id": sid, "X-Access-Token": daemon.token})
    assert st == 404
    assert api(daemon, "DELETE", f"/sandboxes/{sid}")[0] == 204


def timerfds(pid):
    fds = os.listdir(f"/proc/{pid}/fd")
    out = 0
    for fd in fds:
        try:
            out += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[timerfd]"
        except OSError:
            pass
    return out


def test_timeouts_leave_no_timer_behind_and_zero_is_never(daemon):
    before = timerfds(daemon.proc.pid)
    for _ in range(3):
        sid = create(daemon, timeout=1)["sandboxID"]
        wait_for(lambda: api(daemon, "GET", f"/sandboxes/{sid}")[0] == 404, 20,
                 "the sandbox to be killed at its timeout")
    assert timerfds(daemon.proc.pid) <= before
    # timeout 0: no end (E2B's SDK never sends it; the daemon's idle stop applies)
    sid = create(daemon, timeout=0)["sandboxID"]
    st, info = api(daemon, "GET", f"/sandboxes/{sid}")
    assert st == 200 and info["endAt"].startswith("9999")
    assert api(daemon, "DELETE", f"/sandboxes/{sid}")[0] == 204


def test_sdk_list_pages(daemon):
    out = drive(daemon, "paging")
    assert out["sizes"] == [2, 1] and out["all"] is True, out


def test_list_page_bad_queries(daemon):
    for q in ("limit=0", "limit=101", "limit=x", "nextToken=abc", "nextToken=-1",
              "limit=1&nextToken=1234567890"):
        st, out = api(daemon, "GET", "/v2/sandboxes?" + q)
        assert st == 400 and "limit" in out["message"], (q, out)
    sids = [create(daemon)["sandboxID"] for _ in range(2)]
    n = len(api(daemon, "GET", "/v2/sandboxes")[1])  # others' tests may hold some too
    st, h, raw = request(daemon, "GET", f"/v2/sandboxes?limit={n - 1}",
                         headers={"X-API-Key": daemon.token})
    assert st == 200 and len(json.loads(raw)) == n - 1, raw
    assert h.get("x-next-token") == str(n - 1), h
    st, h, raw = request(daemon, "GET", f"/v2/sandboxes?limit={n - 1}&nextToken={n - 1}",
                         headers={"X-API-Key": daemon.token})
    assert st == 200 and len(json.loads(raw)) == 1 and "x-next-token" not in h, (h, raw)
    for sid in sids:
        assert api(daemon, "DELETE", f"/sandboxes/{sid}")[0] == 204


def test_metadata_and_timeouts_outlive_a_restart(served):  # noqa: F811
    """What E2B keeps that our rows do not (metadata, the end of a timeout)
    is there again after the daemon restarts; a timeout that runs out
    while it is down kills the sandbox once it is back."""
    s = served(["--sandbox-net", "none"])
    d = s.start()
    d.port = int(d.url.rsplit(":", 1)[1])
    st, a = api(d, "POST", "/sandboxes", {"templateID": "busybox", "timeout": 600,
                                          "metadata": {"who": "a"}})
    assert st == 201, a
    # b has no metadata: its timeout is kept all the same
    st, b = api(d, "POST", "/sandboxes", {"templateID": "busybox", "timeout": 3})
    assert st == 201, b
    before = api(d, "GET", f"/sandboxes/{a['sandboxID']}")[1]
    s.stop()
    d = s.start()
    d.port = int(d.url.rsplit(":", 1)[1])
    st, after = api(d, "GET", f"/sandboxes/{a['sandboxID']}")
    assert st == 200 and after["metadata"] == {"who": "a"}, after
    assert after["endAt"] == before["endAt"], (before, after)
    wait_for(lambda: api(d, "GET", f"/sandboxes/{b['sandboxID']}")[0] == 404, 30,
             "b to be killed at its timeout after the restart")
    assert api(d, "DELETE", f"/sandboxes/{a['sandboxID']}")[0] == 204
    st, after = api(d, "GET", "/v2/sandboxes")
    assert (st, after) == (200, []), after


def read_envelope(r):
    flags, n = struct.unpack(">BI", r.read(5))
    return flags, json.loads(r.read(n))


@pytest.mark.parametrize("signal,trapped", [("SIGNAL_SIGINT", "INT"), ("SIGNAL_SIGUSR1", "USR1"),
                                            (1, "HUP"), ("SIGNAL_SIGTERM", "TERM")])
def test_send_signal_beyond_kill_and_term(daemon, signal, trapped):
    """SendSignal takes the common signals by E2B's shape of name, or by
    number: the process's trap runs."""
    sid = create(daemon)["sandboxID"]
    cmd = f"trap 'echo got {trapped}; exit 7' {trapped}; echo ready; while :; do sleep 0.05; done"
    body = json.dumps({"process": {"cmd": "/bin/sh", "args": ["-c", cmd]}}).encode()
    h = {"Content-Type": "application/connect+json", "E2b-Sandbox-Id": sid,
         "X-Access-Token": daemon.token}
    c = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    c.request("POST", "/process.Process/Start", struct.pack(">BI", 0, len(body)) + body, h)
    r = c.getresponse()
    pid = read_envelope(r)[1]["event"]["start"]["pid"]
    assert read_envelope(r)[1]["event"] == {"data": {"stdout": "cmVhZHkK"}}  # trap is set
    for bad in ('"SIGNAL_NOPE"', "0", "65", '"9"', "null"):
        st, _, raw = envd(daemon, sid, "/process.Process/SendSignal",
                          f'{{"process":{{"pid":{pid}}},"signal":{bad}}}'.encode())
        assert st == 400 and json.loads(raw)["code"] == "invalid_argument", (bad, raw)
    st, _, raw = envd(daemon, sid, "/process.Process/SendSignal",
                      json.dumps({"process": {"pid": pid}, "signal": signal}).encode())
    assert st == 200, raw
    events = []
    while True:
        flags, e = read_envelope(r)
        if flags == 2:
            break
        events.append(e["event"])
    c.close()
    out = base64.b64decode("".join(e["data"].get("stdout", "") for e in events if "data" in e))
    assert out == f"got {trapped}\n".encode(), events
    assert events[-1]["end"]["exitCode"] == 7, events
    assert api(daemon, "DELETE", f"/sandboxes/{sid}")[0] == 204


def interp(d, method, path, body=b"", key="owner", sandbox_id=None, header="X-Access-Token"):
    """A code interpreter request as @e2b/code-interpreter sends it."""
    h = {"Content-Type": "application/json", "E2b-Sandbox-Port": "49999"}
    if sandbox_id is not None:
        h["E2b-Sandbox-Id"] = sandbox_id
    if key == "owner":
        key = d.token
    if key is not None:
        h[header] = key
    st, _, raw = request(d, method, path, body, h)
    return st, raw


def test_code_interpreter_raw_requests(daemon):
    """What the SDK never sends, and a sandbox with no kernel."""
    sb = create(daemon)
    sid = sb["sandboxID"]
    # The context calls carry only the traffic token: the create gives the key as both.
    assert sb["trafficAccessToken"] == sb["envdAccessToken"]
    other = daemon.token_for("did:key:zSomeoneElseInterp")
    assert interp(daemon, "POST", "/execute", b'{"code":"1"}')[0] == 404  # no sandbox: not ours
    for key in (None, "not-a-jwt", e2b_key("nope")):
        st, raw = interp(daemon, "POST", "/execute", b'{"code":"1"}', key=key, sandbox_id=sid)
        assert st == 401, raw
    for path in ("/execute", "/contexts"):
        st, raw = interp(daemon, "POST", path, b'{"code":"1"}', key=other, sandbox_id=sid)
        assert st == 404, raw
    # A busybox sandbox has no python3 and no Jupyter server: said so.
    for header in ("X-Access-Token", "E2B-Traffic-Access-Token"):
        st, raw = interp(daemon, "GET", "/contexts", sandbox_id=sid, header=header)
        assert st == 503 and b"python template" in raw, raw
    st, raw = interp(daemon, "POST", "/execute", b'{"code":"1"}', sandbox_id=sid)
    assert st == 503 and b"python template" in raw, raw
    # Paths and methods that are none of the interpreter's, and ids that
    # could reach another of the Jupyter server's paths.
    for method, path in (("GET", "/execute"), ("POST", "/execute/x"), ("PUT", "/contexts"),
                         ("DELETE", "/contexts"), ("DELETE", "/contexts/a.b"),
                         ("POST", "/contexts/..%2Fapi/restart"), ("POST", "/contexts/a/b"),
                         ("DELETE", "/contexts/" + "a" * 65), ("GET", "/contexts/abc")):
        st, raw = interp(daemon, method, path, sandbox_id=sid)
        assert st == 404 and json.loads(raw)["code"] == 404, (method, path, raw)
    assert api(daemon, "DELETE", f"/sandboxes/{sid}")[0] == 204


# ---- the code interpreter on the python template (slow: a template) ----

PYTHON_PACKAGES = ("python3-ipykernel", "python3-matplotlib")


def python_built(images):
    """Whether images holds the python template with PYTHON_PACKAGES."""
    try:
        with open(os.path.join(images, "python", "image.json")) as f:
            source = json.load(f).get("source", "")
    except FileNotFoundError:
        return False
    return all(p + "=" in source for p in PYTHON_PACKAGES)


@pytest.fixture(scope="module")
def py_daemon(tmp_path_factory, template_images, debian_first_use):
    """A daemon whose images hold the python template with matplotlib: the
    run's shared template images (test_templates.py's), where it is built
    once for both files."""
    images = template_images
    if not python_built(images):
        shutil.rmtree(os.path.join(images, "python"), ignore_errors=True)  # built before matplotlib
        r = subprocess.run([BIN, "--data", images.rstrip("/") + ".data", "image", "build", "python"],
                           env=dict(os.environ, POCKETENV_IMAGES=images), capture_output=True,
                           text=True, timeout=1800)
        assert r.returncode == 0, r.stderr
        assert python_built(images), "the python template has no " + ", ".join(PYTHON_PACKAGES)
    with serving(tmp_path_factory.mktemp("e2b-py"), env={"POCKETENV_IMAGES": images}) as d:
        yield d


@pytest.fixture(scope="module")
def run_code(py_daemon):
    """One SDK session on a python sandbox, checked piece by piece below."""
    return drive(py_daemon, "interp", template="python", timeout=600)


@pytest.mark.slow
def test_sdk_run_code_keeps_state_between_calls(run_code):
    first, second = run_code["first"], run_code["second"]
    assert first["stdout"] == ["set 41\n"] and first["error"] is None, first
    assert run_code["streamed"] == ["set 41\n"]
    assert second["text"] == "42" and second["error"] is None, second
    assert second["count"] == first["count"] + 1, (first, second)
    assert run_code["defaultStill"]["text"] == "41"


@pytest.mark.slow
def test_sdk_run_code_streams_output_as_it_comes(run_code):
    # the cell goes on only once the client saw its first line
    assert run_code["streamedEarly"] is True
    assert run_code["streamedAll"] == "early\ngo\n"


@pytest.mark.slow
def test_sdk_run_code_error_result(run_code):
    e = run_code["failed"]
    assert e["stdout"] == ["before\n"], e
    assert e["error"]["name"] == "ZeroDivisionError", e
    assert e["error"]["value"] == "division by zero", e
    # Jupyter's traceback, colours and all, as E2B's is
    assert "1 / 0" in re.sub(r"\x1b\[[0-9;]*m", "", e["error"]["traceback"]), e
    assert run_code["afterError"]["text"] == "41"  # an error loses no state


@pytest.mark.slow
def test_sdk_run_code_chart_is_png(run_code):
    assert run_code["chartError"] is None, run_code
    charts = [r for r in run_code["chart"] if "png" in r["formats"]]
    assert len(charts) == 1 and not charts[0]["main"], run_code["chart"]
    png = base64.b64decode(charts[0]["png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert run_code["html"] == ["<b>hi</b>"]


@pytest.mark.slow
def test_sdk_run_code_env_vars_hold_for_one_execution(run_code):
    assert run_code["envs"]["text"] == "'only now'", run_code["envs"]
    assert run_code["envsAfter"]["text"] == "'gone'", run_code["envsAfter"]


@pytest.mark.slow
def test_sdk_code_contexts(run_code):
    assert run_code["context"] == {"language": "python", "cwd": "/tmp", "hasId": True}
    assert run_code["ctxCwd"]["text"] == "'/tmp'"
    assert run_code["ctxSeparate"]["error"]["name"] == "NameError"  # its own state
    assert run_code["listed"] is True
    assert run_code["afterRestart"]["error"]["name"] == "NameError"  # restart: state gone
    assert run_code["cwdAfterRestart"]["text"] == "'/tmp'"  # ...but not its cwd
    assert run_code["listedAfterRemove"] is False
    assert run_code["removedRun"]["name"] == "NotFoundError", run_code["removedRun"]
    assert "not found" in run_code["removedRun"]["message"]
    # The SDK says only the status (400) of a refused language.
    assert run_code["otherLanguage"] == {"name": "SandboxError", "message": "400 Bad Request"}


@pytest.mark.slow
def test_sdk_agent_loop_on_the_interpreter(py_daemon):
    out = drive(py_daemon, "interpAgent", template="python", timeout=600)
    assert out["steps"] == [{"stdout": "step done 3\n", "value": 6},
                            {"stdout": "step done 6\n", "value": 12},
                            {"stdout": "step done 12\n", "value": 24}], out
