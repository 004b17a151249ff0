"""A sandbox's services through the API (issue 5): io.pocketenv.service.*
and our getServiceLogs.

One daemon per module (test_resources.py's fixture), busybox image.
Services are checked where a user sees them: their processes inside the
sandbox (ps), what they print (getServiceLogs), their status and exit
code, across stop/start of the sandbox and a restart of the daemon.
"""
import json
import os
import re
import time


from conftest import wait_for
from test_daemon_postgres import pg  # noqa: F401 (fixture)
from test_daemon_restart import served  # noqa: F401 (fixture)
from test_resources import banner_key, daemon, restart, seal  # noqa: F401 (fixture)

SV = "io.pocketenv.service."


def add(d, sandbox, name, command, token="owner", **extra):
    return d.call(SV + "addService", {"sandboxId": sandbox},
                  body={"service": {"name": name, "command": command, **extra}}, token=token)


def svc(d, sid, token="owner"):
    st, out = d.call(SV + "getServices", {"sandboxId": sid}, token=token)
    assert st == 200, out
    return {s["name"]: s for s in out["services"]}


def op(d, method, service_id, token="owner"):
    return d.call(SV + method, {"serviceId": service_id}, post=True, token=token)


def logs(d, service_id):
    st, out = d.call(SV + "getServiceLogs", {"serviceId": service_id})
    assert st == 200, out
    return out["logs"]


def pids(d, sid, pattern):
    """Pids inside the sandbox whose command line matches pattern."""
    out = d.sh(sid, "ps -o pid,args")["stdout"]
    return [line.split(None, 1)[0] for line in out.splitlines()[1:]
            if re.search(pattern, line.split(None, 1)[1])]


def wait_status(d, sid, name, want, timeout=20):
    return wait_for(lambda: svc(d, sid)[name]["status"] == want and svc(d, sid)[name],
                    timeout, f"service {name} {want}")


def test_service_lifecycle(daemon):
    d = daemon
    sid = d.create("svcbox", envs=[{"name": "GREETING", "value": "hi"}])
    st, out = d.call("io.pocketenv.secret.addSecret", body={"secret": {
        "sandboxId": sid, "name": "TOKEN", "value": d.seal("s3cr3t-svc")}})
    assert st == 200, out
    st, out = add(d, "svcbox", "web", "echo \"up $GREETING ${#TOKEN}\"; exec sleep 7777",
                  description="a sleeper", ports=[8080, 8081])
    assert st == 200, out
    s = out["service"]
    assert re.fullmatch(r"svc_[0-9A-Za-z]{22}", s["id"])
    assert (s["name"], s["sandboxId"], s["description"], s["ports"]) == (
        "web", sid, "a sleeper", [8080, 8081])
    assert s["status"] == "RUNNING" and s["createdAt"]
    wait_for(lambda: pids(d, sid, r"^sleep 7777"), 10, "the service's process")
#With the sandbox's variables and secrets; what it prints is kept.
    wait_for(lambda: logs(d, s["id"]) == "up hi 10\n", 10, "its output")
    st, out = d.call(SV + "getServices", {"sandboxId": sid})
    assert st == 200 and out["total"] == 1 and out["services"][0]["id"] == s["id"], out

#stop : the process is gone, the status says so.
    st, out = op(d, "stopService", s["id"])
    assert st == 200 and out["service"]["status"] == "STOPPED", out
    assert pids(d, sid, r"^sleep 7777") == []
#start, restart : a new process each time.
    st, out = op(d, "startService", s["id"])
    assert st == 200 and out["service"]["status"] == "RUNNING", out
    first = wait_for(lambda: pids(d, sid, r"^sleep 7777"), 10, "started")
    st, out = op(d, "restartService", s["id"])
    assert st == 200 and out["service"]["status"] == "RUNNING", out
    second = wait_for(lambda: pids(d, sid, r"^sleep 7777"), 10, "restarted")
    assert len(second) == 1 and second != first
#starting a running service does nothing
    assert op(d, "startService", s["id"])[0] == 200
    time.sleep(0.3)
    assert pids(d, sid, r"^sleep 7777") == second

#It stops and starts with its sandbox.
    restart(d, sid)
    wait_for(lambda: pids(d, sid, r"^sleep 7777"), 10, "started with the sandbox")
    assert svc(d, sid)["web"]["status"] == "RUNNING"
    assert d.sandbox("stopSandbox", sid)[0] == 200
    assert svc(d, sid)["web"]["status"] == "STOPPED"
    assert d.sandbox("startSandbox", sid)[0] == 200
    wait_for(lambda: pids(d, sid, r"^sleep 7777"), 10, "started again")
#A service its owner stopped stays stopped across sandbox restarts.
    assert op(d, "stopService", s["id"])[0] == 200
    restart(d, sid)
    time.sleep(0.5)
    assert pids(d, sid, r"^sleep 7777") == [] and svc(d, sid)["web"]["status"] == "STOPPED"

#update : a running service runs its new command.
    assert op(d, "startService", s["id"])[0] == 200
    wait_for(lambda: pids(d, sid, r"^sleep 7777"), 10, "running")
    st, out = d.call(SV + "updateService", {"serviceId": s["id"]}, body={"service": {
        "name": "web2", "command": "exec sleep 8888", "ports": [9000]}})
    assert st == 200, out
    assert (out["service"]["name"], out["service"]["command"], out["service"]["ports"]) == (
        "web2", "exec sleep 8888", [9000])
    wait_for(lambda: pids(d, sid, r"^sleep 8888"), 10, "the new command")
    assert pids(d, sid, r"^sleep 7777") == []

#delete : process and row gone.
    st, out = op(d, "deleteService", s["id"])
    assert (st, out) == (200, {}), out
    assert pids(d, sid, r"^sleep 8888") == []
    assert d.call(SV + "getServices", {"sandboxId": sid})[1] == {"services": [], "total": 0}
    st, out = d.call(SV + "getServiceLogs", {"serviceId": s["id"]})
    assert (st, out["error"]) == (404, "ServiceNotFound")
    assert "s3cr3t-svc" not in d.log_text()
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_failing_service_is_restarted_then_failed(daemon):
    d = daemon
    sid = d.create("svcfail")
    st, out = add(d, sid, "crash", "echo boom; exit 3")
    assert st == 200, out
# 0.5 + 1 + 2 + 4 + 8 s of backoff, then FAILED with its exit code.
    s = wait_status(d, sid, "crash", "FAILED", timeout=60)
    assert s["exitCode"] == 3 and s["restarts"] == 5, s
    text = logs(d, s["id"])
    assert text.count("boom\n") == 6, text
    assert "giving up" in text
#A service that exits 0 is simply STOPPED, never restarted.
    st, out = add(d, sid, "oneshot", "echo done")
    assert st == 200
    s = wait_status(d, sid, "oneshot", "STOPPED")
    assert s["exitCode"] == 0 and s["restarts"] == 0
    time.sleep(1.0)
    assert logs(d, s["id"]).count("done\n") == 1
#A command the sandbox cannot run fails like a shell says so.
    st, out = add(d, sid, "missing", "exec /no/such/program")
    s = wait_status(d, sid, "missing", "FAILED", timeout=60)
    assert s["exitCode"] == 127, s
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_logs_are_a_bounded_ring(daemon):
    d = daemon
    sid = d.create("svclogs")
#~200 KiB of numbered lines, then a last line.
    st, out = add(d, sid, "noisy",
                  "i=0; while [ $i -lt 20000 ]; do echo \"line $i ..........\"; i=$((i+1)); "
                  "done; echo LAST; exec sleep 9999")
    assert st == 200, out
    sid_ = out["service"]["id"]
    wait_for(lambda: logs(d, sid_).endswith("LAST\n"), 30, "all output")
    st, out = d.call(SV + "getServiceLogs", {"serviceId": sid_})
    assert out["truncated"] is True and out["max"] == 65536
    assert 60000 < len(out["logs"].encode()) <= 65536
    assert "line 0 " not in out["logs"] and "line 19999 " in out["logs"]
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_service_bad_input(daemon):
    d = daemon
    sid = d.create("svcbad")
    assert add(d, sid, "one", "sleep 1000", ports=[3000])[0] == 200
    cases = [
        ({"name": "", "command": "x"}, 400),
        ({"name": "-dash", "command": "x"}, 400),
        ({"name": "a b", "command": "x"}, 400),
        ({"name": "x" * 64, "command": "x"}, 400),
        ({"name": "ok", "command": ""}, 400),
        ({"name": "ok", "command": "x" * 9000}, 400),
        ({"name": "ok", "command": "a\u0000b"}, 400),
        ({"name": "ok", "command": "x", "ports": [0]}, 400),
        ({"name": "ok", "command": "x", "ports": [70000]}, 400),
        ({"name": "ok", "command": "x", "ports": [80, 80]}, 400),
        ({"name": "ok", "command": "x", "ports": list(range(1, 18))}, 400),
        ({"name": "ok", "command": "x", "description": "d" * 2000}, 400),
        ({"command": "x"}, 400),
        ({"name": "one", "command": "x"}, 409),
        ({"name": "ok", "command": "x", "ports": [3000]}, 409),  # another service's port
    ]
    for body, want in cases:
        st, out = d.call(SV + "addService", {"sandboxId": sid}, body={"service": body})
        assert st == want, (body, out)
        assert out["error"] == ("AlreadyExists" if want == 409 else "InvalidRequest"), out
    st, out = add(d, "nosuch", "x", "true")
    assert (st, out["error"]) == (404, "SandboxNotFound")
    for m in ("startService", "stopService", "restartService", "deleteService"):
        st, out = op(d, m, "svc_nosuch")
        assert (st, out["error"]) == (404, "ServiceNotFound"), (m, out)
#At most 16 per sandbox.
    for i in range(15):
        assert add(d, sid, f"s{i}", "true")[0] == 200
    st, out = add(d, sid, "s99", "true")
    assert st == 400 and "16" in out["message"], out
#Nothing half - made : the failed adds left no row and no port.
    names = svc(d, sid)
    assert len(names) == 16 and "ok" not in names
    assert names["one"]["ports"] == [3000]
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_services_authz_matrix(daemon):
    d = daemon
    sid = d.create("svcguard")
    st, out = add(d, sid, "mine", "exec sleep 5555")
    assert st == 200
    s = out["service"]
    owner = d.call("io.pocketenv.actor.getProfile")[1]["did"]
    other = d.token_for("did:key:zServiceThief")
    d.others = list(getattr(d, "others", [])) + [other]
    now = int(time.time())
    expired = d.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now - 7200,
                     "exp": now - 3600})
    forged = d.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now, "exp": now + 600},
                   key=os.urandom(32))

    def calls(tok):
        for ident in (sid, "svcguard"):
            yield add(d, ident, "evil", "touch /tmp/pwned", token=tok)
            yield d.call(SV + "getServices", {"sandboxId": ident}, token=tok)
        for m in ("stopService", "restartService", "startService", "deleteService"):
            yield op(d, m, s["id"], token=tok)
        yield d.call(SV + "updateService", {"serviceId": s["id"]}, body={"service": {
            "name": "mine", "command": "touch /tmp/pwned"}}, token=tok)
        yield d.call(SV + "getServiceLogs", {"serviceId": s["id"]}, token=tok)

    for tok, want in [(None, "AuthenticationRequired"), (expired, "ExpiredToken"),
                      (forged, "InvalidToken"), ("not-a-jwt", "InvalidToken")]:
        for st, out in calls(tok):
            assert (st, out["error"]) == (401, want), out
    for st, out in calls(other):
        assert st == 404 and out["error"] in ("SandboxNotFound", "ServiceNotFound"), out
        assert sid not in json.dumps(out) and s["id"] not in json.dumps(out)
#Nothing of the owner's changed: the same process runs, nothing ran.
    got = svc(d, sid)
    assert list(got) == ["mine"] and got["mine"]["command"] == "exec sleep 5555"
    assert got["mine"]["status"] == "RUNNING" and got["mine"]["restarts"] == 0
    assert d.sh(sid, "ls /tmp/pwned 2>&1 >/dev/null | wc -l")["stdout"] == "1\n"
    assert len(pids(d, sid, r"^sleep 5555")) == 1
    assert d.sandbox("deleteSandbox", sid)[0] == 200


def test_services_come_back_after_a_daemon_restart(served):
    s = served(["--sandbox-net", "none"])
    d = s.start()
    st, sb = d.call("io.pocketenv.sandbox.createSandbox",
                    body={"base": "busybox", "name": "persist"})
    assert st == 200, sb
    d.wait_status(sb["id"], ["RUNNING"])
    st, out = d.call(SV + "addService", {"sandboxId": "persist"}, body={"service": {
        "name": "keep", "command": "echo started; exec sleep 4444"}})
    assert st == 200, out
    svc_id = out["service"]["id"]

    def sleepers():
        st, o = d.sandbox("exec", "persist", {"command": "ps -o pid,args | grep '[s]leep 4444'"})
        return [line.split()[0] for line in o["stdout"].splitlines()]
    before = wait_for(sleepers, 10, "the service")
    s.stop()
    s.start()
#The sandbox kept running; its service was started again, once.
    after = wait_for(lambda: (lambda p: p if p and p != before else None)(sleepers()), 20,
                     "the service started again")
    assert len(after) == 1, after
    wait_for(lambda: d.call(SV + "getServiceLogs", {"serviceId": svc_id})[1]["logs"]
             == "started\n", 10, "fresh logs")
    st, out = d.call(SV + "getServices", {"sandboxId": "persist"})
    assert out["services"][0]["status"] == "RUNNING", out
    assert "leftovers_killed=1" in s.log_text()


def test_keys_services_preferences_on_postgres(pg, served):  # noqa: F811
    """Keys, services and preferences through a daemon whose store is a real
    PostgreSQL: the upserts, the service rows and their ports."""
    s = served(["--sandbox-net", "none", "--store", pg()])
    d = s.start()
    pk = banner_key(d)
    st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox",
                                                                 "name": "pgkeys"})
    assert st == 200, sb
    assert d.wait_status(sb["id"], ["RUNNING", "FAILED"])["status"] == "RUNNING"
    st, k = d.call("io.pocketenv.sandbox.getSshKeys", {"id": "pgkeys"})
    assert st == 200 and k["publicKey"].startswith("ssh-ed25519 "), k
    key = "tskey-auth-" + os.urandom(16).hex()
    st, v = d.call("io.pocketenv.sandbox.putTailscaleAuthKey",
                   body={"id": "pgkeys", "authKey": seal(pk, key)})
    assert st == 200 and v["redacted"].startswith("tskey-auth-*"), v
    st, v2 = d.call("io.pocketenv.sandbox.putTailscaleAuthKey",
                    body={"id": "pgkeys", "authKey": seal(pk, key + "x")})
    assert st == 200 and v2["id"] == v["id"] and v2["redacted"].endswith(key[-2:] + "x")
    st, out = d.call(SV + "addService", {"sandboxId": "pgkeys"}, body={"service": {
        "name": "pgsvc", "command": "echo pg; exec sleep 3333", "ports": [7000]}})
    assert st == 200, out
    assert d.call(SV + "addService", {"sandboxId": "pgkeys"}, body={"service": {
        "name": "pgsvc", "command": "x"}})[0] == 409
    wait_for(lambda: d.call(SV + "getServiceLogs", {"serviceId": out["service"]["id"]})[1]
             ["logs"] == "pg\n", 10, "the service's first run")
    restart_ok = d.sandbox("stopSandbox", "pgkeys")[0] == 200 and \
        d.sandbox("startSandbox", "pgkeys", {})[0] == 200
    assert restart_ok
    # The ring spans the service's runs: both are there.
    seen = []

    def both_runs():
        seen.append(d.call(SV + "getServiceLogs", {"serviceId": out["service"]["id"]})[1])
        return seen[-1]["logs"] == "pg\n[pocketenv] stopped\npg\n"
    try:
        wait_for(both_runs, 10, "the service after the restart")
    except AssertionError:
        raise AssertionError(seen[-1])
    got = d.call(SV + "getServices", {"sandboxId": "pgkeys"})[1]
    assert got["total"] == 1 and got["services"][0]["ports"] == [7000], got
    api = "pgapikey-" + os.urandom(8).hex()
    assert d.call("io.pocketenv.sandbox.putPreferences", body={"sandboxId": sb["id"], "preferences": [
        {"$type": "io.pocketenv.sandbox.defs#sandboxProviderPref", "name": "e2b",
         "e2bApiKey": seal(pk, api)}]})[0] == 200
    st, prefs = d.call("io.pocketenv.sandbox.getPreferences", {"id": "pgkeys"})
    assert st == 200 and prefs[0]["redactedE2bApiKey"] == api[:11] + "*" * 24 + api[-3:]
    log = s.log_text()
    assert key not in log and api not in log
    assert not os.path.exists(os.path.join(s.data, "pocketenv.db"))
    assert d.sandbox("deleteSandbox", "pgkeys")[0] == 200
