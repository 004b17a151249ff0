"""AT Protocol identity (issue 18) against a real PDS and PLC directory on
loopback (tests/atproto/pds.mjs, see atproto_pds.py)."""

import errno
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse

import pytest

from atproto_pds import DnsTxt, FakeHttp, Pds

BUILD = os.environ.get("PE_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
RESOLVE = os.path.join(BUILD, "tests", "atproto-resolve")

ALICE = ("alice.test", "alice-password-1")
BOB = ("bob.test", "bob-password-1")


@pytest.fixture(scope="module")
def pds(tmp_path_factory):
    p = Pds(str(tmp_path_factory.mktemp("pds")), [ALICE, BOB])
    yield p
    p.close()


@pytest.fixture
def dns():
    d = DnsTxt()
    yield d
    d.close()


@pytest.fixture
def fake():
    f = FakeHttp()
    yield f
    f.close()


def resolve(pds, dns, what, *opts, hosts=(), plc=None, step="all"):
    """Run the resolver helper (lib/auth/atproto-resolve.c) against the
    loopback PDS: every handle in hosts (plus alice.test and bob.test)
    reaches port 80 of the PDS, or of what hosts maps it to."""
    conn = {h: pds.port for h in ("alice.test", "bob.test")}
    conn.update(dict(hosts))
    args = [RESOLVE, "--allow-http", "--plc", plc or pds.plc, "--dns", dns.addr,
            "--timeout-ms", "3000", "--step", step]
    for h, port in conn.items():
        args += ["--connect-to", f"{h}:80:127.0.0.1:{port}"]
    p = subprocess.run([*args, *opts, what], capture_output=True, text=True, timeout=60)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode, json.loads(p.stdout)


def test_pds_account_handle_and_did_document(pds):
    alice = pds.accounts["alice.test"]
    assert alice["did"].startswith("did:plc:")
    # The account exists in the PDS's repository store.
    status, body = pds.get(f"{pds.pds}/xrpc/com.atproto.repo.describeRepo?repo="
                           + urllib.parse.quote(alice["did"]))
    assert status == 200 and json.loads(body)["handle"] == "alice.test"
    # Its handle resolves to its DID the way https://alice.test would.
    status, body = pds.get(f"{pds.pds}/.well-known/atproto-did", host="alice.test")
    assert (status, body.strip()) == (200, alice["did"])
    # Its DID document, from the PLC directory, names this PDS and handle.
    status, body = pds.get(f"{pds.plc}/{alice['did']}")
    doc = json.loads(body)
    assert doc["id"] == alice["did"]
    assert "at://alice.test" in doc["alsoKnownAs"]
    svc = [s for s in doc["service"] if s["id"] == "#atproto_pds"]
    assert svc and svc[0]["type"] == "AtprotoPersonalDataServer"
    assert svc[0]["serviceEndpoint"] == pds.pds
    # Bob is another DID; a handle nobody has is not found.
    assert pds.accounts["bob.test"]["did"] != alice["did"]
    with pytest.raises(urllib.error.HTTPError) as e:
        pds.get(f"{pds.pds}/.well-known/atproto-did", host="nobody.test")
    assert e.value.code == 404


def test_resolve_handle_to_did_document_and_pds(pds, dns):
    alice = pds.accounts["alice.test"]
    # No TXT record: the resolver falls back to /.well-known/atproto-did.
    rc, got = resolve(pds, dns, "Alice.Test")
    assert rc == 0, got
    assert got == {"did": alice["did"], "handle": "alice.test", "pds": pds.pds}
    # From the DID, the handle its document claims is checked back.
    rc, got = resolve(pds, dns, alice["did"])
    assert (rc, got) == (0, {"did": alice["did"], "handle": "alice.test", "pds": pds.pds})


def test_resolve_handle_through_dns_txt(pds, dns):
    bob = pds.accounts["bob.test"]
    dns.records["_atproto.bob.test"] = ["v=spf1 -all", f"did={bob['did']}"]
    # bob.test's HTTPS host is unreachable (port 9 of loopback: nothing
    # listens): only the TXT record can name the DID.
    rc, got = resolve(pds, dns, "bob.test", hosts={"bob.test": 9})
    assert (rc, got) == (0, {"did": bob["did"], "handle": "bob.test", "pds": pds.pds})
    # Two TXT records naming different DIDs: refused, not guessed.
    dns.records["_atproto.bob.test"].append(f"did={pds.accounts['alice.test']['did']}")
    rc, got = resolve(pds, dns, "bob.test", step="handle")
    assert rc == 1 and got["error"] == "EREMOTE" and "two different DIDs" in got["message"]


def test_resolve_refuses_a_handle_its_did_does_not_name(pds, dns):
    # mallory.test's TXT record claims Alice's DID; Alice's document does
    # not name mallory.test, so mallory.test is not Alice.
    dns.records["_atproto.mallory.test"] = [f"did={pds.accounts['alice.test']['did']}"]
    rc, got = resolve(pds, dns, "mallory.test")
    assert rc == 1 and got["error"] == "EREMOTE", got
    assert "does not name it back" in got["message"]


@pytest.mark.parametrize("bad", ["alice", "-alice.test", "alice..test", "alice.123",
                                 "al ice.test", "a" * 64 + ".test", "did:key:z6Mk",
                                 "did:plc:short", "did:web:exa%2Fmple.com"])
def test_resolve_refuses_malformed_names_before_any_request(pds, dns, fake, bad):
    # Every host reaches the fake server, which would answer a valid DID:
    # a request for a malformed name would succeed.
    fake.routes["/.well-known/atproto-did"] = (200, pds.accounts["alice.test"]["did"], 0)
    rc, got = resolve(pds, dns, bad, "--connect-to", f"::127.0.0.1:{fake.port}")
    assert rc == 1 and got["error"] == "EINVAL", got


def test_resolve_refuses_garbage_slow_and_oversized_answers(pds, dns, fake):
    hosts = {"carol.test": fake.port}
    fake.routes["/.well-known/atproto-did"] = (200, "<html>hello</html>", 0)
    rc, got = resolve(pds, dns, "carol.test", hosts=hosts, step="handle")
    assert (rc, got["error"]) == (1, "EREMOTE") and "not a DID" in got["message"]
    fake.routes["/.well-known/atproto-did"] = (200, "did:plc:" + "a" * 24 + "\n" * 4096, 0)
    rc, got = resolve(pds, dns, "carol.test", hosts=hosts, step="handle")
    assert (rc, got["error"]) == (1, "EREMOTE") and "larger than" in got["message"]
    fake.routes["/.well-known/atproto-did"] = (302, "", 0)
    rc, got = resolve(pds, dns, "carol.test", hosts=hosts, step="handle")
    assert (rc, got["error"]) == (1, "EREMOTE") and "status 302" in got["message"]
    # Slower than the deadline (3 s): a timeout, not a hang.
    fake.routes["/.well-known/atproto-did"] = (200, pds.accounts["alice.test"]["did"], 20)
    rc, got = resolve(pds, dns, "carol.test", hosts=hosts, step="handle")
    assert (rc, got["error"]) == (1, "ETIMEDOUT"), got


def test_resolve_refuses_the_document_of_another_did(pds, dns, fake):
    alice, bob = pds.accounts["alice.test"], pds.accounts["bob.test"]
    # A PLC directory that answers Alice's real document when asked for Bob.
    _, alice_doc = pds.get(f"{pds.plc}/{alice['did']}")
    fake.routes[f"/{bob['did']}"] = (200, alice_doc, 0)
    rc, got = resolve(pds, dns, bob["did"], plc=fake.url)
    assert rc == 1 and got["error"] == "EREMOTE", got
    assert "document of another DID" in got["message"]
    # The same directory answering Bob's own document is fine.
    _, bob_doc = pds.get(f"{pds.plc}/{bob['did']}")
    fake.routes[f"/{bob['did']}"] = (200, bob_doc, 0)
    rc, got = resolve(pds, dns, bob["did"], plc=fake.url)
    assert rc == 0 and got["pds"] == pds.pds, got
    # Garbage, a PDS endpoint that is not a URL, no PDS at all, slowness.
    for body, error in [("{not json", "not a DID document"),
                        (bob_doc.replace(pds.pds, "javascript:alert(1)"), "PDS endpoint"),
                        (bob_doc.replace("AtprotoPersonalDataServer", "Other"), "names no PDS")]:
        fake.routes[f"/{bob['did']}"] = (200, body, 0)
        rc, got = resolve(pds, dns, bob["did"], plc=fake.url)
        assert rc == 1 and error in got["message"], got
    fake.routes[f"/{bob['did']}"] = (200, bob_doc, 20)
    rc, got = resolve(pds, dns, bob["did"], plc=fake.url)
    assert (rc, got["error"]) == (1, "ETIMEDOUT"), got


def test_resolve_did_web(pds, dns, fake):
    # did:web:dave.test: its document at http://dave.test/.well-known/did.json
    # (plain HTTP in this dev configuration) names the loopback PDS.
    did = "did:web:dave.test"
    doc = {"@context": ["https://www.w3.org/ns/did/v1"], "id": did,
           "alsoKnownAs": ["at://dave.test"],
           "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                        "serviceEndpoint": pds.pds}]}
    fake.routes["/.well-known/did.json"] = (200, json.dumps(doc), 0)
    fake.routes["/.well-known/atproto-did"] = (200, did, 0)
    rc, got = resolve(pds, dns, did, hosts={"dave.test": fake.port})
    assert (rc, got) == (0, {"did": did, "handle": "dave.test", "pds": pds.pds})
    # Its handle no longer points back: the DID resolves, the handle is
    # marked invalid rather than trusted.
    fake.routes["/.well-known/atproto-did"] = (200, pds.accounts["bob.test"]["did"], 0)
    rc, got = resolve(pds, dns, did, hosts={"dave.test": fake.port})
    assert (rc, got["handle"]) == (0, "handle.invalid")


# ---- OAuth sign-in (lib/auth/atproto-oauth.c) ----

LOGIN = os.path.join(BUILD, "tests", "atproto-login")
SIGNIN = os.path.join(os.path.dirname(__file__), "..", "atproto", "signin.mjs")
CHROMIUM = "/usr/bin/chromium"
SCOPE = "atproto transition:generic"


class Login:
    """tests/helpers/atproto-login: one sign-in through the OAuth client;
    .start is its first answer (authorize_url, did, pds, issuer)."""

    def __init__(self, pds, handle, redirect):
        args = [LOGIN, "--allow-http", "--plc", pds.plc, "--dns", "off",
                "--redirect", redirect, "--scope", SCOPE,
                "--connect-to", f"{handle}:80:127.0.0.1:{pds.port}", handle]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.start = self._line()

    def _line(self):
        line = self.proc.stdout.readline()
        assert line, "atproto-login exited"
        return json.loads(line)

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self):
        self.proc.stdin.close()
        # 0: no crash, and under tests/run-sanitized no leak either.
        assert self.proc.wait(timeout=30) == 0


def sign_in_in_browser(url, password, redirect, follow=False, proxy=None, wait_text=None):
    """The user's part: the PDS's own sign-in page in headless chromium;
    returns the redirect URL the PDS sent the browser to (with follow, also
    the text of the page that URL showed: {"callback", "page"}). proxy
    {"from": "https://ORIGIN", "to": "http://127.0.0.1:PORT"}: the browser
    reaches that origin on loopback (a daemon's public URL)."""
    assert os.access(CHROMIUM, os.X_OK), "chromium is missing: run scripts/setup"
    env = dict(os.environ, PE_SIGNIN=json.dumps(
        {"url": url, "password": password, "redirect": redirect, "chromium": CHROMIUM,
         "follow": follow, "proxy": proxy, "waitText": wait_text}))
    p = subprocess.run(["node", SIGNIN], capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    return got if follow else got["callback"]


def test_oauth_sign_in_with_a_handle_refresh_and_revoke(pds):
    alice = pds.accounts["alice.test"]
    redirect = "http://127.0.0.1:9/oauth/callback"
    login = Login(pds, "alice.test", redirect)
    try:
        assert "error" not in login.start, login.start
        assert login.start["did"] == alice["did"] and login.start["issuer"] == pds.pds
        # The PAR went through: the URL carries only a request_uri.
        url = login.start["authorize_url"]
        assert url.startswith(f"{pds.pds}/oauth/authorize?") and "request_uri=" in url
        assert "code_challenge" not in url and "state=" not in url
        callback = sign_in_in_browser(url, alice["password"], redirect)
        q = urllib.parse.parse_qs(urllib.parse.urlparse(callback).query)
        # A forged or misdirected redirect is refused and consumes nothing.
        got = login.ask(f"callback-raw forged-state {q['iss'][0]} {q['code'][0]}")
        assert "error" in got and "(state)" in got["message"], got
        got = login.ask(f"callback-raw {q['state'][0]} http://evil.test {q['code'][0]}")
        assert "error" in got and "another server" in got["message"], got
        # The real one: DPoP-bound tokens for Alice's DID.
        got = login.ask(f"callback {callback}")
        assert got == {"ok": True, "sub": alice["did"], "scope": SCOPE, "has_refresh": True,
                       "expires_in": got["expires_in"]}, got
        assert q["code"][0] not in json.dumps(got)
        # The access token works on Alice's PDS only with its DPoP key.
        got = login.ask("get com.atproto.server.getSession")
        assert got["status"] == 200, got
        session = json.loads(got["body"])
        assert (session["did"], session["handle"]) == (alice["did"], "alice.test")
        # Refresh, then the new access token works too.
        assert login.ask("refresh")["ok"]
        assert login.ask("get com.atproto.server.getSession")["status"] == 200
        # Revoked: the refresh token is dead.
        assert login.ask("revoke") == {"ok": True}
        got = login.ask("refresh")
        assert "error" in got and "invalid_grant" in got["message"], got
    finally:
        login.close()


def test_oauth_sign_in_refuses_an_unknown_handle_before_any_browser(pds):
    login = Login(pds, "nobody.test", "http://127.0.0.1:9/oauth/callback")
    try:
        assert "error" in login.start and "nobody.test" in login.start["message"]
    finally:
        assert login.proc.wait(timeout=30) == 1


# ---- the daemon: /oauth/login, /oauth/callback, /oauth/token (daemon/oauth.c) ----

def post_json(url, body, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def post_json_auth(url, token):
    req = urllib.request.Request(url, data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def jwt_claims(token):
    import base64
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@pytest.fixture
def oauth_daemon(tmp_path, pds, dns):
    from test_daemon import serving
    # Handles resolve through the loopback DNS server's TXT records; DID
    # documents through the loopback PLC; the dev PDS speaks plain HTTP.
    for handle, a in pds.accounts.items():
        dns.records[f"_atproto.{handle}"] = [f"did={a['did']}"]
    extra = ["--atproto-plc", pds.plc, "--atproto-dns", dns.addr, "--atproto-insecure-http",
             "--atproto-allow-private"]
    with serving(tmp_path, extra=extra) as d:
        yield d


def test_daemon_sign_in_with_a_handle_gives_a_token_bound_to_the_did(pds, oauth_daemon):
    d, alice = oauth_daemon, pds.accounts["alice.test"]
    st, started = post_json(f"{d.url}/oauth/login", {"handle": "alice.test"})
    assert st == 200, started
    assert started["did"] == alice["did"] and started["url"].startswith(f"{pds.pds}/oauth/")
    pickup = started["pickup"]
    assert post_json(f"{d.url}/oauth/token", {"pickup": pickup}) == (202, {"status": "pending"})
    # The user signs in on their PDS; the PDS sends the browser back to the
    # daemon's own callback, which says who signed in and shows no token.
    got = sign_in_in_browser(started["url"], alice["password"], f"{d.url}/oauth/callback",
                             follow=True)
    assert "Signed in as @alice.test" in got["page"], got
    st, out = post_json(f"{d.url}/oauth/token", {"pickup": pickup})
    assert st == 200 and (out["did"], out["handle"]) == (alice["did"], "alice.test"), out
    assert out["token"] not in got["page"] and out["token"] not in got["callback"]
    claims = jwt_claims(out["token"])
    assert claims["did"] == alice["did"] and claims["scope"] == "api"
    # Our token works on our API, as Alice.
    st, _ = d.call("io.pocketenv.actor.getActorSandboxes", {"did": alice["did"]},
                   token=out["token"])
    assert st == 200
    # The pickup works once.
    assert post_json(f"{d.url}/oauth/token", {"pickup": pickup})[0] == 404
    # The PDS session is kept sealed: no DPoP private key, no JSON in clear.
    sealed_dir = os.path.join(d.data, "atproto")
    files = os.listdir(sealed_dir)
    assert len(files) == 1 and os.stat(sealed_dir).st_mode & 0o777 == 0o700
    path = os.path.join(sealed_dir, files[0])
    assert os.stat(path).st_mode & 0o777 == 0o600
    blob = open(path).read()
    assert "PRIVATE KEY" not in blob and alice["did"] not in blob and "{" not in blob
    # Nothing secret in the daemon's log.
    assert out["token"] not in d.log_text() and pickup not in d.log_text()
    # The sealed session opens again: logout restores it, revokes its
    # refresh token at Alice's authorization server and forgets it.
    assert post_json(f"{d.url}/oauth/logout", {})[0] == 401
    st, _ = post_json_auth(f"{d.url}/oauth/logout", out["token"])
    assert st == 200, d.log_text()[-2000:]
    assert os.listdir(sealed_dir) == []
    assert "event=oauth-logout did=" + alice["did"] in d.log_text()
    # Our API token of Alice is revoked with it.
    st, again = post_json_auth(f"{d.url}/oauth/logout", out["token"])
    assert st == 401, again
    st, _ = d.call("io.pocketenv.actor.getProfile", token=out["token"])
    assert st == 401


def test_daemon_sign_in_refuses_bad_input_and_replays(pds, dns, oauth_daemon):
    d = oauth_daemon
    for body in [{}, {"handle": 7}, {"handle": "not a handle"}, {"handle": "a" * 300 + ".test"}]:
        st, out = post_json(f"{d.url}/oauth/login", body)
        assert st == 400 and out["error"] == "InvalidRequest", (body, out)
    st, out = post_json(f"{d.url}/oauth/login", None, raw=b"{not json")
    assert st == 400 and out["error"] == "InvalidRequest"
    # A handle whose DID the directory does not know: a clear error, no
    # sign-in left behind. (Its TXT record answers first, so nothing asks
    # the host's resolver about nobody.test: the test stays on loopback.)
    dns.records["_atproto.nobody.test"] = ["did=did:plc:" + "a" * 24]
    st, out = post_json(f"{d.url}/oauth/login", {"handle": "nobody.test"})
    assert st == 404 and out["error"] == "SignInFailed", out
    assert "did:plc:" + "a" * 24 in out["message"]
    assert post_json(f"{d.url}/oauth/token", {"pickup": "x" * 43})[0] == 404
    assert post_json(f"{d.url}/oauth/token", {})[0] == 404
    # A callback nobody started, or a forged state for a real sign-in.
    st, started = post_json(f"{d.url}/oauth/login", {"handle": "bob.test"})
    assert st == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{d.url}/oauth/callback?state=forged&iss=x&code=y", timeout=30)
    assert e.value.code == 400
    assert post_json(f"{d.url}/oauth/token", {"pickup": started["pickup"]})[0] == 202
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{d.url}/oauth/nothing", timeout=30)
    assert e.value.code == 404


def test_cli_login_with_a_handle_prints_the_url_and_keeps_the_token(pds, oauth_daemon, tmp_path):
    from conftest import BIN
    d, bob = oauth_daemon, pds.accounts["bob.test"]
    home = tmp_path / "home"
    home.mkdir()
    # No DISPLAY, no BROWSER: the URL is printed for the user to open.
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY",
                                                             "BROWSER", "POCKETENV_TOKEN")}
    env.update(HOME=str(home), POCKETENV_API_URL=d.url, NO_COLOR="1")
    p = subprocess.Popen([BIN, "login", "bob.test"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        while url is None:
            line = p.stdout.readline()
            assert line, p.stderr.read()
            if line.strip().startswith(pds.pds):
                url = line.strip()
        got = sign_in_in_browser(url, bob["password"], f"{d.url}/oauth/callback", follow=True)
        assert "Signed in as @bob.test" in got["page"]
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert f"Logged in as @bob.test ({bob['did']})" in out
    token = json.loads((home / ".pocketenv" / "token.json").read_text())["token"]
    assert token not in out + err
    assert jwt_claims(token)["did"] == bob["did"]
    who = subprocess.run([BIN, "whoami", "--json"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert who.returncode == 0 and json.loads(who.stdout)["did"] == bob["did"], who.stderr
    # Bob has no profile record: his handle, never "@undefined" or {}.
    st, prof = d.call("io.pocketenv.actor.getProfile", token=token)
    assert st == 200 and (prof["did"], prof["handle"]) == (bob["did"], "bob.test"), prof
    who = subprocess.run([BIN, "whoami"], capture_output=True, text=True, env=env, timeout=60)
    assert who.stdout == "You are logged in as @bob.test (bob.test).\n", who
    # logout: the daemon revokes Bob's PDS session and his token, then the
    # token kept here is forgotten.
    bye = subprocess.run([BIN, "logout"], capture_output=True, text=True, env=env, timeout=60)
    assert bye.returncode == 0, bye
    assert "Signed out: the daemon revoked your AT Protocol session and tokens." in bye.stdout
    assert not (home / ".pocketenv" / "token.json").exists()
    assert os.listdir(os.path.join(d.data, "atproto")) == []
    assert f"event=oauth-logout did={bob['did']}" in d.log_text()
    st, _ = d.call("io.pocketenv.actor.getProfile", token=token)
    assert st == 401


# ---- the confidential web client: --atproto-public-url, private_key_jwt ----

# A name under home.arpa (RFC 8375, never public): the PDS refuses a
# client_id under .test, .local or .example and fetches nothing from
# example.org; nothing resolves this one either, both the PDS and the
# browser are routed to the daemon on loopback.
WEB = "https://pocketenv.home.arpa"


def other_jwks():
    """A JWKS of a P-256 key the daemon does not have."""
    import base64
    from cryptography.hazmat.primitives.asymmetric import ec
    n = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    b64 = lambda i: base64.urlsafe_b64encode(i.to_bytes(32, "big")).rstrip(b"=").decode()
    return {"keys": [{"kty": "EC", "crv": "P-256", "x": b64(n.x), "y": b64(n.y), "kid": "other",
                      "alg": "ES256", "use": "sig"}]}


def test_web_client_signs_in_with_private_key_jwt_and_a_wrong_key_is_refused(
        pds, dns, fake, tmp_path):
    from test_daemon import serving
    from conftest import BIN
    alice = pds.accounts["alice.test"]
    for handle, a in pds.accounts.items():
        dns.records[f"_atproto.{handle}"] = [f"did={a['did']}"]
    base = ["--atproto-plc", pds.plc, "--atproto-dns", dns.addr, "--atproto-insecure-http",
            "--atproto-allow-private"]
    # Not an https URL, or one with a query: the daemon does not start.
    for bad in ["http://pocketenv.test", "https://pocketenv.test/?x=1", "https://"]:
        p = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data",
                            str(tmp_path / "bad"), "--atproto-public-url", bad],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "--atproto-public-url" in p.stderr, (bad, p.stderr)
    extra = base + ["--atproto-public-url", WEB + "/"]
    with serving(tmp_path, extra=extra, check_leaks=False) as d:
        # The metadata document the PDS fetches, and the JWKS it names.
        with urllib.request.urlopen(f"{d.url}/oauth/client-metadata.json", timeout=30) as r:
            meta = json.loads(r.read())
        assert meta["client_id"] == f"{WEB}/oauth/client-metadata.json", meta
        assert meta["redirect_uris"] == [f"{WEB}/oauth/callback"]
        assert meta["token_endpoint_auth_method"] == "private_key_jwt"
        assert meta["token_endpoint_auth_signing_alg"] == "ES256"
        assert meta["dpop_bound_access_tokens"] is True
        assert meta["jwks_uri"] == f"{WEB}/oauth/jwks.json"
        assert "repo:io.pocketenv.sandbox" in meta["scope"].split()
        with urllib.request.urlopen(f"{d.url}/oauth/jwks.json", timeout=30) as r:
            jwks = json.loads(r.read())
        [key] = jwks["keys"]
        assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256") and key["kid"]
        assert "d" not in key  # the public part only
        # The signing key: sealed, mode 600, made once.
        kpath = os.path.join(d.data, "atproto-client-key.sealed")
        assert os.stat(kpath).st_mode & 0o777 == 0o600
        assert "PRIVATE KEY" not in open(kpath).read()
        # Sign in: the PDS fetches our metadata (through the TLS proxy
        # stand-in), PAR, token and the first refresh carry our assertion.
        pds.command("route", origin=WEB, to=d.url)
        try:
            st, started = post_json(f"{d.url}/oauth/login", {"handle": "alice.test"})
            assert st == 200, started
            assert "client_id=" + urllib.parse.quote(meta["client_id"], safe="") in \
                started["url"], started
            got = sign_in_in_browser(started["url"], alice["password"], f"{WEB}/oauth/callback",
                                     follow=True, proxy={"from": WEB, "to": d.url})
            assert "Signed in as @alice.test" in got["page"], got
            st, out = post_json(f"{d.url}/oauth/token", {"pickup": started["pickup"]})
            assert st == 200 and out["did"] == alice["did"], out
            assert f"event=atproto-session-refreshed did={alice['did']}" in d.log_text()
            # (Records written with the granular scope this client asks for:
            # test_records_created_updated_and_deleted_in_the_users_repository.)
            # Logout revokes at the authorization server with our assertion.
            st, bye = post_json_auth(f"{d.url}/oauth/logout", out["token"])
            assert st == 200, (bye, d.log_text()[-2000:])
        finally:
            pds.command("route", origin=WEB)
        # The same daemon under another URL, whose published JWKS holds a
        # key it does not sign with: sign-in fails at once, clearly.
        moved = "https://moved.pocketenv.home.arpa"
        fake.routes["/oauth/client-metadata.json"] = (200, dict(
            meta, client_id=f"{moved}/oauth/client-metadata.json", client_uri=moved,
            redirect_uris=[f"{moved}/oauth/callback"], jwks_uri=f"{moved}/oauth/jwks.json"), 0)
        fake.routes["/oauth/jwks.json"] = (200, other_jwks(), 0)
        restart_daemon(d, base + ["--atproto-public-url", moved])
        pds.command("route", origin=moved, to=fake.url)
        try:
            st, out = post_json(f"{d.url}/oauth/login", {"handle": "alice.test"})
        finally:
            pds.command("route", origin=moved)
        assert st == 401 and out["error"] == "SignInFailed", out
        assert "invalid_client" in out["message"] and "JWKS" in out["message"], out


# ---- upstream's CLI: `pocketenv login HANDLE` (apps/cli/src/cmd/login.ts) ----

class UpstreamCliListener:
    """What upstream's CLI runs during `login`: an HTTP listener on port
    6997 (express with cors(): any origin, preflight answered) whose POST
    /token {token} is the sign-in's end; it answers {"ok": 1}."""

    PORT = 6997

    def __init__(self):
        import http.server
        import socket
        import threading
        got = self.got = []

        class H(http.server.BaseHTTPRequestHandler):
            def _cors(self):
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Methods", "GET,HEAD,PUT,PATCH,POST,DELETE")
                want = self.headers.get("Access-Control-Request-Headers")
                if want:
                    self.send_header("Access-Control-Allow-Headers", want)

            def do_OPTIONS(self):
                self.send_response(204)
                self._cors()
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/token":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                got.append({"body": json.loads(body), "origin": self.headers.get("Origin")})
                out = b'{"ok":1}'
                self.send_response(200)
                self._cors()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6  # "localhost" may be ::1 or 127.0.0.1

            def server_bind(self):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                super().server_bind()

        # The port is upstream's, fixed: another run of this suite on the
        # host (CI's sanitized one, a colleague's) may hold it for a while.
        deadline = time.monotonic() + 180
        while True:
            try:
                self.server = Server(("::", self.PORT), H)
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def post_text(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def test_upstream_cli_login_gets_its_token_through_its_listener(pds, oauth_daemon):
    """Upstream's CLI, step by step as its login.ts does it: listen on
    6997, POST /login {handle, cli: true}, take the answer as the URL to
    open (it must contain "authorize"), then wait for POST /token {token}
    on its listener; the token is then its API token."""
    d, bob = oauth_daemon, pds.accounts["bob.test"]
    # What it cannot use here: a password, or a call without cli.
    st, _, body = post_text(f"{d.url}/login", {"handle": "bob.test", "password": "x"})
    assert st == 501 and json.loads(body)["error"] == "MethodNotImplemented", body
    st, _, body = post_text(f"{d.url}/login", {"handle": "bob.test"})
    assert st == 400 and "/oauth/login" in json.loads(body)["message"], body
    st, _, body = post_text(f"{d.url}/login", {"handle": "not a handle", "cli": True})
    assert st == 400 and json.loads(body)["error"] == "InvalidRequest", body
    cli = UpstreamCliListener()
    try:
        st, ctype, url = post_text(f"{d.url}/login", {"handle": "bob.test", "cli": True})
        assert st == 200 and ctype.startswith("text/plain"), (st, url)
        assert "authorize" in url and url.startswith(f"{pds.pds}/oauth/authorize?"), url
        # The browser: the PDS's page, then the daemon's callback page,
        # whose script hands the token to the CLI's listener.
        got = sign_in_in_browser(url, bob["password"], f"{d.url}/oauth/callback", follow=True,
                                 wait_text="The Pocketenv CLI has your token.")
        assert "Signed in as @bob.test" in got["page"], got
        assert len(cli.got) == 1, cli.got
        token = cli.got[0]["body"]["token"]
        assert cli.got[0]["origin"] == d.url  # sent by the daemon's own page
    finally:
        cli.close()
    assert token not in got["callback"] and token not in got["page"]
    assert token not in d.log_text()
    assert jwt_claims(token)["did"] == bob["did"]
    # What the CLI then does with it (whoami: getProfile).
    st, prof = d.call("io.pocketenv.actor.getProfile", token=token)
    assert st == 200 and (prof["did"], prof["handle"]) == (bob["did"], "bob.test"), prof


# ---- records: sandboxes in the user's repository (daemon/records.c) ----

COLLECTION = "io.pocketenv.sandbox"


def sign_in(d, pds, handle):
    """Sign handle in to daemon d through /oauth/login and the PDS's own
    page; our API token for it."""
    st, started = post_json(f"{d.url}/oauth/login", {"handle": handle})
    assert st == 200, started
    got = sign_in_in_browser(started["url"], pds.accounts[handle]["password"],
                             f"{d.url}/oauth/callback", follow=True)
    assert f"Signed in as @{handle}" in got["page"], got
    st, out = post_json(f"{d.url}/oauth/token", {"pickup": started["pickup"]})
    assert st == 200, out
    return out["token"]


def repo_record(pds, did, rkey):
    """(status, body) of com.atproto.repo.getRecord on the PDS, as anyone
    reads a public repository."""
    q = urllib.parse.urlencode({"repo": did, "collection": COLLECTION, "rkey": rkey})
    try:
        with urllib.request.urlopen(f"{pds.pds}/xrpc/com.atproto.repo.getRecord?{q}",
                                    timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def list_rkeys(pds, did):
    q = urllib.parse.urlencode({"repo": did, "collection": COLLECTION, "limit": 100})
    with urllib.request.urlopen(f"{pds.pds}/xrpc/com.atproto.repo.listRecords?{q}",
                                timeout=30) as r:
        return [rec["uri"].rsplit("/", 1)[1] for rec in json.loads(r.read())["records"]]


def record_state(d, token, sid):
    st, got = d.sandbox("getSandbox", sid, token=token)
    assert st == 200, got
    return got["sandbox"].get("record")


def wait_synced(d, token, sid, timeout=60, cid=None):
    """The sandbox's record once the daemon has written its latest state
    (and, given cid, a state other than that one)."""
    from conftest import wait_for
    return wait_for(lambda: (lambda r: r if r and r["state"] == "synced" and r.get("cid") != cid
                             else None)(record_state(d, token, sid)), timeout, "record synced")


def check_record(pds, did, rkey, **want):
    from conftest import LexiconCheck
    st, got = repo_record(pds, did, rkey)
    assert st == 200, got
    LexiconCheck.check_record(COLLECTION, got["value"])
    for k, v in want.items():
        assert got["value"].get(k) == v, (k, got["value"])
    return got


# The smallest PNG: one transparent pixel.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def password_session(pds, handle):
    """A fresh access token of handle's password session (one made before
    the PDS restarted is signed with a key that is gone)."""
    a = pds.accounts[handle]
    st, out = post_json(f"{pds.pds}/xrpc/com.atproto.server.createSession",
                        {"identifier": handle, "password": a["password"]})
    assert st == 200, out
    return out["accessJwt"]


def set_profile(pds, handle, display_name):
    """Alice's app.bsky.actor.profile/self with a display name and an
    avatar blob, written with her own password session (as Bluesky's app
    would); the blob's cid."""
    a = pds.accounts[handle]
    auth = {"Authorization": f"Bearer {password_session(pds, handle)}"}
    req = urllib.request.Request(f"{pds.pds}/xrpc/com.atproto.repo.uploadBlob", data=PNG,
                                 method="POST", headers={**auth, "Content-Type": "image/png"})
    with urllib.request.urlopen(req, timeout=30) as r:
        blob = json.loads(r.read())["blob"]
    body = {"repo": a["did"], "collection": "app.bsky.actor.profile", "rkey": "self",
            "record": {"$type": "app.bsky.actor.profile", "displayName": display_name,
                       "avatar": blob}}
    req = urllib.request.Request(f"{pds.pds}/xrpc/com.atproto.repo.putRecord",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={**auth, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
    return blob["ref"]["$link"]


@pytest.fixture(scope="module")
def alice_daemon(tmp_path_factory, pds):
    """A daemon (module-wide) with Alice signed in: (daemon, her token,
    extra serve arguments, its tmp directory for a restart)."""
    from test_daemon import serving
    tmp = tmp_path_factory.mktemp("records")
    dns = DnsTxt()
    for handle, a in pds.accounts.items():
        dns.records[f"_atproto.{handle}"] = [f"did={a['did']}"]
    extra = ["--atproto-plc", pds.plc, "--atproto-dns", dns.addr, "--atproto-insecure-http",
             "--atproto-allow-private"]
    set_profile(pds, "alice.test", "Alice Example")
    try:
        with serving(tmp, extra=extra, check_leaks=False) as d:
            token = sign_in(d, pds, "alice.test")
            d.others = [token]
            yield d, token, extra, tmp
    finally:
        dns.close()
        # Leaks go unchecked here (restarts share the data directory): end
        # what the tests left running, so no sandbox outlives the module.
        from conftest import BIN
        data = str(tmp / "data")
        ls = subprocess.run([BIN, "--data", data, "runtime", "ls", "--json"],
                            capture_output=True, text=True)
        for sb in json.loads(ls.stdout or "[]"):
            subprocess.run([BIN, "--data", data, "runtime", "rm", sb["name"]],
                           capture_output=True)


def test_records_created_updated_and_deleted_in_the_users_repository(pds, alice_daemon):
    d, token, extra, _ = alice_daemon
    did = pds.accounts["alice.test"]["did"]
    st, sb = d.call("io.pocketenv.sandbox.createSandbox",
                    body={"base": "busybox", "name": "rec-one", "description": "first",
                          "topics": ["demo"]}, token=token)
    assert st == 200, sb
    uri = sb["uri"]
    assert uri.startswith(f"at://{did}/{COLLECTION}/"), sb
    rkey = uri.rsplit("/", 1)[1]
    rec = wait_synced(d, token, sb["id"])
    assert rec["uri"] == uri
    got = check_record(pds, did, rkey, name="rec-one", description="first", topics=["demo"])
    assert got["cid"] == rec["cid"] and got["uri"] == uri
    # `pocketenv inspect` shows the record's state.
    from conftest import BIN
    env = dict(os.environ, POCKETENV_API_URL=d.url, POCKETENV_TOKEN=token)
    p = subprocess.run([BIN, "inspect", "rec-one"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["record"] == {**rec, "state": "synced"}, p.stdout
    assert got["value"]["createdAt"] == sb["createdAt"]
    # New details: the same record rewritten (swapRecord), a new cid.
    st, _ = d.call("io.pocketenv.sandbox.putPreferences", body={
        "sandboxId": sb["id"], "preferences": [{
            "$type": "io.pocketenv.sandbox.defs#sandboxDetailsPref", "description": "second"}]},
        token=token)
    assert st == 200
    rec2 = wait_synced(d, token, sb["id"], cid=rec["cid"])
    check_record(pds, did, rkey, description="second")
    # An exposed port appears in the record as upstream writes it.
    st, out = d.call("io.pocketenv.sandbox.exposePort", {"id": sb["id"]}, body={"port": 8080},
                     token=token)
    assert st == 200, out
    rec3 = wait_synced(d, token, sb["id"], cid=rec2["cid"])
    check_record(pds, did, rkey, ports=[8080])
    assert list_rkeys(pds, did).count(rkey) == 1  # rewritten, never a second record
    # A daemon that died between the PDS's answer and its own note of it
    # (the store forgot the cid; the change is due again), restarted:
    # createRecord finds the rkey taken, and the record is rewritten, not
    # doubled.
    import sqlite3
    restart_daemon(d, extra, between=lambda: sqlite3.connect(
        os.path.join(d.data, "pocketenv.db"), timeout=30, isolation_level=None).execute(
            "UPDATE atproto_records SET cid = NULL, gen = gen + 1 WHERE sandbox = ?",
            (sb["id"],)).connection.close())
    wait_synced(d, token, sb["id"], cid=None)
    assert record_state(d, token, sb["id"])["cid"] == rec3["cid"]  # the same content again
    assert list_rkeys(pds, did).count(rkey) == 1
    # Deleted with the sandbox (upstream leaves it behind).
    st, _ = d.sandbox("deleteSandbox", sb["id"], token=token)
    assert st == 200
    from conftest import wait_for
    wait_for(lambda: repo_record(pds, did, rkey)[0] == 400, 60, "record deleted")
    assert rkey not in list_rkeys(pds, did)
    # The PDS has deleted it before the daemon has its answer and logs it.
    wait_for(lambda: "event=record-deleted sandbox=" + sb["id"] in d.log_text(), 10,
             "the deletion in the daemon's log")


def test_a_local_owner_has_no_record(alice_daemon):
    d, _, _, _ = alice_daemon
    # The daemon's did:key owner never signed in with a handle: no uri, no
    # record, nothing asked of any PDS.
    st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox"})
    assert st == 200, sb
    assert "uri" not in sb
    assert record_state(d, d.token, sb["id"]) is None
    d.sandbox("deleteSandbox", sb["id"])


def restart_daemon(d, extra, between=None):
    """SIGTERM d, then the same daemon again (port, data, flags); between
    runs while no daemon runs."""
    import signal
    from conftest import BIN, wait_for
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0, d.log_text()[-3000:]
    if between:
        between()
    log = open(d.log_path, "a")
    d.proc = subprocess.Popen([BIN, "serve", "--listen", d.url[len("http://"):], "--data", d.data,
                               "--token-file", d.token_file, *extra], stderr=log)
    log.close()
    wait_for(lambda: d.healthy() or d.proc.poll() is not None, 10, "daemon /healthz")
    assert d.proc.poll() is None, d.log_text()[-3000:]


def test_records_catch_up_after_the_pds_and_the_daemon_were_down(pds, alice_daemon):
    d, token, extra, _ = alice_daemon
    did = pds.accounts["alice.test"]["did"]
    sealed_dir = os.path.join(d.data, "atproto")
    sealed = {f: open(os.path.join(sealed_dir, f)).read() for f in os.listdir(sealed_dir)}
    pds.command("stop-pds")
    try:
        # The sandbox works at once; its record waits.
        st, sb = d.call("io.pocketenv.sandbox.createSandbox",
                        body={"base": "busybox", "name": "rec-down"}, token=token)
        assert st == 200, sb
        from conftest import wait_for
        rec = wait_for(lambda: (lambda r: r if r and r["attempts"] >= 1 else None)(
            record_state(d, token, sb["id"])), 30, "a failed write")
        assert rec["state"] == "pending" and "cid" not in rec and rec.get("error"), rec
        wait_for(lambda: d.sandbox("getSandbox", sb["id"], token=token)[1]["sandbox"]["status"]
                 == "RUNNING", 60, "sandbox running")
        st, out = d.sandbox("exec", sb["id"], body={"command": "echo hi"}, token=token)
        assert st == 200 and out["stdout"] == "hi\n", out
        # A new name while the PDS is down: one more change queued, not two records.
        st, _ = d.call("io.pocketenv.sandbox.putPreferences", body={
            "sandboxId": sb["id"], "preferences": [{
                "$type": "io.pocketenv.sandbox.defs#sandboxDetailsPref", "name": "rec-down-2"}]},
            token=token)
        assert st == 200
        # The daemon restarts meanwhile: the queue is in the store.
        restart_daemon(d, extra)
        assert record_state(d, token, sb["id"])["state"] == "pending"
    finally:
        pds.command("start-pds")
    rec = wait_synced(d, token, sb["id"], timeout=90)
    rkey = sb["uri"].rsplit("/", 1)[1]
    check_record(pds, did, rkey, name="rec-down-2")
    assert list_rkeys(pds, did).count(rkey) == 1
    # The restarted daemon had no access token: it refreshed the sealed
    # session, and sealed the rotated refresh token again.
    assert "event=atproto-session-refreshed did=" + did in d.log_text()
    after = {f: open(os.path.join(sealed_dir, f)).read() for f in os.listdir(sealed_dir)}
    assert after.keys() == sealed.keys() and after != sealed
    d.sandbox("deleteSandbox", sb["id"], token=token)
    wait_for(lambda: repo_record(pds, did, rkey)[0] == 400, 60, "record deleted")


def test_profile_from_the_repository_and_whoami(pds, alice_daemon, tmp_path):
    from conftest import BIN
    d, token, _, _ = alice_daemon
    did = pds.accounts["alice.test"]["did"]
    st, prof = d.call("io.pocketenv.actor.getProfile", token=token)
    assert st == 200, prof
    assert (prof["did"], prof["handle"], prof["displayName"]) == (did, "alice.test",
                                                                  "Alice Example"), prof
    # The avatar is the blob on her own PDS.
    assert prof["avatar"].startswith(f"{pds.pds}/xrpc/com.atproto.sync.getBlob?did={did}&cid=")
    with urllib.request.urlopen(prof["avatar"], timeout=30) as r:
        assert r.read() == PNG
    env = {k: v for k, v in os.environ.items() if k != "POCKETENV_TOKEN"}
    env.update(HOME=str(tmp_path), POCKETENV_API_URL=d.url, POCKETENV_TOKEN=token, NO_COLOR="1")
    who = subprocess.run([BIN, "whoami"], capture_output=True, text=True, env=env, timeout=60)
    assert who.stdout == "You are logged in as @alice.test (Alice Example).\n", who


# ---- templates by at:// URI (lib/auth/atproto-repo.c, daemon/records.c) ----

def publish(pds, handle, record, rkey=None):
    """A record in handle's repository, written with their password
    session (as another AT Protocol app would); its (uri, cid)."""
    a = pds.accounts[handle]
    body = {"repo": a["did"], "collection": COLLECTION,
            "record": {"$type": COLLECTION, "createdAt": "2026-01-01T00:00:00.000Z", **record}}
    if rkey:
        body["rkey"] = rkey
    req = urllib.request.Request(f"{pds.pds}/xrpc/com.atproto.repo.createRecord",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization":
                                          f"Bearer {password_session(pds, handle)}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        out = json.loads(r.read())
    return out["uri"], out["cid"]


def test_get_record_refuses_garbage_slow_and_another_repositorys_record(pds, dns, fake):
    alice = pds.accounts["alice.test"]
    uri, cid = publish(pds, "alice.test", {"name": "busybox"})
    rc, got = resolve(pds, dns, uri, step="record")
    assert rc == 0 and (got["uri"], got["cid"]) == (uri, cid), got
    assert got["value"]["name"] == "busybox"
    # A DID whose document (from a directory the test controls) names a PDS
    # that answers badly.
    did = "did:plc:" + "b" * 24
    doc = {"id": did, "alsoKnownAs": [], "service": [
        {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": fake.url}]}
    fake.routes[f"/{did}"] = (200, json.dumps(doc), 0)
    rkey = "3kabcdefghijk"
    asked = f"at://{did}/{COLLECTION}/{rkey}"
    path = (f"/xrpc/com.atproto.repo.getRecord?repo={did}&collection={COLLECTION}"
            f"&rkey={rkey}")
    _, real = repo_record(pds, alice["did"], uri.rsplit("/", 1)[1])
    for body, error in [
            ("{not json", "not a record"),
            (json.dumps(real), "another record"),  # Alice's record, asked for another DID's
            (json.dumps({**real, "uri": asked, "value": {"$type": "other.thing"}}),
             "is not a io.pocketenv.sandbox"),
            (json.dumps({**real, "uri": asked, "cid": "../../x"}), "CID")]:
        fake.routes[path] = (200, body, 0)
        rc, got = resolve(pds, dns, asked, plc=fake.url, step="record")
        assert rc == 1 and got["error"] == "EREMOTE" and error in got["message"], (body, got)
    fake.routes[path] = (200, "x" * 100000, 0)
    rc, got = resolve(pds, dns, asked, plc=fake.url, step="record")
    assert rc == 1 and "larger than" in got["message"], got
    fake.routes[path] = (200, json.dumps({**real, "uri": asked}), 20)
    rc, got = resolve(pds, dns, asked, plc=fake.url, step="record")
    assert (rc, got["error"]) == (1, "ETIMEDOUT"), got
    # The same answer in time is a record.
    fake.routes[path] = (200, json.dumps({**real, "uri": asked}), 0)
    rc, got = resolve(pds, dns, asked, plc=fake.url, step="record")
    assert rc == 0 and got["uri"] == asked, got
    for bad in ["at://x", f"at://{did}/{COLLECTION}", f"at://{did}/{COLLECTION}/a/b",
                f"at://{did}/{COLLECTION}/..", f"at://{did}/nocollection/x",
                f"at://{did}/{COLLECTION}/a%2Fb"]:
        rc, got = resolve(pds, dns, bad, plc=fake.url, step="record")
        assert (rc, got["error"]) == (1, "EINVAL"), (bad, got)


def test_template_by_at_uri_resolves_through_the_record(pds, alice_daemon):
    d, token, _, _ = alice_daemon
    did = pds.accounts["alice.test"]["did"]
    # Bob publishes a template record naming a base we have, and a
    # derived one pointing at it by its strongRef.
    tpl_uri, tpl_cid = publish(pds, "bob.test", {"name": "busybox", "description": "tiny"})
    derived, derived_cid = publish(pds, "bob.test", {
        "name": "bobs-own", "base": {"uri": tpl_uri, "cid": tpl_cid}})
    for base, ref in [(tpl_uri, (tpl_uri, tpl_cid)), (derived, (derived, derived_cid))]:
        st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": base}, token=token)
        assert st == 200, sb
        from conftest import wait_for
        wait_for(lambda: d.sandbox("getSandbox", sb["id"], token=token)[1]["sandbox"]["status"]
                 == "RUNNING", 60, "sandbox running")
        st, out = d.sandbox("exec", sb["id"], body={"command": "busybox true && echo ok"},
                            token=token)
        assert st == 200 and out["stdout"] == "ok\n", out
        # Its own record refers to the template's record by uri and cid.
        wait_synced(d, token, sb["id"])
        got = check_record(pds, did, sb["uri"].rsplit("/", 1)[1])
        assert got["value"]["base"] == {"uri": ref[0], "cid": ref[1]}, got
        d.sandbox("deleteSandbox", sb["id"], token=token)
    # Records we cannot serve: a clear 400, nothing made.
    nothing, _ = publish(pds, "bob.test", {"name": "no-such-template"})
    bob = pds.accounts["bob.test"]["did"]
    for base, why in [(nothing, "names no template this daemon can build"),
                      (f"at://{bob}/{COLLECTION}/3kzzzzzzzzzzz", "not in its repository")]:
        st, out = d.call("io.pocketenv.sandbox.createSandbox", body={"base": base}, token=token)
        assert st == 400 and why in out["message"], (base, out)
    st, out = d.call("io.pocketenv.actor.getActorSandboxes", {"did": did}, token=token)
    assert st == 200 and out["total"] == 0, out


def test_private_addresses_are_refused_unless_allowed(pds, dns, tmp_path):
    # alice.test, its PLC directory and its PDS are all on loopback: with
    # the guard on, not one request leaves (the resolver's and the
    # daemon's), whatever name led there.
    rc, got = resolve(pds, dns, "alice.test", "--deny-private")
    assert rc == 1 and got["error"] == "EAUTH" and "private address" in got["message"], got
    # Whatever name leads to a private address (here through CONNECT_TO),
    # no connection is even tried: port 9 would answer "refused" otherwise.
    # (Which addresses are private: tests/unit/test-auth.c.)
    for ip in ["127.0.0.1", "127.0.0.2", "[::1]", "[::ffff:127.0.0.1]"]:
        rc, got = resolve(pds, dns, "x.test", "--deny-private", "--connect-to",
                          f"x.test:80:{ip}:9", step="handle")
        assert rc == 1 and "private address" in got["message"], (ip, got)
    # The daemon refuses by default: sign-in of a handle whose PDS is on
    # loopback answers why.
    from test_daemon import serving
    dns.records["_atproto.alice.test"] = [f"did={pds.accounts['alice.test']['did']}"]
    extra = ["--atproto-plc", pds.plc, "--atproto-dns", dns.addr, "--atproto-insecure-http"]
    with serving(tmp_path, extra=extra) as d:
        st, out = post_json(f"{d.url}/oauth/login", {"handle": "alice.test"})
        assert st == 401 and "private address" in out["message"], out


def test_web_page_sign_in_with_a_handle(pds, alice_daemon):
    d, _, _, _ = alice_daemon
    env = dict(os.environ, PE_SIGNIN=json.dumps(
        {"url": d.url, "handle": "alice.test", "password": pds.accounts["alice.test"]["password"],
         "chromium": CHROMIUM}))
    p = subprocess.run(["node", os.path.join(os.path.dirname(SIGNIN), "web-signin.mjs")],
                       capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["who"] == f"alice.test ({pds.accounts['alice.test']['did']})", got
    # No token and no pickup ever travels in a URL.
    assert not [u for u in got["urls"] if "pickup" in u or "token=" in u], got["urls"]


# ---- access tokens refreshed before they expire; a dead session ----

LIFE = 10  # seconds of the PDS's access tokens in this test (1 hour by default)


def test_tokens_refreshed_before_expiry_and_a_revoked_session_asks_to_sign_in_again(
        pds, alice_daemon):
    import re
    import time
    from conftest import wait_for
    d, token, extra, _ = alice_daemon
    did = pds.accounts["alice.test"]["did"]
    sealed_dir = os.path.join(d.data, "atproto")

    def refreshes(since):
        return re.findall(rf"event=atproto-session-refreshed did={did} why=(\w+)",
                          d.log_text()[since:])

    def describe(sid, text):
        st, _ = d.call("io.pocketenv.sandbox.putPreferences", body={
            "sandboxId": sid, "preferences": [{
                "$type": "io.pocketenv.sandbox.defs#sandboxDetailsPref", "description": text}]},
            token=token)
        assert st == 200

    pds.command("token-max-age", seconds=LIFE)
    try:
        # The restarted daemon restores Alice's session: a refresh, which
        # now brings a short-lived access token.
        restart_daemon(d, extra)
        mark = len(d.log_text())
        st, sb = d.call("io.pocketenv.sandbox.createSandbox",
                        body={"base": "busybox", "name": "short-life"}, token=token)
        assert st == 200, sb
        rec = wait_synced(d, token, sb["id"])
        assert refreshes(mark) == ["restored"], d.log_text()[mark:]
        life = re.search(r"why=restored expires_in=(\d+)", d.log_text()[mark:])
        assert life and LIFE - 2 <= int(life[1]) <= LIFE, d.log_text()[mark:]
        expiry = time.monotonic() + LIFE  # the token was issued before now
        # While it is good, the token is used as it is: no refresh per call.
        describe(sb["id"], "fresh")
        rec = wait_synced(d, token, sb["id"], cid=rec["cid"])
        assert time.monotonic() < expiry - LIFE / 4, "too slow to tell (machine overloaded?)"
        assert refreshes(mark) == ["restored"]
        # Past its expiry: the daemon refreshes before writing; the PDS
        # never has to refuse it.
        wait_for(lambda: time.monotonic() > expiry + 1, LIFE + 5, "the access token to expire")
        describe(sb["id"], "after expiry")
        rec = wait_synced(d, token, sb["id"], cid=rec["cid"])
        check_record(pds, did, rec["uri"].rsplit("/", 1)[1], description="after expiry")
        assert refreshes(mark) == ["restored", "expiring"], d.log_text()[mark:]
        expiry = time.monotonic() + LIFE
        # Her session ends at the PDS (she removed the app there): past the
        # access token's expiry the refresh is refused, the daemon forgets
        # the session and says to sign in again, and asks the PDS no more.
        assert pds.command("revoke-tokens", did=did)["revoked"] >= 1
        wait_for(lambda: time.monotonic() > expiry + 1, LIFE + 5, "the access token to expire")
        describe(sb["id"], "revoked")
        got = wait_for(lambda: (record_state(d, token, sb["id"]).get("error") or "") and
                       record_state(d, token, sb["id"]), 30, "the write to fail")
        assert got["state"] == "pending" and "sign in again" in got["error"], got
        assert os.listdir(sealed_dir) == []
        ended = f"event=atproto-session-ended did={did}"
        assert d.log_text().count(ended) == 1
        wait_for(lambda: record_state(d, token, sb["id"])["attempts"] >= 3, 30,
                 "the writer to try again")
        got = record_state(d, token, sb["id"])
        assert "sign in again" in got["error"], got
        assert d.log_text().count(ended) == 1  # no refresh tried again: no loop
        assert refreshes(mark) == ["restored", "expiring"]
    finally:
        pds.command("token-max-age", seconds=3600)
