"""Upstream's SDK (@pocketenv/sdk 0.2.10) and CLI (@pocketenv/cli 0.7.1)
against a real daemon (issue 12): empty procedure bodies, volumes as the
SDK drives them, and the answers the clients read.

Requests are built the way the clients build them (their public source:
the SDK's src/api-client/api-client.ts and src/*.ts, the CLI's
apps/cli/src/cmd/*.ts), not the way our own tests would: the SDK posts
with `Content-Type: application/json` always and, for a call without a
body, fetch's `Content-Length: 0`.
"""
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import check_xrpc_answer, wait_for
from test_daemon import serving
from test_resources import seal

SB = "io.pocketenv.sandbox."
VOL = "io.pocketenv.volume."


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("compat-clients")) as d:
        d.others = []
        yield d


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__(f"API error {status}: {body}")
        self.status, self.body = status, body


class Sdk:
    """The SDK's ApiClient: get(endpoint, params) and post(endpoint, body,
    params), each answer checked against its lexicon like every other
    answer of the suite. Non-2xx raises, as the SDK throws."""

    def __init__(self, d, token=None):
        self.d, self.token = d, token or d.token

    def _send(self, nsid, method, params, data, headers):
        q = {k: str(v).lower() if isinstance(v, bool) else str(v)
             for k, v in (params or {}).items() if v is not None}
        url = f"{self.d.url}/xrpc/{nsid}" + ("?" + urllib.parse.urlencode(q) if q else "")
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              **headers})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, e.read().decode())
        value = json.loads(text) if text else None
        check_xrpc_answer(nsid, status, value)
        return value

    def get(self, nsid, params=None):
        return self._send(nsid, "GET", params, None, {})

    def post(self, nsid, body=None, params=None):
        # fetch(url, {method: "POST", body: undefined}) sends Content-Length: 0
        data = b"" if body is None else json.dumps(body).encode()
        return self._send(nsid, "POST", params, data, {"Content-Type": "application/json"})


def raw_post(d, path, headers):
    """A POST exactly as given (no Content-Length unless in headers): the
    status line and the body of the answer."""
    port = int(d.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                   f"Authorization: Bearer {d.token}\r\n{headers}\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def sdk_create(sdk, name):
    """Sandbox.create({base, name}) then waitUntilRunning()."""
    sb = sdk.post(SB + "createSandbox", {"base": "busybox", "name": name})
    wait_for(lambda: sdk.get(SB + "getSandbox", {"id": sb["id"]})["sandbox"]["status"]
             == "RUNNING", 30, f"{name} RUNNING")
    return sb["id"]


def status(sdk, ident):
    return sdk.get(SB + "getSandbox", {"id": ident})["sandbox"]["status"]


def sh(sdk, ident, command):
    """sandbox.exec(command)."""
    return sdk.post(SB + "exec", {"command": command}, {"id": ident})


# ---- procedures with an empty body --------------------------------------

def test_sdk_start_and_stop_send_no_body(daemon):
    """sandbox.stop() and sandbox.start() post no body at all; start's
    input ({repo?, keepAlive?}) has no required field, so the empty body
    is {} as @atproto/xrpc-server reads it. Procedures with required
    fields still refuse it, with upstream's messages."""
    sdk = Sdk(daemon)
    sid = sdk_create(sdk, "nobody")
    sdk.post(SB + "stopSandbox", None, {"id": sid})
    assert status(sdk, sid) == "STOPPED"
    sdk.post(SB + "startSandbox", None, {"id": sid})  # sandbox.start()
    wait_for(lambda: status(sdk, sid) == "RUNNING", 30, "RUNNING again")
    assert sh(sdk, sid, "echo up")["stdout"] == "up\n"
    # `curl -X POST`: no Content-Length, no Content-Type at all.
    sdk.post(SB + "stopSandbox", None, {"id": sid})
    st, body = raw_post(daemon, f"/xrpc/{SB}startSandbox?id={sid}", "")
    assert st == 200, body
    wait_for(lambda: status(sdk, sid) == "RUNNING", 30, "RUNNING again")

    with pytest.raises(ApiError) as e:
        sdk.post(SB + "createSandbox", None)  # Content-Length: 0, JSON
    assert e.value.status == 400
    assert json.loads(e.value.body) == {"error": "InvalidRequest",
                                        "message": 'Input must have the property "base"'}
    st, body = raw_post(daemon, f"/xrpc/{SB}createSandbox",
                        "Content-Type: application/json\r\n")
    assert st == 400
    assert json.loads(body)["message"] == "A request body is expected but none was provided"
    sdk.post(SB + "deleteSandbox", None, {"id": sid})


# ---- volumes as the SDK uses them ---------------------------------------

def volume_dirs(d):
    root = os.path.join(d.data, "volumes")
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


def sdk_volume(sdk, sandbox, name, path):
    """sandbox.volume.create(name, {path}), then its id from volume.list()."""
    sdk.post(VOL + "addVolume", {"volume": {"sandboxId": sandbox, "name": name, "path": path}})
    vols = sdk.get(VOL + "getVolumes", {"sandboxId": sandbox})["volumes"]
    return [v for v in vols if v["name"] == name][0]["id"]


def restart(sdk, sid):
    """sandbox.stop(), sandbox.start({}): volumes are mounted at start.
    (start() with no options, an empty body, has its own test.)"""
    sdk.post(SB + "stopSandbox", None, {"id": sid})
    sdk.post(SB + "startSandbox", {}, {"id": sid})
    wait_for(lambda: status(sdk, sid) == "RUNNING", 30, "RUNNING")


def test_sdk_volume_get_answers_the_lexicon(daemon):
    """volume.get(id) reads res.volume as the lexicon's volumeView: its
    mount's path and readOnly are there."""
    sdk = Sdk(daemon)
    sid = sdk_create(sdk, "vol-get")
    vid = sdk_volume(sdk, sid, "getdata", "/data")
    got = sdk.get(VOL + "getVolume", {"id": vid})["volume"]
    assert (got["id"], got["name"], got["path"], got["readOnly"]) == \
        (vid, "getdata", "/data", False)
    restart(sdk, sid)
    assert sh(sdk, sid, "echo in > /data/f && cat /data/f")["stdout"] == "in\n"
    sdk.post(SB + "deleteSandbox", None, {"id": sid})
    sdk.post(VOL + "deleteVolume", None, {"id": vid})


def test_sdk_volume_update_without_a_sandbox_id(daemon):
    """volume.update(id, name, {path, readOnly}) posts {id, volume: {name,
    path?, readOnly?}}, never a sandboxId: the change is to the volume's
    mount, which the next start applies."""
    sdk = Sdk(daemon)
    sid = sdk_create(sdk, "vol-upd")
    vid = sdk_volume(sdk, sid, "upddata", "/data")
    restart(sdk, sid)
    assert sh(sdk, sid, "echo kept > /data/f && cat /data/f")["stdout"] == "kept\n"

    sdk.post(VOL + "updateVolume", {"id": vid, "volume": {"name": "upddata", "path": "/data2"}})
    assert sdk.get(VOL + "getVolume", {"id": vid})["volume"]["path"] == "/data2"
    # readOnly alone: the path stays.
    sdk.post(VOL + "updateVolume", {"id": vid, "volume": {"name": "upddata", "readOnly": True}})
    got = sdk.get(VOL + "getVolume", {"id": vid})["volume"]
    assert (got["path"], got["readOnly"]) == ("/data2", True)
    # The name alone: a rename.
    sdk.post(VOL + "updateVolume", {"id": vid, "volume": {"name": "renamed"}})
    got = sdk.get(VOL + "getVolume", {"id": vid})["volume"]
    assert (got["name"], got["path"], got["readOnly"]) == ("renamed", "/data2", True)

    restart(sdk, sid)
    out = sh(sdk, sid, "cat /data2/f; test -e /data/f && echo old-path; "
                       "touch /data2/g 2>/dev/null && echo writable; echo done")
    assert out["stdout"] == "kept\ndone\n", out

    # A volume no sandbox mounts: a path alone cannot say where.
    sdk.post(VOL + "addVolume", {"volume": {"name": "loose"}})
    loose = [v for v in sdk.get(VOL + "getVolumes")["volumes"] if v["name"] == "loose"][0]
    with pytest.raises(ApiError) as e:
        sdk.post(VOL + "updateVolume", {"id": loose["id"], "volume": {"name": "loose",
                                                                      "path": "/x"}})
    assert e.value.status == 400 and "volume.sandboxId" in e.value.body
    sdk.post(SB + "deleteSandbox", None, {"id": sid})
    for v in (vid, loose["id"]):
        sdk.post(VOL + "deleteVolume", None, {"id": v})


def test_sdk_volume_delete_while_the_sandbox_runs(daemon):
    """volume.delete(id) while a running sandbox mounts it: the volume and
    its data are gone at once; the answer and the log say the mount goes at
    the next start (the runtime cannot unmount inside a running sandbox),
    and the next start does not mount it."""
    sdk = Sdk(daemon)
    sid = sdk_create(sdk, "vol-del")
    vid = sdk_volume(sdk, sid, "deldata", "/deldata")
    restart(sdk, sid)
    assert " /deldata " in sh(sdk, sid, "echo x > /deldata/f; cat /proc/mounts")["stdout"]
    assert vid in volume_dirs(daemon)

    out = sdk.post(VOL + "deleteVolume", None, {"id": vid})
    assert out == {"unmountAtNextStart": [{"sandboxId": sid, "path": "/deldata"}]}
    assert f"sandbox {sid} runs with it at /deldata" in daemon.log_text()
    with pytest.raises(ApiError) as e:
        sdk.get(VOL + "getVolume", {"id": vid})
    assert e.value.status == 404
    assert sdk.get(VOL + "getVolumes", {"sandboxId": sid})["volumes"] == []
    assert not [n for n in volume_dirs(daemon) if vid in n]  # data and all
    restart(sdk, sid)
    assert " /deldata " not in sh(sdk, sid, "cat /proc/mounts")["stdout"]
    # A volume no running sandbox mounts: nothing left for later.
    vid = sdk_volume(sdk, sid, "other", "/other")
    sdk.post(SB + "stopSandbox", None, {"id": sid})
    assert sdk.post(VOL + "deleteVolume", None, {"id": vid}) == {"unmountAtNextStart": []}
    sdk.post(SB + "deleteSandbox", None, {"id": sid})


# ---- answers the clients read -------------------------------------------

def js(v):
    """A value as a JavaScript template literal prints it."""
    return "undefined" if v is None else str(v)


def test_whoami_prints_who_you_are(daemon):
    """upstream's whoami prints `@${handle} (${displayName})`: never
    "(undefined)". displayName falls back to the handle, or to the DID where
    the handle is unknown (handle.invalid)."""
    prof = Sdk(daemon).get("io.pocketenv.actor.getProfile")
    line = f"You are logged in as @{js(prof.get('handle'))} ({js(prof.get('displayName'))})."
    assert line == "You are logged in as @owner.local (owner.local).", line
    assert prof["id"] == prof["did"]
    other = daemon.token_for("did:key:zCompatWhoami")
    prof = Sdk(daemon, other).get("io.pocketenv.actor.getProfile")
    assert (prof["handle"], prof["displayName"]) == ("handle.invalid", "did:key:zCompatWhoami")


def test_get_integrations_answers_its_lexicon(daemon):
    """getIntegrations answered 501; its lexicon's output is an array of
    integrationView: empty, as this daemon has no integrations. Another
    user's sandbox is not found, as everywhere."""
    sdk = Sdk(daemon)
    sid = sdk_create(sdk, "integr")
    assert sdk.get(SB + "getIntegrations", {"id": sid}) == []
    assert sdk.get(SB + "getIntegrations", {"id": "integr"}) == []
    other = daemon.token_for("did:key:zCompatIntegrations")
    with pytest.raises(ApiError) as e:
        Sdk(daemon, other).get(SB + "getIntegrations", {"id": sid})
    assert e.value.status == 404 and "SandboxNotFound" in e.value.body
    with pytest.raises(ApiError) as e:
        Sdk(daemon, "not-a-token").get(SB + "getIntegrations", {"id": sid})
    assert e.value.status == 401
    sdk.post(SB + "deleteSandbox", None, {"id": sid})


def test_fields_the_cli_prints_are_there(daemon):
    """Every field upstream's CLI prints from a listing (ls, ps, env ls,
    secret ls, file ls, volume ls, ports, service ls, sshkeys get,
    tailscale get): present, so no column says "undefined" or "Invalid
    Date"."""
    sdk = Sdk(daemon)
    sid = sdk_create(sdk, "fields")
    key = daemon.call("io.pocketenv.server.getPublicKey")[1]["publicKey"]
    owner = sdk.get("io.pocketenv.actor.getProfile")["did"]

    # ls: NAME, BASE, STATUS, CREATED AT; ps: + PROVIDER, "Up" from startedAt
    for running in (None, True):
        params = {"did": owner, "offset": 0, "limit": 100}
        if running:
            params["isRunning"] = True
        boxes = sdk.get("io.pocketenv.actor.getActorSandboxes", params)["sandboxes"]
        mine = [b for b in boxes if b["id"] == sid][0]
        for f in ("name", "baseSandbox", "provider", "status", "createdAt", "startedAt"):
            assert mine.get(f), (f, mine)

    sdk.post("io.pocketenv.variable.addVariable",
             {"variable": {"sandboxId": sid, "name": "K", "value": "v"}})
    sdk.post("io.pocketenv.secret.addSecret",
             {"secret": {"sandboxId": sid, "name": "S", "value": seal(key, "s")}})
    sdk.post("io.pocketenv.file.addFile",
             {"file": {"sandboxId": sid, "path": "/tmp/x", "content": seal(key, "x")}})
    sdk.post(VOL + "addVolume", {"volume": {"sandboxId": sid, "name": "fv", "path": "/fv"}})
    sdk.post(SB + "exposePort", {"port": 8080, "description": "web"}, {"id": sid})
    sdk.post("io.pocketenv.service.addService",
             {"service": {"name": "svc", "command": "sleep 1000"}}, {"sandboxId": sid})
    listings = [
        ("io.pocketenv.variable.getVariables", "variables", ("id", "name", "value", "createdAt")),
        ("io.pocketenv.secret.getSecrets", "secrets", ("id", "name", "createdAt")),
        ("io.pocketenv.file.getFiles", "files", ("id", "path", "createdAt")),
        (VOL + "getVolumes", "volumes", ("id", "name", "path", "createdAt")),
        ("io.pocketenv.service.getServices", "services",
         ("id", "name", "command", "status", "createdAt")),
    ]
    for nsid, key_, fields in listings:
        rows = sdk.get(nsid, {"sandboxId": sid, "offset": 0, "limit": 100})[key_]
        assert rows, nsid
        for f in fields:
            assert rows[0].get(f) is not None, (nsid, f, rows[0])
    ports = sdk.get(SB + "getExposedPorts", {"id": sid})["ports"]
    assert [(p["port"], p["description"], bool(p["previewUrl"])) for p in ports] == \
        [(8080, "web", True)]
    keys = sdk.get(SB + "getSshKeys", {"id": sid})  # the default key pair
    assert keys.get("publicKey") and keys.get("privateKey"), keys
    sdk.post(SB + "deleteSandbox", None, {"id": sid})
    for v in sdk.get(VOL + "getVolumes")["volumes"]:
        sdk.post(VOL + "deleteVolume", None, {"id": v["id"]})


def test_sdk_resource_calls_as_sent(daemon, tmp_path):
    """The SDK's sub-resources (sandbox.env, .secret, .file, .sshKeys,
    .tailscale, .ports, .service, .backup, .copy.to) with the bodies and
    parameters 0.2.10 sends: the "works" rows of docs/compat.md."""
    from test_keys import keygen
    sdk = Sdk(daemon)
    key = daemon.call("io.pocketenv.server.getPublicKey")[1]["publicKey"]
    sid = sdk_create(sdk, "sdkcalls")
    V, S, F, SV = ("io.pocketenv.variable.", "io.pocketenv.secret.", "io.pocketenv.file.",
                   "io.pocketenv.service.")

    # env.put / list / get / update / delete
    sdk.post(V + "addVariable", {"variable": {"sandboxId": sid, "name": "A", "value": "1"}})
    var = sdk.get(V + "getVariables", {"sandboxId": sid})["variables"][0]
    assert sdk.get(V + "getVariable", {"id": var["id"]})["variable"]["value"] == "1"
    sdk.post(V + "updateVariable", {"id": var["id"],
                                    "variable": {"sandboxId": sid, "name": "A", "value": "2"}})
    assert sh(sdk, sid, "echo $A")["stdout"] == "2\n"
    sdk.post(V + "deleteVariable", None, {"id": var["id"]})
    # secret.put (sealed) / list / get / delete
    sdk.post(S + "addSecret", {"secret": {"sandboxId": sid, "name": "T", "value": seal(key, "t")}})
    sec = sdk.get(S + "getSecrets", {"sandboxId": sid})["secrets"][0]
    assert sdk.get(S + "getSecret", {"id": sec["id"]})["secret"]["name"] == "T"
    sdk.post(S + "deleteSecret", None, {"id": sec["id"]})
    # file.write / list / get / update / delete (content sealed)
    sdk.post(F + "addFile", {"file": {"sandboxId": sid, "path": "/tmp/w", "content":
                                      seal(key, "one")}})
    fid = sdk.get(F + "getFiles", {"sandboxId": sid})["files"][0]["id"]
    assert sdk.get(F + "getFile", {"id": fid})["file"]["path"] == "/tmp/w"
    sdk.post(F + "updateFile", {"id": fid, "file": {"path": "/tmp/w", "content": seal(key, "two")}})
    assert sh(sdk, sid, "cat /tmp/w")["stdout"].strip() == "two"
    sdk.post(F + "deleteFile", None, {"id": fid})
    # sshKeys.put / get
    priv, pub = keygen(tmp_path)
    sdk.post(SB + "putSshKeys", {"id": sid, "privateKey": seal(key, priv), "publicKey": pub,
                                 "redacted": "x"})
    assert sdk.get(SB + "getSshKeys", {"id": sid})["publicKey"] == pub
    # tailscale.setAuthKey / getAuthKey
    ts = "tskey-auth-" + "k" * 30
    sdk.post(SB + "putTailscaleAuthKey", {"id": sid, "authKey": seal(key, ts),
                                          "redacted": ts[:11] + "*" * (len(ts) - 14) + ts[-3:]})
    assert sdk.get(SB + "getTailscaleAuthKey", {"id": sid})["authKey"].startswith("tskey-auth-")
    # expose / ports.list / unexpose
    assert sdk.post(SB + "exposePort", {"port": 3000}, {"id": sid})["previewUrl"]
    assert [p["port"] for p in sdk.get(SB + "getExposedPorts", {"id": sid})["ports"]] == [3000]
    sdk.post(SB + "unexposePort", {"port": 3000}, {"id": sid})
    # service.add / list / stop / start / restart / update / delete
    sdk.post(SV + "addService", {"service": {"name": "web", "command": "sleep 100"}},
             {"sandboxId": sid})
    svc = sdk.get(SV + "getServices", {"sandboxId": sid})["services"][0]
    for verb in ("stopService", "startService", "restartService"):
        sdk.post(SV + verb, None, {"serviceId": svc["id"]})
    sdk.post(SV + "updateService", {"service": {"name": "web", "command": "sleep 200"}},
             {"serviceId": svc["id"]})
    assert sdk.get(SV + "getServices", {"sandboxId": sid})["services"][0]["command"] == \
        "sleep 200"
    sdk.post(SV + "deleteService", None, {"serviceId": svc["id"]})
    # backup.create / list, Sandbox.restoreBackup
    sh(sdk, sid, "mkdir -p /srv/b && echo saved > /srv/b/f")
    sdk.post(SB + "createBackup", {"directory": "/srv/b"}, {"id": sid})
    backups = wait_for(lambda: sdk.get(SB + "getBackups", {"id": sid})["backups"], 30,
                       "the backup")
    sh(sdk, sid, "rm -rf /srv/b")
    sdk.post(SB + "restoreBackup", {"backupId": backups[0]["id"]})
    assert sh(sdk, sid, "cat /srv/b/f")["stdout"] == "saved\n"
    # copy.to(destination, source, dest): pushDirectory then pullDirectory
    dst = sdk_create(sdk, "sdkcalls2")
    uuid = sdk.post(SB + "pushDirectory", {"sandboxId": sid, "directoryPath": "/srv/b"})["uuid"]
    sdk.post(SB + "pullDirectory", {"uuid": uuid, "sandboxId": dst, "directoryPath": "/in"})
    assert sh(sdk, dst, "cat /in/f")["stdout"] == "saved\n"
    for s in (sid, dst):
        sdk.post(SB + "deleteSandbox", None, {"id": s})


def test_sdk_secret_put_and_update_in_plain_text_are_sealed_on_arrival(daemon):
    """The SDK's sandbox.secret.put and .update send the value as given, in
    plain text (upstream's CLI seals it first): both are sealed on arrival,
    reach the sandbox, and only sealed values are stored."""
    import sqlite3
    sdk = Sdk(daemon)
    sid = sdk_create(sdk, "plainsecrets")
    first, second = "pe-put-" + os.urandom(6).hex(), "pe-upd-" + os.urandom(6).hex()
    S = "io.pocketenv.secret."
    sdk.post(S + "addSecret", {"secret": {"sandboxId": sid, "name": "TOK", "value": first}})
    assert sh(sdk, sid, "echo $TOK")["stdout"] == first + "\n"
    sec = sdk.get(S + "getSecrets", {"sandboxId": sid})["secrets"][0]
    sdk.post(S + "updateSecret", {"id": sec["id"],
                                  "secret": {"sandboxId": sid, "name": "TOK", "value": second}})
    assert sh(sdk, sid, "echo $TOK")["stdout"] == second + "\n"
    con = sqlite3.connect(f"file:{os.path.join(daemon.data, 'pocketenv.db')}?mode=ro", uri=True)
    rows = [r[0] for r in con.execute("SELECT value FROM secrets")]
    con.close()
    assert rows and all(first not in v and second not in v for v in rows), rows
    with open(daemon.log_path, errors="replace") as f:
        log = f.read()
    assert first not in log and second not in log
    # Text with a NUL, or too long, is refused without being quoted.
    for bad in ("a\u0000b", "x" * (8 * 1024 + 1)):
        try:
            sdk.post(S + "updateSecret", {"id": sec["id"],
                                          "secret": {"sandboxId": sid, "name": "TOK", "value": bad}})
            raise AssertionError("accepted")
        except ApiError as e:
            assert e.status == 400 and bad not in e.body
