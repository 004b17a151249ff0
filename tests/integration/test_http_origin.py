"""Who may read the daemon's answers from a browser, and /metrics.

A page served from a sandbox's preview (another origin: a port on
*.localhost, or any site) runs in the owner's browser. With
Access-Control-Allow-Origin: * on every answer it could call the API and
read the answers. Now the API sends CORS headers only to origins the
operator allowed (`--cors-origin`, exact match), never "*", and routes such
as previews get none from the server. /metrics needs the owner's token
unless `--metrics-public`; /healthz stays public. Plain HTTP checks, no
browser: what a browser enforces is decided by these headers.
"""
import http.client
import json

import pytest

from test_daemon import serving

APP = "https://app.example.com"
STRANGERS = ["http://8080-x.localhost:8789", "http://evil.example", "null",
             "https://app.example.com.evil.example", "http://app.example.com",
             "https://app.example.com:8443"]


def ask(d, method, path, headers=None, body=None):
    conn = http.client.HTTPConnection(d.url[len("http://"):], timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    status, hdrs, text = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    conn.close()
    return status, hdrs, text


def preflight(d, origin, path="/xrpc/io.pocketenv.actor.getProfile"):
    return ask(d, "OPTIONS", path, {"Origin": origin, "Access-Control-Request-Method": "GET",
                                    "Access-Control-Request-Headers": "authorization"})


def profile(d, origin):
    return ask(d, "GET", "/xrpc/io.pocketenv.actor.getProfile",
               {"Origin": origin, "Authorization": f"Bearer {d.token}"})


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("origin-default")) as d:
        yield d


@pytest.fixture(scope="module")
def allowing(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("origin-allow"),
                 extra=["--cors-origin", APP, "--metrics-public"]) as d:
        yield d


def test_no_origin_may_read_the_api_by_default(plain):
    d = plain
    for origin in STRANGERS + [APP]:
        status, hdrs, _ = profile(d, origin)
        assert status == 200
        assert "access-control-allow-origin" not in hdrs, (origin, hdrs)
        status, hdrs, body = preflight(d, origin)
        assert status == 403 and json.loads(body)["error"] == "Forbidden", (origin, status)
        assert not any(k.startswith("access-control-") for k in hdrs), hdrs
    status, hdrs, _ = ask(d, "GET", "/healthz", {"Origin": "http://evil.example"})
    assert status == 200 and "access-control-allow-origin" not in hdrs


def test_an_allowed_origin_and_no_other(allowing):
    d = allowing
    status, hdrs, _ = profile(d, APP)
    assert status == 200
    assert hdrs["access-control-allow-origin"] == APP
    assert "Origin" in hdrs["vary"]
    status, hdrs, _ = preflight(d, APP)
    assert status == 204
    assert hdrs["access-control-allow-origin"] == APP
    assert "Authorization" in hdrs["access-control-allow-headers"]
    for origin in STRANGERS:
        status, hdrs, _ = profile(d, origin)
        assert status == 200 and "access-control-allow-origin" not in hdrs, (origin, hdrs)
        assert "Origin" in hdrs["vary"]
        assert preflight(d, origin)[0] == 403
    # Never "*", whatever the answer.
    for path in ("/healthz", "/metrics", "/xrpc/io.pocketenv.sandbox.nope", "/nope"):
        status, hdrs, _ = ask(d, "GET", path, {"Origin": APP})
        assert hdrs.get("access-control-allow-origin") in (None, APP), (path, hdrs)


def test_routes_get_no_cors_headers_from_the_server(allowing):
    """A preview's own app decides its CORS headers; the server adds none,
    even for an allowed origin."""
    d = allowing
    for method in ("GET", "OPTIONS"):
        status, hdrs, _ = ask(d, method, "/p/nosuchbox/8080/",
                              {"Origin": APP, "Authorization": f"Bearer {d.token}",
                               "Access-Control-Request-Method": "GET"})
        assert status in (401, 403, 404), status
        assert not any(k.startswith("access-control-") for k in hdrs), (method, hdrs)
    status, hdrs, _ = ask(d, "GET", "/", {"Origin": APP, "Host": "8080-nosuchbox.localhost"})
    assert not any(k.startswith("access-control-") for k in hdrs), hdrs


def test_metrics_need_the_owners_token(plain):
    d = plain
    status, hdrs, body = ask(d, "GET", "/metrics")
    assert status == 401 and json.loads(body)["error"] == "AuthenticationRequired"
    assert b"pocketenv_" not in body
    status, _, body = ask(d, "GET", "/metrics", {"Authorization": "Bearer not-a-token"})
    assert status == 401
    stranger = d.token_for("did:key:zMetricsStranger")
    status, _, body = ask(d, "GET", "/metrics", {"Authorization": f"Bearer {stranger}"})
    assert status == 403 and json.loads(body)["error"] == "Forbidden"
    status, _, body = ask(d, "GET", "/metrics", {"Authorization": f"Bearer {d.token}"})
    assert status == 200 and b"pocketenv_http_requests_total" in body
    assert ask(d, "GET", "/healthz")[0] == 200


def test_metrics_public_when_the_operator_says_so(allowing):
    status, _, body = ask(allowing, "GET", "/metrics")
    assert status == 200 and b"pocketenv_http_requests_total" in body


def test_bad_cors_origin_refused_at_start(tmp_path):
    import subprocess
    from conftest import BIN
    for bad in ["*", "app.example.com", "https://app.example.com/", "null"]:
        p = subprocess.run([BIN, "serve", "--data", str(tmp_path / "d"), "--cors-origin", bad,
                            "--listen", "127.0.0.1:1"], capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "an origin like https://" in p.stderr, (bad, p.stderr)
