"""Backups of a sandbox's directories through the API (issue 5):
createBackup, getBackups, restoreBackup.

One daemon per module (the fixture pattern of test_resources.py), busybox
sandboxes, a short housekeeping tick so that expiry can be watched. What is
checked is what a user sees: the files inside the sandbox after a restore
(content, owner, mode), the listing, the errors, and that nothing outside
the sandbox is ever touched.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import wait_for
from test_daemon import broken_image, serving
from test_daemon_postgres import pg  # noqa: F401 (fixture)
from test_daemon_restart import served  # noqa: F401 (fixture)
from test_resources import ResDaemon, banner_key

SB = "io.pocketenv.sandbox."


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("backups"), ResDaemon,
                 ["--sandbox-net", "none", "--rate-limit", "0", "--tick", "0.5"]) as d:
        d.public_key = banner_key(d)
        yield d


def backup(d, ident, directory, token="owner", **extra):
    return d.call(SB + "createBackup", {"id": ident}, {"directory": directory, **extra},
                  token=token)


def restore(d, backup_id, token="owner"):
    return d.call(SB + "restoreBackup", body={"backupId": backup_id}, token=token)


def backups_on_disk(d):
    try:
        return sorted(os.listdir(os.path.join(d.data, "backups")))
    except FileNotFoundError:
        return []


def iso_to_epoch(s):
    return time.mktime(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone


def test_backup_and_restore_running_then_stopped(daemon):
    d = daemon
    sid = d.create("bk")
    d.sh(sid, "mkdir -p /work/sub && echo one > /work/a.txt && echo two > /work/sub/b.txt"
              " && ln -s sub/b.txt /work/link && echo s > /work/suid && chmod 4755 /work/suid"
              " && chown 1000:1001 /work/sub/b.txt && chmod 640 /work/a.txt")
    now = time.time()
    st, out = backup(d, "bk", "/work", description="before the change")
    assert st == 200, out
    b = out["backup"]
    assert b["id"].startswith("bak_") and b["sandboxId"] == sid
    assert (b["directory"], b["description"]) == ("/work", "before the change")
    # Default TTL: three days, as upstream.
    assert abs(iso_to_epoch(b["expiresAt"]) - (now + 3 * 86400)) < 120, b
    assert os.listdir(os.path.join(d.data, "backups")) == [b["id"] + ".tar.zst"]
    st, out = d.call(SB + "getBackups", {"id": "bk"})
    assert st == 200 and out == {"backups": [b]}, out

    # Change everything, then restore while running.
    d.sh(sid, "rm -rf /work/a.txt /work/sub /work/link && echo new > /work/extra"
              " && echo changed > /work/suid")
    st, out = restore(d, b["id"])
    assert st == 200, out
    got = d.sh(sid, "cat /work/a.txt /work/sub/b.txt /work/link /work/suid /work/extra;"
                    " stat -c '%n %u:%g %a' /work/a.txt /work/sub/b.txt /work/suid;"
                    " readlink /work/link")["stdout"]
    assert got.splitlines() == [
        "one", "two", "two", "s", "new",  # extra files are kept
        "/work/a.txt 0:0 640", "/work/sub/b.txt 1000:1001 644",  # owners and modes come back
        "/work/suid 0:0 755",  # setuid bits never come back
        "sub/b.txt"], got

    # Restore into a stopped sandbox: there at the next start.
    d.sh(sid, "rm -rf /work/sub && echo gone > /work/a.txt")
    assert d.sandbox("stopSandbox", sid)[0] == 200
    st, out = restore(d, b["id"])
    assert st == 200, out
    assert d.sandbox("startSandbox", sid)[0] == 200
    got = d.sh(sid, "cat /work/a.txt /work/sub/b.txt; stat -c '%u:%g' /work/sub/b.txt")
    assert got["stdout"] == "one\ntwo\n1000:1001\n", got

    # A backup of a stopped sandbox holds its writable layer under the directory.
    d.sh(sid, "mkdir -p /etc/app && echo conf > /etc/app/x")
    assert d.sandbox("stopSandbox", sid)[0] == 200
    st, out = backup(d, sid, "/etc")
    assert st == 200, out
    assert d.sandbox("startSandbox", sid)[0] == 200
    d.sh(sid, "rm -rf /etc/app")
    assert restore(d, out["backup"]["id"])[0] == 200
    assert d.sh(sid, "cat /etc/app/x; cat /etc/passwd >/dev/null && echo ok")["stdout"] == \
        "conf\nok\n"
    st, out = d.call(SB + "getBackups", {"id": sid})
    assert [x["directory"] for x in out["backups"]] == ["/etc", "/work"]  # newest first

    # The whole sandbox as it sees itself: /proc and other mounts are left out.
    st, out = backup(d, sid, "/")
    assert st == 200, out

    # Deleting the sandbox deletes its backups.
    assert d.sandbox("deleteSandbox", sid)[0] == 200
    st, out = restore(d, b["id"])
    assert st == 404 and out["error"] == "BackupNotFound", out


def test_bad_input(daemon):
    d = daemon
    sid = d.create("bkbad")
    before = backups_on_disk(d)
    for bad in ["", "work", "/work/../etc", "/a//b", "/a/./b", "/a\nb", "/" + "x" * 1100]:
        st, out = backup(d, sid, bad)
        assert st == 400 and out["error"] == "InvalidRequest", (bad, out)
    for ttl in [0, -5, 10 ** 12]:
        st, out = backup(d, sid, "/tmp", ttl=ttl)
        assert st == 400 and "ttl" in out["message"], out
    st, out = backup(d, sid, "/tmp", description="d" * 1001)
    assert st == 400
    st, out = d.call(SB + "createBackup", {"id": sid}, {"description": "no directory"})
    assert st == 400
    st, out = backup(d, sid, "/no/such/dir")
    assert st == 404 and out["error"] == "DirectoryNotFound", out
    st, out = backup(d, sid, "/proc")
    assert st == 400, out
    st, out = d.call(SB + "createSandbox", body={"base": broken_image(d.data), "name": "bkfailed"})
    assert st == 200
    d.wait_status("bkfailed", ["FAILED"])
    st, out = backup(d, "bkfailed", "/tmp")
    assert st == 400 and out["error"] == "InvalidRequest", out
    assert d.call(SB + "getBackups", {"id": "bkfailed"}) == (200, {"backups": []})
    assert d.sandbox("deleteSandbox", "bkfailed")[0] == 200
    st, out = backup(d, "sbx_nosuchsandbox", "/tmp")
    assert st == 404 and out["error"] == "SandboxNotFound"
    st, out = restore(d, "bak_nosuchbackup")
    assert st == 404 and out["error"] == "BackupNotFound"
    st, out = d.call(SB + "restoreBackup", body={})
    assert st == 400
    # Nothing half-made: no row, no file, the daemon still serves.
    assert d.call(SB + "getBackups", {"id": sid}) == (200, {"backups": []})
    assert backups_on_disk(d) == before
    assert d.healthy()


def test_planted_symlinks_stay_inside(daemon, tmp_path):
    d = daemon
    host = tmp_path / "host"
    host.mkdir()
    (host / "keep").write_text("host file\n")
    os.chmod(tmp_path, 0o755)
    sid = d.create("bklink")
    d.sh(sid, "mkdir -p /data && echo inside > /data/f && mkdir -p /data/d && echo x > /data/d/g")
    st, out = backup(d, sid, "/data")
    assert st == 200, out
    bid = out["backup"]["id"]
    # The sandbox swaps its directories for links to the host's directory.
    d.sh(sid, f"rm -rf /data && ln -s {host} /data")
    st, out = restore(d, bid)
    # Inside the sandbox that path leads nowhere: nothing to restore into.
    assert st == 404 and out["error"] == "DirectoryNotFound", out
    # A link where the backup has a directory is replaced, never followed.
    d.sh(sid, f"rm -f /data && mkdir -p /data && ln -s {host} /data/d")
    st, out = restore(d, bid)
    assert st == 200, out
    assert d.sh(sid, "test -d /data/d && ! test -L /data/d && cat /data/d/g")["stdout"] == "x\n"
    d.sh(sid, f"rm -rf /data && ln -s ../../../../../..{host} /data")
    restore(d, bid)
    assert sorted(os.listdir(host)) == ["keep"]
    assert (host / "keep").read_text() == "host file\n"
    # And a backup through a link reads the sandbox's files, never the host's.
    d.sh(sid, f"rm -f /data; mkdir -p {host} && echo sandbox-side > {host}/keep"
              f" && ln -s {host} /data")
    st, out = backup(d, sid, "/data")
    assert st == 200, out
    d.sh(sid, "rm -f /data && mkdir /data")
    assert restore(d, out["backup"]["id"])[0] == 200
    assert d.sh(sid, "cat /data/keep")["stdout"] == "sandbox-side\n"
    assert (host / "keep").read_text() == "host file\n"
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_sparse_files_stay_sparse(daemon):
    """An 8 GiB file with a hole (truncate) and five bytes in the middle:
    the backup is small and the restored file is the same size, the same
    bytes, and still mostly a hole on disk, whether the sandbox runs or not."""
    d = daemon
    sid = d.create("bksparse")
    d.sh(sid, "mkdir -p /sp && truncate -s 8G /sp/big && printf hello |"
              " dd of=/sp/big bs=1 seek=4294967296 conv=notrunc 2>/dev/null")
    st, out = backup(d, sid, "/sp")
    assert st == 200, out
    bid = out["backup"]["id"]
    archive = os.path.join(d.data, "backups", bid + ".tar.zst")
    assert os.path.getsize(archive) < (1 << 20)
    if shutil.which("zstd"):  # the tar inside holds the data, not 8 GiB of zeros
        tar = subprocess.run(["zstd", "-dc", archive], capture_output=True, check=True).stdout
        assert len(tar) < (1 << 20), len(tar)
        assert b"GNU.sparse" in tar
    for running in (True, False):
        d.sh(sid, "rm -f /sp/big")
        if not running:
            assert d.sandbox("stopSandbox", sid)[0] == 200
        st, out = restore(d, bid)
        assert st == 200, out
        if not running:
            assert d.sandbox("startSandbox", sid)[0] == 200
        got = d.sh(sid, "stat -c '%s %b %B' /sp/big;"
                        " dd if=/sp/big bs=1 skip=4294967296 count=5 2>/dev/null")["stdout"]
        size, blocks, unit, data = got.split(None, 3)
        assert (int(size), data) == (8 << 30, "hello"), got
        assert int(blocks) * int(unit) < (1 << 20), got  # allocated: a few KiB, not 8 GiB
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_names_that_are_not_utf8_are_kept_byte_exact(daemon):
    """File names are bytes: one that is not UTF-8 (0xff 0xfe) is backed up
    and restored as it was, and every other file with it."""
    d = daemon
    sid = d.create("bkbytes")
    d.sh(sid, "mkdir -p /nb/sub && cd /nb && echo odd > \"$(printf '\\377\\376')\""
              " && echo deep > \"sub/$(printf 'x\\377')\" && echo plain > plain")
    st, out = backup(d, sid, "/nb")
    assert st == 200, out
    d.sh(sid, "rm -rf /nb/* && echo changed > /nb/plain")
    st, out = restore(d, out["backup"]["id"])
    assert st == 200, out
    got = d.sh(sid, "cd /nb && printf '%s\\n' * | od -An -tx1 | tr -s ' \\n' ' ';"
                    " echo; cat \"$(printf '\\377\\376')\" \"sub/$(printf 'x\\377')\" plain")
    lines = got["stdout"].splitlines()
    assert lines[0].split() == ["70", "6c", "61", "69", "6e", "0a", "73", "75", "62", "0a",
                                "ff", "fe", "0a"], got
    assert lines[1:] == ["odd", "deep", "plain"], got
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_expired_backups_are_removed(daemon):
    d = daemon
    sid = d.create("bkttl")
    st, short = backup(d, sid, "/etc", ttl=1)
    assert st == 200, short
    st, long_ = backup(d, sid, "/etc", ttl=3600)
    assert st == 200
    sid_short = short["backup"]["id"]

    def gone():
        ids = [b["id"] for b in d.call(SB + "getBackups", {"id": sid})[1]["backups"]]
        return sid_short not in ids and sid_short + ".tar.zst" not in backups_on_disk(d)
    wait_for(gone, 15, "the expired backup to be removed")
    assert long_["backup"]["id"] + ".tar.zst" in backups_on_disk(d)
    assert restore(d, sid_short)[1]["error"] == "BackupNotFound"
    assert restore(d, long_["backup"]["id"])[0] == 200
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_authz_matrix(daemon):
    d = daemon
    sid = d.create("bkauth")
    st, out = backup(d, sid, "/etc")
    assert st == 200
    bid = out["backup"]["id"]
    owner = d.call("io.pocketenv.actor.getProfile")[1]["did"]
    now = int(time.time())
    other = d.token_for("did:key:zBackupStranger")
    expired = d.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now - 7200,
                     "exp": now - 3600})
    forged = d.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now, "exp": now + 600},
                   key=os.urandom(32))
    answers = []
    for tok, want in [(None, (401, "AuthenticationRequired")), (expired, (401, "ExpiredToken")),
                      (forged, (401, "InvalidToken")), (other, None)]:
        for ident in (sid, "bkauth"):
            for st, out, w in [
                (*backup(d, ident, "/etc", token=tok), (404, "SandboxNotFound")),
                (*d.call(SB + "getBackups", {"id": ident}, token=tok), (404, "SandboxNotFound")),
                (*restore(d, bid, token=tok), (404, "BackupNotFound")),
            ]:
                answers.append(json.dumps(out))
                assert (st, (out or {}).get("error")) == (want or w), out
    for a in answers:
        assert sid not in a and bid not in a and owner not in a, a
    # Untouched: still exactly one backup, restorable by its owner.
    st, out = d.call(SB + "getBackups", {"id": sid})
    assert [b["id"] for b in out["backups"]] == [bid]
    assert restore(d, bid)[0] == 200
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_backups_on_postgres(pg, served):
    """Rows in a real PostgreSQL; expiry and restart through it."""
    s = served(["--sandbox-net", "none", "--store", pg(), "--tick", "0.5"])
    d = s.start()
    st, sb = d.call(SB + "createSandbox", body={"base": "busybox", "name": "pgbk"})
    assert st == 200, sb
    assert d.wait_status(sb["id"], ["RUNNING", "FAILED"])["status"] == "RUNNING"
    d.sandbox("exec", "pgbk", {"command": "mkdir -p /w && echo pg > /w/f"})
    st, keep = backup(d, "pgbk", "/w", description="kept")
    assert st == 200, keep
    st, short = backup(d, "pgbk", "/w", ttl=1)
    assert st == 200, short
    wait_for(lambda: [b["id"] for b in d.call(SB + "getBackups", {"id": "pgbk"})[1]["backups"]]
             == [keep["backup"]["id"]], 15, "the short backup to expire")
    # A restarted daemon still has the backup, and restores it (stopped).
    d.sandbox("exec", "pgbk", {"command": "rm -rf /w"})
    assert d.sandbox("stopSandbox", "pgbk")[0] == 200
    s.stop()
    d = s.start()
    assert restore(d, keep["backup"]["id"])[0] == 200
    assert d.sandbox("startSandbox", "pgbk")[0] == 200
    assert d.sandbox("exec", "pgbk", {"command": "cat /w/f"})[1]["stdout"] == "pg\n"
    assert not os.path.exists(os.path.join(s.data, "pocketenv.db"))
    assert d.sandbox("deleteSandbox", "pgbk")[0] == 200
