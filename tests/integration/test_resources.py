"""A sandbox's resources through the API (issue 5): variables, secrets, files.

One daemon per module (the fixture pattern of test_daemon.py), with the
busybox image. Values are checked where a user sees them: inside the
sandbox (exec, PID 1's environment), in listings, and, for secrets, nowhere
else: not in the daemon's log, not in the data directory (store included).
"""
import base64
import json
import os
import re
import subprocess
import time
import urllib.request

import pytest
from nacl.public import PrivateKey, PublicKey, SealedBox

from test_daemon import Daemon, serving
from test_daemon_postgres import pg  # noqa: F401 (fixture)
from test_daemon_restart import served  # noqa: F401 (fixture)

V = "io.pocketenv.variable."
S = "io.pocketenv.secret."
F = "io.pocketenv.file."

def seal(public_key_hex, plain):
    """crypto_box_seal to the daemon's key, base64url without padding, as clients send."""
    if isinstance(plain, str):
        plain = plain.encode()
    box = SealedBox(PublicKey(bytes.fromhex(public_key_hex)))
    return base64.urlsafe_b64encode(box.encrypt(plain)).rstrip(b"=").decode()

def banner_key(d):
    with urllib.request.urlopen(d.url + "/", timeout=5) as r:
        return re.search(r"public key: ([0-9a-f]{64})", r.read().decode()).group(1)

class ResDaemon(Daemon):
    def seal(self, plain, key=None):
        return seal(key or self.public_key, plain)

    def sh(self, ident, command, token="owner"):
        st, out = self.sandbox("exec", ident, {"command": command}, token=token)
        assert st == 200, out
        return out

    def create(self, name, token="owner", **extra):
        st, sb = self.call("io.pocketenv.sandbox.createSandbox",
                           body={"base": "busybox", "name": name, **extra}, token=token)
        assert st == 200, sb
        got = self.wait_status(sb["id"], ["RUNNING", "FAILED"], token=token)
        assert got["status"] == "RUNNING", got
        return sb["id"]

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("resources"), ResDaemon,
                 ["--sandbox-net", "none", "--rate-limit", "0"]) as d:
        d.public_key = banner_key(d)
        yield d

def environ_of_pid1(d, ident):
    out = d.sh(ident, "tr '\\0' '\\n' < /proc/1/environ")["stdout"]
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

# ---- variables ----

def test_variables_end_to_end(daemon):
    d = daemon
    sid = d.create("vars", envs=[{"name": "FROM_CREATE", "value": "c1"}])
    # createSandbox's envs: a variable row, in PID 1 and in exec.
    assert d.sh("vars", "echo $FROM_CREATE")["stdout"] == "c1\n"
    assert environ_of_pid1(d, "vars")["FROM_CREATE"] == "c1"

    st, out = d.call(V + "addVariable", body={"variable": {
        "sandboxId": "vars", "name": "GREETING", "value": "hello world"}})
    assert st == 200, out
    var = out["variable"]
    assert re.fullmatch(r"var_[0-9A-Za-z]{22}", var["id"])
    assert (var["name"], var["value"], var["sandboxId"]) == ("GREETING", "hello world", sid)
    assert var["createdAt"] and var["updatedAt"]
    # Live: the next exec sees it, no restart.
    assert d.sh(sid, "echo \"$GREETING\"")["stdout"] == "hello world\n"

    st, out = d.call(V + "getVariable", {"id": var["id"]})
    assert st == 200 and out == {"variable": var}

    # Unique per sandbox; names are shell names; values bounded.
    st, out = d.call(V + "addVariable", body={"variable": {
        "sandboxId": sid, "name": "GREETING", "value": "again"}})
    assert st == 409 and out["error"] == "AlreadyExists", out
    for bad in ["", "1ABC", "A-B", "A B", "X" * 129, "A=B", "ü"]:
        st, out = d.call(V + "addVariable", body={"variable": {
            "sandboxId": sid, "name": bad, "value": "v"}})
        assert st == 400 and out["error"] == "InvalidRequest", (bad, out)
    st, out = d.call(V + "addVariable", body={"variable": {
        "sandboxId": sid, "name": "BIG", "value": "x" * 9000}})
    assert st == 400 and "8192" in out["message"]
    st, out = d.call(V + "addVariable", body={"variable": {"name": "NOBOX", "value": "v"}})
    assert st == 400 and "sandboxId" in out["message"]
    st, out = d.call(V + "addVariable", body={"variable": {
        "sandboxId": "sbx_nosuchsandbox", "name": "X", "value": "v"}})
    assert st == 404 and out["error"] == "SandboxNotFound"
    st, out = d.call(V + "addVariable", body={"variable": {"sandboxId": sid, "name": "X"}})
    assert st == 400

    # Paging with a total, ordered by name.
    for i in range(3):
        assert d.call(V + "addVariable", body={"variable": {
            "sandboxId": sid, "name": f"PAGE{i}", "value": str(i)}})[0] == 200
    names = []
    for offset in (0, 2, 4):
        st, page = d.call(V + "getVariables", {"sandboxId": sid, "limit": 2, "offset": offset})
        assert st == 200 and page["total"] == 5, page
        names += [v["name"] for v in page["variables"]]
    assert names == sorted(["FROM_CREATE", "GREETING", "PAGE0", "PAGE1", "PAGE2"])
    st, page = d.call(V + "getVariables", {"sandboxId": "vars"})
    assert page["total"] == 5 and len(page["variables"]) == 5
    st, page = d.call(V + "getVariables")  # every sandbox of the caller
    assert st == 200 and page["total"] >= 5
    st, page = d.call(V + "getVariables", {"sandboxId": sid, "limit": 0})
    assert st == 400

    # Update: rename and revalue; the next exec sees the change.
    st, out = d.call(V + "updateVariable", body={"id": var["id"], "variable": {
        "name": "GREETING2", "value": "bye"}})
    assert st == 200 and out["variable"]["name"] == "GREETING2", out
    r = d.sh(sid, "echo \"${GREETING:-unset} $GREETING2\"")
    assert r["stdout"] == "unset bye\n"
    st, out = d.call(V + "updateVariable", body={"id": var["id"], "variable": {
        "name": "PAGE0", "value": "clash"}})
    assert st == 409
    st, out = d.call(V + "updateVariable", body={"id": "var_nope", "variable": {
        "name": "A", "value": "b"}})
    assert st == 404 and out["error"] == "VariableNotFound"

    # Survives stop/start: PID 1's environment again.
    assert d.sandbox("stopSandbox", sid)[0] == 200
    assert d.sandbox("startSandbox", sid, {})[0] == 200
    env = environ_of_pid1(d, sid)
    assert env["GREETING2"] == "bye" and env["PAGE2"] == "2" and env["FROM_CREATE"] == "c1"

    st, out = d.call(V + "deleteVariable", {"id": var["id"]}, post=True)
    assert st == 200, out
    assert d.sh(sid, "echo ${GREETING2:-gone}")["stdout"] == "gone\n"
    st, out = d.call(V + "getVariable", {"id": var["id"]})
    assert st == 404 and out["error"] == "VariableNotFound"
    st, out = d.call(V + "deleteVariable", {"id": var["id"]}, post=True)
    assert st == 404

    # Deleting the sandbox deletes its variables.
    assert d.sandbox("deleteSandbox", sid)[0] == 200
    st, out = d.call(V + "getVariables", {"sandboxId": sid})
    assert st == 404 and out["error"] == "SandboxNotFound"

def test_create_envs_rejected_whole(daemon):
    d = daemon
    before = d.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local"})[1]["total"]
    for envs in [[{"name": "1X", "value": "v"}], "notalist", [{"name": "A"}],
                 [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
                 [{"name": f"N{i}", "value": "v"} for i in range(65)]]:
        st, out = d.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "busybox", "envs": envs})
        assert st == 400 and out["error"] == "InvalidRequest", (envs, out)
    after = d.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local"})[1]["total"]
    assert after == before

# ---- secrets ----

def test_secrets_end_to_end(daemon):
    d = daemon
    plain = "s3cr3t-" + os.urandom(8).hex()
    at_create = "c-" + os.urandom(8).hex()
    sid = d.create("secrets", secrets=[{"name": "AT_CREATE", "value": d.seal(at_create)}],
                   envs=[{"name": "TOKEN", "value": "variable-loses"}])
    assert d.sh(sid, "echo $AT_CREATE")["stdout"] == at_create + "\n"

    st, out = d.call(S + "addSecret", body={"secret": {
        "sandboxId": sid, "name": "TOKEN", "value": d.seal(plain)}, "redacted": "s3c***"})
    assert st == 200, out
    sec = out["secret"]
    assert set(sec) == {"id", "name", "sandboxId", "createdAt", "updatedAt"}
    assert re.fullmatch(r"secret_[0-9A-Za-z]{22}", sec["id"])
    # Injected like a variable, live; a secret wins over a variable of its name.
    assert d.sh(sid, "echo $TOKEN")["stdout"] == plain + "\n"

    st, out = d.call(S + "getSecrets", {"sandboxId": sid})
    assert st == 200 and out["total"] == 2
    assert sorted(s["name"] for s in out["secrets"]) == ["AT_CREATE", "TOKEN"]
    assert all("value" not in s for s in out["secrets"])
    st, out = d.call(S + "getSecret", {"id": sec["id"]})
    assert st == 200 and out == {"secret": sec}

    # Values that are not a secret's text, sealed or not, are refused
    # without quoting them. (Text that does not open with our key is taken
    # as plain text, as upstream's SDK sends it, and sealed on arrival:
    # test_compat_clients.py; createSandbox the same: test_compat.py.)
    other_key = bytes(PrivateKey.generate().public_key).hex()
    for bad in [d.seal(b"nul\x00inside"), d.seal("x" * 9000), "x" * 9000,
                "nul\x00" + d.seal(plain, key=other_key)]:
        st, out = d.call(S + "addSecret", body={"secret": {
            "sandboxId": sid, "name": "BAD", "value": bad}})
        assert st == 400 and out["error"] == "InvalidRequest", out
        assert plain not in json.dumps(out) and (not bad or bad not in json.dumps(out))
    st, out = d.call("io.pocketenv.sandbox.createSandbox", body={
        "base": "busybox", "name": "never", "secrets": [{"name": "X", "value": "x" * 9000}]})
    assert st == 400
    assert d.sandbox("getSandbox", "never")[0] == 404

    # Update: a new value, live.
    plain2 = "rotated-" + os.urandom(8).hex()
    st, out = d.call(S + "updateSecret", body={"id": sec["id"], "secret": {
        "name": "TOKEN", "value": d.seal(plain2)}})
    assert st == 200, out
    assert d.sh(sid, "echo $TOKEN")["stdout"] == plain2 + "\n"
    st, out = d.call(S + "updateSecret", body={"id": sec["id"], "secret": {
        "name": "TOKEN", "value": "no\x00nul"}})
    assert st == 400
    assert d.sh(sid, "echo $TOKEN")["stdout"] == plain2 + "\n"

    # Restart: in PID 1's environment.
    assert d.sandbox("stopSandbox", sid)[0] == 200
    assert d.sandbox("startSandbox", sid, {})[0] == 200
    assert environ_of_pid1(d, sid)["TOKEN"] == plain2

    # The plaintexts rest nowhere: not in the log, not in the data dir.
    for p in (plain, plain2, at_create):
        assert p not in d.log_text()
        found = subprocess.run(["grep", "-rlF", p, d.data], capture_output=True, text=True)
        assert found.stdout == "", found.stdout
    # ... and the store holds the sealed value as sent.
    found = subprocess.run(["grep", "-rlF", "TOKEN", d.data], capture_output=True, text=True)
    assert "pocketenv.db" in found.stdout

    st, out = d.call(S + "deleteSecret", {"id": sec["id"]}, post=True)
    assert st == 200
    # The variable of the same name shows again.
    assert d.sh(sid, "echo $TOKEN")["stdout"] == "variable-loses\n"
    st, out = d.call(S + "getSecret", {"id": sec["id"]})
    assert st == 404 and out["error"] == "SecretNotFound"
    assert d.sandbox("deleteSandbox", sid)[0] == 200

# ---- files ----

def add_file(d, sandbox, path, content, token="owner"):
    return d.call(F + "addFile", body={"file": {
        "sandboxId": sandbox, "path": path, "content": d.seal(content)}}, token=token)

def test_files_end_to_end(daemon):
    d = daemon
    sid = d.create("files")
    st, out = add_file(d, sid, "/opt/app/conf.json", '{"a": 1}\n')
    assert st == 200, out
    f = out["file"]
    assert set(f) == {"id", "path", "sandboxId", "createdAt", "updatedAt"}
    # Written at once into the running sandbox, directories made.
    r = d.sh(sid, "cat /opt/app/conf.json; stat -c '%a %u' /opt/app/conf.json /opt/app")
    assert r["stdout"] == '{"a": 1}\n600 0\n755 0\n', r

    st, out = d.call(F + "updateFile", body={"id": f["id"], "file": {
        "path": "/opt/app/conf.json", "content": d.seal("v2\n")}})
    assert st == 200, out
    assert d.sh(sid, "cat /opt/app/conf.json")["stdout"] == "v2\n"
    # An existing file keeps its mode and owner.
    d.sh(sid, "chmod 644 /opt/app/conf.json")
    d.call(F + "updateFile", body={"id": f["id"], "file": {
        "path": "/opt/app/conf.json", "content": d.seal("v3\n")}})
    assert d.sh(sid, "stat -c %a /opt/app/conf.json")["stdout"] == "644\n"

    st, out = d.call(F + "getFiles", {"sandboxId": sid})
    assert st == 200 and out["total"] == 1 and "content" not in out["files"][0]
    st, out = add_file(d, sid, "/opt/app/conf.json", "dup")
    assert st == 409
    # A rename onto another file's path is refused before anything is written.
    st, other = add_file(d, sid, "/opt/other", "other\n")
    assert st == 200
    st, out = d.call(F + "updateFile", body={"id": other["file"]["id"], "file": {
        "path": "/opt/app/conf.json", "content": d.seal("clobber\n")}})
    assert st == 409, out
    assert d.sh(sid, "cat /opt/app/conf.json")["stdout"] == "v3\n"
    assert d.call(F + "deleteFile", {"id": other["file"]["id"]}, post=True)[0] == 200

    # Stopped: stored, placed at the next start; binary-safe.
    assert d.sandbox("stopSandbox", sid)[0] == 200
    st, out = add_file(d, sid, "/root/later.bin", b"\x00\x01\xffend")
    assert st == 200, out
    assert d.sandbox("startSandbox", sid, {})[0] == 200
    r = d.sh(sid, "od -An -tx1 /root/later.bin; cat /opt/app/conf.json")
    assert r["stdout"].split() == ["00", "01", "ff", "65", "6e", "64", "v3"], r

    for bad in ["relative", "/", "/a/../b", "/a/./b", "//a", "/a/", "/a\nb", "/" + "x" * 1100]:
        st, out = add_file(d, sid, bad, "x")
        assert st == 400 and out["error"] == "InvalidRequest", (bad, out)
    st, out = d.call(F + "addFile", body={"file": {
        "sandboxId": sid, "path": "/x", "content": "not-sealed"}})
    assert st == 400 and "sealed" in out["message"]
    st, out = add_file(d, sid, "/root", "a directory is there")
    assert st == 400 and "directory" in out["message"]

    st, out = d.call(F + "deleteFile", {"id": f["id"]}, post=True)
    assert st == 200
    st, out = d.call(F + "getFile", {"id": f["id"]})
    assert st == 404 and out["error"] == "FileNotFound"
    assert d.sandbox("deleteSandbox", sid)[0] == 200

def test_files_never_escape_the_sandbox(daemon, tmp_path):
    """Symlinks planted inside the sandbox resolve inside it, never on the host."""
    d = daemon
    host_dir = tmp_path / "host-target"
    host_dir.mkdir()
    host_file = tmp_path / "host-file"
    host_file.write_text("host original\n")
    sid = d.create("hostile")
    # The same path exists inside the sandbox: that one is where writes land.
    d.sh(sid, f"mkdir -p /etc {host_dir} && ln -s {host_dir} /etc/x && "
              f"ln -s ../../../../../../../..{host_dir} /etc/y && "
              f"ln -s {host_file} /etc/z && ln -s /proc/sys/kernel /etc/k && "
              f"ln -s /proc/1/root /etc/m")
    for path in ["/etc/x/pwned", "/etc/y/pwned2", "/etc/x/deep/er/pwned3"]:
        st, out = add_file(d, sid, path, "gotcha\n")
        assert st == 200, (path, out)
    # A link to a host path the sandbox does not have: refused, nothing made.
    d.sh(sid, f"ln -s {tmp_path}/elsewhere /etc/w")
    st, out = add_file(d, sid, "/etc/w/pwned", "gotcha\n")
    assert st == 400 and "gotcha" not in json.dumps(out), out
    assert not os.path.exists(tmp_path / "elsewhere")
    # The final component a symlink: replaced by the file, not followed.
    st, out = add_file(d, sid, "/etc/z", "replaced\n")
    assert st == 200, out
    assert os.listdir(host_dir) == []
    assert host_file.read_text() == "host original\n"
    # Where the files went: the sandbox's own paths of those names.
    r = d.sh(sid, f"cat {host_dir}/pwned {host_dir}/pwned2 {host_dir}/deep/er/pwned3; "
                  f"test -L /etc/z || cat /etc/z")
    assert r["stdout"] == "gotcha\n" * 3 + "replaced\n", r

    # Kernel interfaces and magic links are refused (the daemon is host root).
    domain = open("/proc/sys/kernel/domainname").read()
    try:
        for path in ["/etc/k/domainname", "/proc/sys/kernel/domainname", "/etc/m/etc/passwd",
                     "/sys/kernel/x"]:
            st, out = add_file(d, sid, path, "pwned\n")
            assert st == 400, (path, out)
    finally:
        if open("/proc/sys/kernel/domainname").read() != domain:
            with open("/proc/sys/kernel/domainname", "w") as f:
                f.write(domain)
            pytest.fail("the host's domainname was written")
    assert os.listdir(host_dir) == []
    assert d.sandbox("deleteSandbox", sid)[0] == 200
    assert os.listdir(host_dir) == [] and host_file.read_text() == "host original\n"

# ---- authorization ----

def test_authz_matrix(daemon):
    d = daemon
    sid = d.create("guarded")
    var = d.call(V + "addVariable", body={"variable": {
        "sandboxId": sid, "name": "MINE", "value": "owner-value"}})[1]["variable"]
    sec = d.call(S + "addSecret", body={"secret": {
        "sandboxId": sid, "name": "MYSECRET", "value": d.seal("owner-secret")}})[1]["secret"]
    fil = add_file(d, sid, "/owner/file", "owner-file\n")[1]["file"]
    owner = d.call("io.pocketenv.actor.getProfile")[1]["did"]
    other = d.token_for("did:key:zResourceThief")
    d.others = [other]
    now = int(time.time())
    expired = d.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now - 7200,
                     "exp": now - 3600})
    forged = d.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now, "exp": now + 600},
                   key=os.urandom(32))

    def calls(tok):
        """Every method of the three namespaces, aimed at the owner's things."""
        yield "add", d.call(V + "addVariable", body={"variable": {
            "sandboxId": sid, "name": "EVIL", "value": "x"}}, token=tok)
        yield "add", d.call(V + "addVariable", body={"variable": {
            "sandboxId": "guarded", "name": "EVIL", "value": "x"}}, token=tok)
        yield "list", d.call(V + "getVariables", {"sandboxId": sid}, token=tok)
        yield "row", d.call(V + "getVariable", {"id": var["id"]}, token=tok)
        yield "row", d.call(V + "updateVariable", body={"id": var["id"], "variable": {
            "name": "MINE", "value": "stolen"}}, token=tok)
        yield "row", d.call(V + "deleteVariable", {"id": var["id"]}, post=True, token=tok)
        yield "add", d.call(S + "addSecret", body={"secret": {
            "sandboxId": sid, "name": "EVIL", "value": d.seal("x")}}, token=tok)
        yield "list", d.call(S + "getSecrets", {"sandboxId": sid}, token=tok)
        yield "row", d.call(S + "getSecret", {"id": sec["id"]}, token=tok)
        yield "row", d.call(S + "updateSecret", body={"id": sec["id"], "secret": {
            "name": "MYSECRET", "value": d.seal("stolen")}}, token=tok)
        yield "row", d.call(S + "deleteSecret", {"id": sec["id"]}, post=True, token=tok)
        yield "add", add_file(d, sid, "/evil", "x", token=tok)
        yield "list", d.call(F + "getFiles", {"sandboxId": sid}, token=tok)
        yield "row", d.call(F + "getFile", {"id": fil["id"]}, token=tok)
        yield "row", d.call(F + "updateFile", body={"id": fil["id"], "file": {
            "path": "/owner/file", "content": d.seal("stolen")}}, token=tok)
        yield "row", d.call(F + "deleteFile", {"id": fil["id"]}, post=True, token=tok)

    answers = []
    for tok, want in [(None, "AuthenticationRequired"), (expired, "ExpiredToken"),
                      (forged, "InvalidToken"), ("not-a-jwt", "InvalidToken")]:
        for kind, (st, out) in calls(tok):
            answers.append(json.dumps(out))
            assert (st, out["error"]) == (401, want), out
    for kind, (st, out) in calls(other):
        answers.append(json.dumps(out))
        assert st == 404, out
        assert out["error"] in ("SandboxNotFound", "VariableNotFound", "SecretNotFound",
                                "FileNotFound"), out
    # Their listings of everything hold nothing of the owner's.
    for nsid, key in [(V + "getVariables", "variables"), (S + "getSecrets", "secrets"),
                      (F + "getFiles", "files")]:
        st, out = d.call(nsid, token=other)
        assert (st, out) == (200, {key: [], "total": 0})
    for a in answers:
        for leak in (sid, owner, var["id"], sec["id"], fil["id"], "owner-value"):
            assert leak not in a, a
    # Nothing of the owner's changed.
    r = d.sh(sid, "echo $MINE $MYSECRET ${EVIL:-none}; cat /owner/file; ls /evil 2>&1")
    assert r["stdout"].startswith("owner-value owner-secret none\nowner-file\n"), r
    assert d.call(V + "getVariables", {"sandboxId": sid})[1]["total"] == 1
    assert d.call(S + "getSecrets", {"sandboxId": sid})[1]["total"] == 1
    assert d.call(F + "getFiles", {"sandboxId": sid})[1]["total"] == 1
    assert d.sandbox("deleteSandbox", sid)[0] == 200

# ---- volumes ----

VOL = "io.pocketenv.volume."

def restart(d, ident, token="owner"):
    assert d.sandbox("stopSandbox", ident, token=token)[0] == 200
    st, out = d.sandbox("startSandbox", ident, {}, token=token)
    assert st == 200, out

def test_volumes_end_to_end(daemon):
    d = daemon
    sid = d.create("vol1")
    st, out = d.call(VOL + "addVolume", body={"volume": {
        "name": "data", "sandboxId": "vol1", "path": "/data"}})
    assert st == 200, out
    vol = out["volume"]
    assert re.fullmatch(r"vol_[0-9A-Za-z]{22}", vol["id"])
    assert (vol["name"], vol["path"], vol["readOnly"], vol["sandboxId"]) == \
        ("data", "/data", False, sid)
    st, out = d.call(VOL + "addVolume", body={"volume": {
        "name": "ro", "sandboxId": sid, "path": "/srv/ro", "readOnly": True}})
    assert st == 200, out
    ro = out["volume"]

    # Mounted at the next start, owned by the sandbox's root, writable.
    restart(d, sid)
    r = d.sh(sid, "echo hello > /data/f && stat -c '%u %g' /data /data/f && "
                  "touch /srv/ro/x; echo rc=$?")
    assert r["stdout"] == "0 0\n0 0\nrc=1\n", r
    # Survives stop/start.
    restart(d, sid)
    assert d.sh(sid, "cat /data/f")["stdout"] == "hello\n"

    st, out = d.call(VOL + "getVolumes", {"sandboxId": sid})
    assert st == 200 and out["total"] == 2
    assert [(v["name"], v["path"], v["readOnly"]) for v in out["volumes"]] == \
        [("data", "/data", False), ("ro", "/srv/ro", True)]

    # (Deleting a volume a running sandbox mounts: test_compat_clients.py.)
    # The sandbox goes, the volume stays, with its data.
    assert d.sandbox("deleteSandbox", sid)[0] == 200
    st, out = d.call(VOL + "getVolume", {"id": vol["id"]})
    assert st == 200 and out["volume"]["mounts"] == [] and out["volume"]["name"] == "data"
    st, out = d.call(VOL + "getVolumes")
    assert st == 200 and {v["name"] for v in out["volumes"]} >= {"data", "ro"}

    # A new sandbox (another id range) mounts it by name: same volume,
    # same data, still root's inside.
    sid2 = d.create("vol2")
    st, out = d.call(VOL + "addVolume", body={"volume": {
        "name": "data", "sandboxId": sid2, "path": "/mnt/d"}})
    assert st == 200 and out["volume"]["id"] == vol["id"], out
    restart(d, sid2)
    r = d.sh(sid2, "cat /mnt/d/f && stat -c %u /mnt/d/f && echo more >> /mnt/d/f && echo ok")
    assert r["stdout"] == "hello\n0\nok\n", r

    # Unmount (updateVolume without a path), then delete: the data goes.
    st, out = d.call(VOL + "updateVolume", body={"id": vol["id"], "volume": {
        "name": "data", "sandboxId": sid2}})
    assert st == 200 and out["volume"]["mounts"] == [], out
    st, out = d.call(VOL + "deleteVolume", {"id": vol["id"]}, post=True)
    assert st == 200, out
    assert not os.path.exists(os.path.join(d.data, "volumes", vol["id"]))
    st, out = d.call(VOL + "getVolume", {"id": vol["id"]})
    assert st == 404 and out["error"] == "VolumeNotFound"
    # Rename and remount through updateVolume.
    st, out = d.call(VOL + "updateVolume", body={"id": ro["id"], "volume": {
        "name": "ro2", "sandboxId": sid2, "path": "/ro2"}})
    assert st == 200 and out["volume"]["name"] == "ro2"
    assert out["volume"]["mounts"] == [{"sandboxId": sid2, "path": "/ro2", "readOnly": False}]
    # Deleted while sid2 runs: its mount goes at sid2's next start.
    st, out = d.call(VOL + "deleteVolume", {"id": ro["id"]}, post=True)
    assert (st, out) == (200, {"unmountAtNextStart": [{"sandboxId": sid2, "path": "/ro2"}]})
    assert d.sandbox("deleteSandbox", sid2)[0] == 200

def test_volume_bad_input(daemon):
    d = daemon
    sid = d.create("volbad")
    bad = [{"name": "Bad Name", "sandboxId": sid, "path": "/x"},
           {"name": "", "sandboxId": sid, "path": "/x"},
           {"name": "-x", "sandboxId": sid, "path": "/x"},
           {"name": "ok", "sandboxId": sid, "path": "/proc/x"},
           {"name": "ok", "sandboxId": sid, "path": "/dev"},
           {"name": "ok", "sandboxId": sid, "path": "relative"},
           {"name": "ok", "sandboxId": sid, "path": "/a/../b"},
           {"name": "ok", "sandboxId": sid, "path": "/"},
           {"name": "ok", "path": "/x"},
           {"name": "ok", "sandboxId": sid},
           {"sandboxId": sid, "path": "/x"}]
    for v in bad:
        st, out = d.call(VOL + "addVolume", body={"volume": v})
        assert st == 400 and out["error"] == "InvalidRequest", (v, out)
    assert d.call(VOL + "addVolume", body={"volume": {"name": "solo"}})[0] == 200
    st, out = d.call(VOL + "addVolume", body={"volume": {"name": "solo"}})
    assert st == 409 and out["error"] == "AlreadyExists"
    assert d.call(VOL + "addVolume", body={"volume": {
        "name": "one", "sandboxId": sid, "path": "/same"}})[0] == 200
    st, out = d.call(VOL + "addVolume", body={"volume": {
        "name": "two", "sandboxId": sid, "path": "/same"}})
    assert st == 409, out
    st, out = d.call(VOL + "getVolumes", {"limit": 1, "offset": 0})
    assert st == 200 and len(out["volumes"]) == 1 and out["total"] >= 3
    for name in ("solo", "one", "two"):
        vs = d.call(VOL + "getVolumes", {"limit": 100})[1]["volumes"]
        for v in vs:
            if v["name"] == name:
                d.call(VOL + "updateVolume", body={"id": v["id"], "volume": {
                    "name": name, "sandboxId": sid}})
                assert d.call(VOL + "deleteVolume", {"id": v["id"]}, post=True)[0] == 200
    assert d.sandbox("deleteSandbox", sid)[0] == 200

def test_volume_authz(daemon):
    d = daemon
    sid = d.create("volauth")
    vol = d.call(VOL + "addVolume", body={"volume": {
        "name": "private", "sandboxId": sid, "path": "/p"}})[1]["volume"]
    other = d.token_for("did:key:zVolumeThief")
    d.others = list(getattr(d, "others", [])) + [other]
    owner = d.call("io.pocketenv.actor.getProfile")[1]["did"]
    answers = []
    for tok in (None, "not-a-jwt"):
        for st, out in [d.call(VOL + "getVolume", {"id": vol["id"]}, token=tok),
                        d.call(VOL + "getVolumes", token=tok),
                        d.call(VOL + "deleteVolume", {"id": vol["id"]}, post=True, token=tok)]:
            assert st == 401, out
    for st, out in [
            d.call(VOL + "getVolume", {"id": vol["id"]}, token=other),
            d.call(VOL + "deleteVolume", {"id": vol["id"]}, post=True, token=other),
            d.call(VOL + "updateVolume", body={"id": vol["id"], "volume": {
                "name": "mine-now"}}, token=other),
            d.call(VOL + "addVolume", body={"volume": {
                "name": "x", "sandboxId": sid, "path": "/x"}}, token=other),
            d.call(VOL + "getVolumes", {"sandboxId": sid}, token=other)]:
        answers.append(json.dumps(out))
        assert st == 404 and out["error"] in ("VolumeNotFound", "SandboxNotFound"), out
    st, out = d.call(VOL + "getVolumes", token=other)
    assert (st, out) == (200, {"volumes": [], "total": 0})
    # Their own volume of the same name is another volume.
    st, out = d.call(VOL + "addVolume", body={"volume": {"name": "private"}}, token=other)
    assert st == 200 and out["volume"]["id"] != vol["id"], out
    assert d.call(VOL + "deleteVolume", {"id": out["volume"]["id"]}, post=True,
                  token=other)[0] == 200
    for a in answers:
        assert vol["id"] not in a and sid not in a and owner not in a, a
    st, out = d.call(VOL + "getVolume", {"id": vol["id"]})
    assert st == 200 and out["volume"]["name"] == "private"
    assert d.sandbox("deleteSandbox", sid)[0] == 200
    assert d.call(VOL + "deleteVolume", {"id": vol["id"]}, post=True)[0] == 200

# ---- the same on PostgreSQL ----

def test_resources_on_postgres(pg, served):
    """Every kind through a daemon whose store is a real PostgreSQL."""
    url = pg()
    s = served(["--sandbox-net", "none", "--store", url])
    d = s.start()
    pk = banner_key(d)
    plain = "pg-secret-" + os.urandom(8).hex()
    st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={
        "base": "busybox", "name": "pgres", "envs": [{"name": "A", "value": "1"}],
        "secrets": [{"name": "S", "value": seal(pk, plain)}]})
    assert st == 200, sb
    assert d.wait_status(sb["id"], ["RUNNING", "FAILED"])["status"] == "RUNNING"
    st, out = d.call(V + "addVariable", body={"variable": {
        "sandboxId": "pgres", "name": "B", "value": "2"}})
    assert st == 200, out
    st, out = d.call(F + "addFile", body={"file": {
        "sandboxId": "pgres", "path": "/etc/pg.conf", "content": seal(pk, "pg file\n")}})
    assert st == 200, out
    st, out = d.call(VOL + "addVolume", body={"volume": {
        "name": "pgvol", "sandboxId": "pgres", "path": "/v"}})
    assert st == 200, out
    vol = out["volume"]["id"]
    assert d.sandbox("stopSandbox", "pgres")[0] == 200
    assert d.sandbox("startSandbox", "pgres", {})[0] == 200
    st, out = d.sandbox("exec", "pgres", {
        "command": "echo $A $B $S; cat /etc/pg.conf; touch /v/x && echo vol"})
    assert out["stdout"] == f"1 2 {plain}\npg file\nvol\n", out
    for nsid, key, n in [(V + "getVariables", "variables", 2), (S + "getSecrets", "secrets", 1),
                         (F + "getFiles", "files", 1), (VOL + "getVolumes", "volumes", 1)]:
        st, out = d.call(nsid, {"sandboxId": sb["id"]})
        assert st == 200 and out["total"] == n and len(out[key]) == n, (nsid, out)
    assert plain not in s.log_text()
    assert not os.path.exists(os.path.join(s.data, "pocketenv.db"))
    assert d.sandbox("deleteSandbox", "pgres")[0] == 200
    assert d.call(VOL + "deleteVolume", {"id": vol}, post=True)[0] == 200
