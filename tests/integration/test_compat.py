"""What upstream's CLI and SDK send, answered as they expect (issue 12).

Each test sends exactly what upstream's clients send (reference §1-§4 and
their public source) to a real daemon.
"""
import json
import urllib.error
import urllib.request

import pytest

from test_daemon import serving


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("compat")) as d:
        yield d


def post(url, body, headers=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_login_with_a_handle_says_how_to_get_a_token(daemon):
    """Upstream's `pocketenv login HANDLE` posts {handle, cli: true} to
    /login: an XRPC-style error that says what to do, not a bare 405."""
    st, body = post(daemon.url + "/login", {"handle": "alice.bsky.social", "cli": True})
    assert st == 501, body
    err = json.loads(body)
    assert err["error"] == "MethodNotImplemented"
    assert "pocketenv token create" in err["message"] and "token.json" in err["message"]
    st, _ = post(daemon.url + "/loginx", {})
    assert st == 404
    assert daemon.healthy()
