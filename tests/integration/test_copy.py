"""Directory copies through the daemon (issue 5): POST /cp, GET /cp/<uuid>,
pushDirectory and pullDirectory.

One daemon per module (the fixture of test_backups.py), busybox sandboxes.
Archives are built here with tarfile, hostile ones included, and checked
where a user sees them: inside the sandbox, in the downloaded archive, in
the answers; and nothing outside the sandbox or in the store of objects
changes when an archive is refused.
"""
import gzip
import hashlib
import http.client
import io
import json
import os
import tarfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import wait_for
from test_backups import daemon  # noqa: F401 (fixture)

SB = "io.pocketenv.sandbox."


def cp_http(d, method, path, data=None, token="owner", headers=None):
    if token == "owner":
        token = d.token
    req = urllib.request.Request(d.url + path, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def upload(d, data, token="owner", **kw):
    st, _, body = cp_http(d, "POST", "/cp", data, token=token,
                       headers={"Content-Type": "application/gzip"}, **kw)
    return st, json.loads(body) if body else None


def targz(entries):
    """entries: (TarInfo fields dict, bytes or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for fields, data in entries:
            ti = tarfile.TarInfo(fields.pop("name"))
            for k, v in fields.items():
                setattr(ti, k, v)
            if data is not None:
                ti.size = len(data)
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def objects(d):
    try:
        return sorted(os.listdir(os.path.join(d.data, "cp")))
    except FileNotFoundError:
        return []


def pull(d, sandbox, uuid, path, token="owner", **extra):
    body = {"sandboxId": sandbox, "directoryPath": path, **extra}
    if uuid is not None:
        body["uuid"] = uuid
    return d.call(SB + "pullDirectory", body=body, token=token)


def push(d, sandbox, path, token="owner", **extra):
    return d.call(SB + "pushDirectory", body={"sandboxId": sandbox, "directoryPath": path,
                                               **extra}, token=token)


def test_upload_pull_push_download(daemon):
    d = daemon
    sid = d.create("cp1")
    data = targz([({"name": "proj", "type": tarfile.DIRTYPE, "mode": 0o755}, None),
                  ({"name": "proj/readme", "uid": 1234, "gid": 99}, b"hello\n"),
                  ({"name": "proj/run.sh", "mode": 0o4755}, b"#!/bin/sh\n"),
                  ({"name": "proj/link", "type": tarfile.SYMTYPE, "linkname": "readme"}, None)])
    st, out = upload(d, data)
    assert st == 200, out
    uuid = out["uuid"]
    assert len(uuid) == 36
    st, out = pull(d, sid, uuid, "/home/dst")
    assert st == 200, out
    got = d.sh(sid, "cat /home/dst/proj/readme /home/dst/proj/link;"
                    " stat -c '%u:%g %a' /home/dst/proj/readme /home/dst/proj/run.sh")["stdout"]
    # Files belong to the sandbox's root; setuid bits are dropped.
    assert got.splitlines() == ["hello", "hello", "0:0 644", "0:0 755"], got
    # Used up: neither a download nor a second pull finds it.
    assert cp_http(d, "GET", f"/cp/{uuid}")[0] == 404
    st, out = pull(d, sid, uuid, "/home/again")
    assert st == 404 and out["error"] == "NotFound", out

    # Sandbox -> archive -> download (once).
    d.sh(sid, "mkdir -p /srv/site/img && echo page > /srv/site/index.html"
              " && echo png > /srv/site/img/a.png")
    st, out = push(d, sid, "/srv/site")
    assert st == 200, out
    st, headers, body = cp_http(d, "GET", f"/cp/{out['uuid']}")
    assert st == 200 and headers["Content-Type"] == "application/gzip"
    assert out["uuid"] + ".tar.gz" in headers["Content-Disposition"]
    assert int(headers["Content-Length"]) == len(body)  # what cp's progress bar counts to
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as t:
        names = {m.name: m for m in t.getmembers()}
        assert t.extractfile(names["./index.html"]).read() == b"page\n"
        assert t.extractfile(names["./img/a.png"]).read() == b"png\n"
    assert cp_http(d, "GET", f"/cp/{out['uuid']}")[0] == 404
    # Sandbox -> sandbox: push, then pull elsewhere.
    sid2 = d.create("cp2")
    st, out = push(d, "cp1", "/srv/site")
    assert st == 200
    assert pull(d, "cp2", out["uuid"], "/www")[0] == 200
    assert d.sh(sid2, "cat /www/img/a.png")["stdout"] == "png\n"
    # Upstream's CLI uploads multipart/form-data with a "file" field.
    boundary = "----pe-test-boundary"
    mp = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
          f"filename=\"x.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n").encode() + \
        targz([({"name": "m.txt"}, b"multi\n")]) + f"\r\n--{boundary}--\r\n".encode()
    st, _, body = cp_http(d, "POST", "/cp", mp,
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert st == 200, body
    assert pull(d, sid2, json.loads(body)["uuid"], "/www")[0] == 200
    assert d.sh(sid2, "cat /www/m.txt")["stdout"] == "multi\n"
    assert objects(d) == []
    for s in (sid, sid2):
        assert d.sandbox("deleteSandbox", s)[0] == 200


def huge_header():
    ti = tarfile.TarInfo("big.bin")
    ti.size = 3 << 30  # claims 3 GiB, carries nothing
    return gzip.compress(ti.tobuf(format=tarfile.PAX_FORMAT) + b"\0" * 1024)


HOSTILE = {
    "dotdot": targz([({"name": "../../escape"}, b"x")]),
    "dotdot-inner": targz([({"name": "a/../../escape"}, b"x")]),
    "absolute": targz([({"name": "/etc/evil"}, b"x")]),
    "write-through-symlink": targz([
        ({"name": "lnk", "type": tarfile.SYMTYPE, "linkname": "/etc"}, None),
        ({"name": "lnk/passwd"}, b"root::0:0::/:/bin/sh\n")]),
    "hardlink-out": targz([({"name": "h", "type": tarfile.LNKTYPE, "linkname": "/etc/shadow"},
                            None)]),
    "chardev": targz([({"name": "null", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3},
                       None)]),
    "blockdev": targz([({"name": "sda", "type": tarfile.BLKTYPE, "devmajor": 8}, None)]),
    "fifo": targz([({"name": "pipe", "type": tarfile.FIFOTYPE}, None)]),
    "huge-file": huge_header(),
    "not-gzip": b"PK\x03\x04 this is not a tarball" * 10,
    "truncated": targz([({"name": "f"}, os.urandom(100000))])[:50000],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_archives_are_refused(daemon, name):
    d = daemon
    st, out = upload(d, HOSTILE[name])
    assert st == 400 and out["error"] == "InvalidRequest", (name, out)
    assert objects(d) == []
    assert d.healthy()


def declare_only(d, length, token="owner"):
    """POST /cp declaring length bytes and sending none: the answer must
    come from the head alone."""
    conn = http.client.HTTPConnection(d.url[len("http://"):], timeout=30)
    conn.putrequest("POST", "/cp")
    if token:
        conn.putheader("Authorization", f"Bearer {d.token if token == 'owner' else token}")
    conn.putheader("Content-Type", "application/gzip")
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    r = conn.getresponse()
    st, body = r.status, r.read()
    conn.close()
    return st, json.loads(body) if body else None


def test_upload_limits_and_routes(daemon):
    d = daemon
    # Uploads stream to disk: 33 MiB (once past the in-memory limit) is fine,
    # past the cap (1 GiB by default, --cp-max) is refused before it is read.
    st, out = upload(d, targz([({"name": "noise"}, os.urandom(33 << 20))]))
    assert st == 200, out
    assert cp_http(d, "GET", f"/cp/{out['uuid']}")[0] == 200
    for length in ((1 << 30) + 1, 1 << 40):
        st, out = declare_only(d, length)
        assert (st, out["error"]) == (413, "PayloadTooLarge"), out
    assert cp_http(d, "GET", "/cp")[0] == 405
    assert cp_http(d, "PUT", "/cp/00000000-0000-4000-8000-000000000000")[0] == 405
    assert cp_http(d, "GET", "/cp/../etc/passwd")[0] == 404
    assert cp_http(d, "GET", "/cp/not-a-uuid")[0] == 404
    assert cp_http(d, "GET", "/cpx")[0] == 404
    assert objects(d) == [] and d.healthy()


def test_pull_through_planted_symlink_stays_inside(daemon, tmp_path):
    d = daemon
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "keep").write_text("host\n")
    os.chmod(tmp_path, 0o755)
    sid = d.create("cp3")
    d.sh(sid, f"mkdir -p /dst && ln -s {host} /dst/evil && ln -s ../../../../..{host} /dst/up")
    for sub in ("evil", "up"):
        st, out = upload(d, targz([({"name": f"{sub}/x"}, b"pwned\n")]))
        assert st == 200, out
        st, out = pull(d, sid, out["uuid"], "/dst")
        assert st == 400 and "symlink" in out["message"], out
    # The destination itself a link out: resolved inside the sandbox.
    d.sh(sid, f"mkdir -p {host} && ln -s {host} /dst2")
    st, out = upload(d, targz([({"name": "y"}, b"inside\n")]))
    assert pull(d, sid, out["uuid"], "/dst2")[0] == 200
    assert d.sh(sid, f"cat {host}/y")["stdout"] == "inside\n"
    assert sorted(os.listdir(host)) == ["keep"] and (host / "keep").read_text() == "host\n"
    # Kernel interfaces are not directories to unpack into.
    st, out = upload(d, targz([({"name": "x"}, b"1\n")]))
    st, out = pull(d, sid, out["uuid"], "/proc/sys/kernel")
    assert st == 400, out
    assert d.sandbox("deleteSandbox", sid)[0] == 200
    assert objects(d) == []


def test_bad_requests_and_state(daemon):
    d = daemon
    sid = d.create("cp4")
    st, out = upload(d, targz([({"name": "f"}, b"1")]))
    uuid = out["uuid"]
    for bad in ["", "rel/path", "/a/../b", "/a//b"]:
        assert pull(d, sid, uuid, bad)[0] == 400
        assert push(d, sid, bad)[0] == 400
    st, out = pull(d, sid, None, "/x")
    assert st == 400 and "uuid" in out["message"]
    # Our fields (lexicons/README.md): booleans, each on its own method.
    for extra, message in [({"includeRoot": "yes"}, "includeRoot must be a boolean"),
                           ({"includeRoot": 1}, "includeRoot must be a boolean"),
                           ({"contentsOnly": True}, "contentsOnly needs includeRoot"),
                           ({"includeRoot": True, "contentsOnly": []},
                            "contentsOnly must be a boolean"),
                           ({"includeRoot": True, "followLink": True},
                            "followLink is not a field")]:
        st, out = pull(d, sid, uuid, "/x", **extra)
        assert (st, out["error"]) == (400, "InvalidRequest") and message in out["message"], out
    for extra, message in [({"followLink": "no"}, "followLink must be a boolean"),
                           ({"followLink": True}, "followLink needs includeRoot"),
                           ({"includeRoot": True, "contentsOnly": True},
                            "contentsOnly is not a field")]:
        st, out = push(d, sid, "/etc", **extra)
        assert (st, out["error"]) == (400, "InvalidRequest") and message in out["message"], out
    for bad in ["/a/../b", "/a//b", "rel", "/a/./b", ""]:
        assert pull(d, sid, uuid, bad, includeRoot=True)[0] == 400, bad
        assert push(d, sid, bad, includeRoot=True)[0] == 400, bad
    st, out = push(d, sid, "/no/such/file", includeRoot=True)
    assert st == 404 and out["error"] == "FileNotFound", out
    st, out = push(d, sid, "/no/such/dir")
    assert st == 404 and out["error"] == "DirectoryNotFound", out
    st, out = pull(d, "sbx_nosuchsandbox", uuid, "/x")
    assert st == 404 and out["error"] == "SandboxNotFound"
    assert d.sandbox("stopSandbox", sid)[0] == 200
    st, out = pull(d, sid, uuid, "/x")
    assert st == 400 and "not running" in out["message"], out
    assert push(d, sid, "/etc")[0] == 400
    # The refused pulls did not use the object up.
    assert cp_http(d, "GET", f"/cp/{uuid}")[0] == 200
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_objects_never_taken_expire(daemon):
    d = daemon
    st, out = upload(d, targz([({"name": "f"}, b"1")]))
    uuid = out["uuid"]
    meta = os.path.join(d.data, "cp", uuid + ".json")
    with open(meta) as f:
        m = json.load(f)
    assert m["expiresAt"] > time.time() + 3000  # an hour
    m["expiresAt"] = int(time.time()) - 1
    with open(meta, "w") as f:
        json.dump(m, f)
    wait_for(lambda: objects(d) == [], 10, "the expired object to be removed")
    assert cp_http(d, "GET", f"/cp/{uuid}")[0] == 404


def test_authz_matrix(daemon):
    d = daemon
    sid = d.create("cpauth")
    st, out = upload(d, targz([({"name": "f"}, b"secret\n")]))
    uuid = out["uuid"]
    owner = d.call("io.pocketenv.actor.getProfile")[1]["did"]
    now = int(time.time())
    other = d.token_for("did:key:zCopyStranger")
    expired = d.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now - 7200,
                     "exp": now - 3600})
    forged = d.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now, "exp": now + 600},
                   key=os.urandom(32))
    answers = []
    for tok, want in [(None, (401, "AuthenticationRequired")), (expired, (401, "ExpiredToken")),
                      (forged, (401, "InvalidToken")), ("not-a-jwt", (401, "InvalidToken"))]:
        st, _, body = cp_http(d, "POST", "/cp", targz([({"name": "f"}, b"1")]), token=tok)
        assert (st, json.loads(body)["error"]) == want
        st, _, body = cp_http(d, "GET", f"/cp/{uuid}", token=tok)
        assert (st, json.loads(body)["error"]) == want
        for ident in (sid, "cpauth"):
            for st, out in (pull(d, ident, uuid, "/x", token=tok),
                            push(d, ident, "/etc", token=tok),
                            pull(d, ident, uuid, "/x/", token=tok, includeRoot=True),
                            push(d, ident, "/etc/hostname", token=tok, includeRoot=True)):
                answers.append(json.dumps(out))
                assert (st, out["error"]) == want, out
    # Another user: the sandbox and the object do not exist for them.
    st, _, body = cp_http(d, "GET", f"/cp/{uuid}", token=other)
    assert (st, json.loads(body)["error"]) == (404, "NotFound")
    answers.append(body.decode())
    for ident in (sid, "cpauth"):
        for st, out in (pull(d, ident, uuid, "/x", token=other),
                        push(d, ident, "/etc", token=other),
                        pull(d, ident, uuid, "/x", token=other, includeRoot=True),
                        push(d, ident, "/etc/.", token=other, includeRoot=True)):
            answers.append(json.dumps(out))
            assert (st, out["error"]) == (404, "SandboxNotFound"), out
    # Their own upload cannot be pulled by the owner either, and mine not by them.
    st, theirs = upload(d, targz([({"name": "t"}, b"theirs\n")]), token=other)
    assert st == 200
    st, out = pull(d, sid, theirs["uuid"], "/x")
    assert (st, out["error"]) == (404, "NotFound")
    for a in answers:
        assert sid not in a and owner not in a, a
    # Untouched: still downloadable once, by its owner.
    st, _, body = cp_http(d, "GET", f"/cp/{uuid}")
    assert st == 200
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as t:
        assert t.extractfile("f").read() == b"secret\n"
    assert cp_http(d, "GET", f"/cp/{theirs['uuid']}", token=other)[0] == 200
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_single_use_under_concurrency_and_big_objects(daemon):
    d = daemon
    sid = d.create("cpbig")
    # 6 MiB of noise: the download is streamed past the server's queue limit.
    d.sh(sid, "mkdir -p /big && dd if=/dev/urandom of=/big/noise bs=1024 count=6144 2>/dev/null"
              " && sha256sum /big/noise > /big/sum")
    st, out = push(d, sid, "/big")
    assert st == 200, out
    results = []

    def fetch():
        results.append(cp_http(d, "GET", f"/cp/{out['uuid']}"))
    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r[0] for r in results) == [200, 404, 404, 404]
    body = next(r[2] for r in results if r[0] == 200)
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as t:
        noise = t.extractfile("./noise").read()
        want = t.extractfile("./sum").read().split()[0].decode()
    assert len(noise) == 6 << 20 and hashlib.sha256(noise).hexdigest() == want
    # And back into another directory, byte for byte.
    st, up = upload(d, body)
    assert st == 200, up
    assert pull(d, sid, up["uuid"], "/big2")[0] == 200
    assert d.sh(sid, "cd /big2 && sha256sum noise")["stdout"].split()[0] == want
    assert objects(d) == []
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_docker_cp_flavour_over_the_wire(daemon):
    """includeRoot: a path itself comes out (a file, a symlink, a tree under
    its own name) and goes where docker cp puts it, the daemon deciding
    from what the sandbox holds; upstream's calls stay as they were."""
    d = daemon
    sid = d.create("cpdock")
    d.sh(sid, "mkdir -p /src/sub /dst && echo one > /src/f && echo two > /src/sub/g"
              " && ln -s f /src/lnk && chmod 640 /src/f && touch -d @1000000000 /src/f")
    st, out = push(d, sid, "/src/f", includeRoot=True)
    assert st == 200, out
    st, _, body = cp_http(d, "GET", f"/cp/{out['uuid']}")
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as t:
        (m,) = t.getmembers()
        assert (m.name, m.mode, m.mtime, t.extractfile(m).read()) == \
            ("f", 0o640, 1000000000, b"one\n")
    st, out = push(d, sid, "/src/lnk", includeRoot=True)
    st, _, body = cp_http(d, "GET", f"/cp/{out['uuid']}")
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as t:
        (m,) = t.getmembers()
        assert (m.name, m.issym(), m.linkname) == ("lnk", True, "f")
    st, out = push(d, sid, "/src/lnk/", includeRoot=True)  # must be a directory
    assert st == 400 and "not a directory" in out["message"], out
    st, out = push(d, sid, "/src", includeRoot=True)
    st, _, body = cp_http(d, "GET", f"/cp/{out['uuid']}")
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as t:
        assert sorted(t.getnames()) == ["src", "src/f", "src/lnk", "src/sub", "src/sub/g"]
    # In: a file onto a missing path, into a directory, onto a file.
    for dest, check in [("/dst/new", "cat /dst/new"), ("/dst", "cat /dst/one.txt"),
                        ("/dst/new", "cat /dst/new")]:
        st, out = upload(d, targz([({"name": "one.txt"}, b"1\n")]))
        st, out = pull(d, sid, out["uuid"], dest, includeRoot=True)
        assert st == 200, out
        assert d.sh(sid, check)["stdout"] == "1\n"
    # A tree: created when missing, inside when there, contents with contentsOnly.
    tree = [({"name": "t", "type": tarfile.DIRTYPE, "mode": 0o750}, None),
            ({"name": "t/e", "type": tarfile.DIRTYPE}, None), ({"name": "t/x"}, b"x\n")]
    for dest, extra in [("/dst/tree", {}), ("/dst/tree", {}), ("/dst/tree", {"contentsOnly": True})]:
        st, out = upload(d, targz([(dict(f), data) for f, data in tree]))
        assert pull(d, sid, out["uuid"], dest, includeRoot=True, **extra)[0] == 200
    got = d.sh(sid, "cd /dst/tree && find . | sort; stat -c %a .")["stdout"]
    assert got.split() == [".", "./e", "./t", "./t/e", "./t/x", "./x", "750"], got
    # Refused, with nothing written: a slash on a missing directory, a tree
    # onto a file, an archive of two tops, a missing parent.
    for dest, entries, status, message in [
            ("/dst/nodir/", [({"name": "a"}, b"a")], 404, "does not exist"),
            ("/dst/new/", [({"name": "a"}, b"a")], 400, "not a directory"),
            ("/dst/new", tree, 400, "cannot copy a directory onto a file"),
            ("/dst/two", [({"name": "a"}, b"a"), ({"name": "b"}, b"b")], 400, "not one copy"),
            ("/no/parent", [({"name": "a"}, b"a")], 404, "no such directory")]:
        st, out = upload(d, targz([(dict(f), data) for f, data in entries]))
        st, out = pull(d, sid, out["uuid"], dest, includeRoot=True)
        assert (st, message in out["message"]) == (status, True), (dest, out)
    assert d.sh(sid, "ls /dst")["stdout"].split() == ["new", "one.txt", "tree"]
    assert d.sh(sid, "ls /dst/two /no 2>&1 || true")["stdout"].count("No such file") == 2
    assert objects(d) == []
    assert d.sandbox("deleteSandbox", sid)[0] == 200
