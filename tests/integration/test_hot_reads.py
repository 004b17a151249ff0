"""Hot reads (issue 21): getSandbox answered from the daemon's read cache
on its loop thread, never stale after a write of the daemon and never one
user's answer to another.

One daemon for the module (test_daemon's `serving`). Every check reads a
sandbox twice before a write, so the second read is a cache hit (the
/metrics counter says so), then reads it back once, right after the write
was answered: that read must show the write.
"""
import re
import urllib.request

import pytest

from test_daemon import serving


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("hot")) as d:
        yield d


def metric(d, name):
    req = urllib.request.Request(d.url + "/metrics",
                                 headers={"Authorization": f"Bearer {d.token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^" + re.escape(name) + r" (\d+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return int(m.group(1))


def get(d, ident, token="owner"):
    return d.sandbox("getSandbox", ident, token=token)


def warm(d, ident, token="owner"):
    """Two reads, the second from the cache; returns its answer."""
    first = get(d, ident, token)
    hits = metric(d, "pocketenv_read_cache_hits_total")
    second = get(d, ident, token)
    assert second == first
    assert metric(d, "pocketenv_read_cache_hits_total") == hits + 1, "not a cache hit"
    return second


def test_repeated_read_is_a_cache_hit(daemon):
    st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "busybox", "name": "hot-hit"})
    assert st == 200, sb
    daemon.wait_status("hot-hit", ["RUNNING"])
    for ident in (sb["id"], "hot-hit"):  # by id and by name, each its own entry
        st, out = warm(daemon, ident)
        assert st == 200 and out["sandbox"]["id"] == sb["id"]
    assert metric(daemon, "pocketenv_read_cache_entries") >= 2
    assert daemon.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_read_after_write_is_never_stale(daemon):
    st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "busybox", "name": "hot-rw"})
    assert st == 200, sb
    daemon.wait_status("hot-rw", ["RUNNING"])
    for ident in (sb["id"], "hot-rw"):
        warm(daemon, ident)
        assert daemon.sandbox("stopSandbox", ident)[0] == 200
        assert get(daemon, ident)[1]["sandbox"]["status"] == "STOPPED"

        warm(daemon, ident)
        st, _ = daemon.sandbox("startSandbox", ident, {"keepAlive": True})
        assert st == 200
        got = get(daemon, ident)[1]["sandbox"]
        assert got["status"] == "RUNNING" and got["keepAlive"] is True

        warm(daemon, ident)
        assert daemon.sandbox("startSandbox", ident, {"keepAlive": False})[0] == 200
        assert get(daemon, ident)[1]["sandbox"]["keepAlive"] is False

    warm(daemon, sb["id"])
    warm(daemon, "hot-rw")
    assert daemon.sandbox("deleteSandbox", sb["id"])[0] == 200
    for ident in (sb["id"], "hot-rw"):
        st, out = get(daemon, ident)
        assert (st, out["error"]) == (404, "SandboxNotFound"), out

    # A new sandbox under the freed name: the name reads the new one.
    st, again = daemon.call("io.pocketenv.sandbox.createSandbox",
                            body={"base": "busybox", "name": "hot-rw"})
    assert st == 200
    assert get(daemon, "hot-rw")[1]["sandbox"]["id"] == again["id"]
    daemon.wait_status("hot-rw", ["RUNNING"])
    assert daemon.sandbox("deleteSandbox", "hot-rw")[0] == 200


def test_cached_answer_is_never_another_users(daemon):
    other = daemon.token_for("did:key:zHotReadOther")
    daemon.others = getattr(daemon, "others", []) + [other]
    st, mine = daemon.call("io.pocketenv.sandbox.createSandbox",
                           body={"base": "busybox", "name": "hot-same"})
    assert st == 200
    st, theirs = daemon.call("io.pocketenv.sandbox.createSandbox",
                             body={"base": "busybox", "name": "hot-same"}, token=other)
    assert st == 200, theirs
    daemon.wait_status("hot-same", ["RUNNING"])
    daemon.wait_status("hot-same", ["RUNNING"], token=other)

    # The owner's answers are cached; the other user asks the same keys.
    warm(daemon, mine["id"])
    warm(daemon, "hot-same")
    st, out = get(daemon, mine["id"], token=other)
    assert (st, out["error"]) == (404, "SandboxNotFound"), out
    assert get(daemon, "hot-same", token=other)[1]["sandbox"]["id"] == theirs["id"]
    # And the other way round, with theirs cached now.
    warm(daemon, "hot-same", token=other)
    assert get(daemon, "hot-same")[1]["sandbox"]["id"] == mine["id"]
    st, out = get(daemon, theirs["id"])
    assert (st, out["error"]) == (404, "SandboxNotFound"), out
    # No token, or a bad one, gets no cached answer either.
    for tok in (None, "not-a-jwt"):
        st, out = get(daemon, mine["id"], token=tok)
        assert st == 401, out
    assert daemon.sandbox("deleteSandbox", mine["id"])[0] == 200
    assert daemon.sandbox("deleteSandbox", theirs["id"], token=other)[0] == 200
