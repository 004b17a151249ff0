"""The kubernetes adapter's credentials, end to end: kubeconfigs (a token,
a client certificate, the JSON form given as the key), a pod's service
account, and bad ones, against the Kubernetes double serving HTTPS with a
CA of the test's own (so the CA, the client certificate and the token
each have to be right for a call to go through). Loopback only; the
conformance suite (test_provider_conformance.py) covers the rest.
"""
import base64
import json
import os
import ssl
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tests.doubles import double_class  # noqa: E402

BUILD = os.environ.get("PE_BUILD", os.path.join(ROOT, "build"))
DRIVE = os.path.join(BUILD, "tests", "provider-drive")
TOKEN = "k8s-token-0123456789abcdef-secret"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def issue(pki, name, ca, ext):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=pki)
    with open(os.path.join(pki, f"{name}.ext"), "w") as f:
        f.write(ext + "\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=pki)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN={ca}", "-days", "2", cwd=d)
    issue(d, "server", "ca", "subjectAltName=IP:127.0.0.1")
    issue(d, "client", "ca", "extendedKeyUsage=clientAuth")
    return d


@pytest.fixture(scope="module")
def double(pki):
    if not os.access(DRIVE, os.X_OK):
        pytest.fail(f"{DRIVE} is not built (ninja -C build)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(pki, "server.crt"), os.path.join(pki, "server.key"))
    ctx.load_verify_locations(os.path.join(pki, "ca.crt"))
    ctx.verify_mode = ssl.CERT_OPTIONAL  # a client certificate, or the token
    d = double_class("kubernetes")(key=TOKEN, tls=ctx)
    d.start()
    yield d
    d.stop()


def b64file(path):
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def kubeconfig(server, user, cluster_extra=None, namespace="pe-tests"):
    cluster = {"server": server, **(cluster_extra or {})}
    return {"apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "c1", "cluster": cluster}],
            "users": [{"name": "u1", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "c1", "user": "u1", "namespace": namespace}}]}


def yaml_text(cfg):
    """The kubeconfig as YAML (flow style is YAML too, but write it the way
    kubectl does, block style, so the block parser is what is tested)."""
    def emit(v, indent):
        pad = " " * indent
        if isinstance(v, dict):
            lines = []
            for k, x in v.items():
                if isinstance(x, (dict, list)):
                    lines.append(f"{pad}{k}:")
                    lines.append(emit(x, indent + 2))
                else:
                    lines.append(f"{pad}{k}: {json.dumps(x)}")
            return "\n".join(lines)
        lines = []
        for x in v:
            body = emit(x, indent + 2).lstrip() if isinstance(x, (dict, list)) else json.dumps(x)
            lines.append(f"{pad}- {body}")
        return "\n".join(lines)
    return emit(cfg, 0) + "\n"


def drive(env, *args):
    r = subprocess.run([DRIVE, "kubernetes", *args], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def clean_env(tmp_path, **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PE_PROVIDER_", "KUBE"))}
    env.pop("POCKETENV_K8S_SERVICEACCOUNT_DIR", None)
    env.update(HOME=str(tmp_path), PE_PROVIDER_TIMEOUT_MS="5000", PE_PROVIDER_CREATE_TIMEOUT_MS="10000")
    env.update(kw)
    return env


def roundtrip(d, env, ns="pe-tests"):
    """create, exec, remove: the whole path works with these credentials."""
    sid = drive(env, "create", "cred")["id"]
    assert d.sandboxes[sid].ns == ns
    r = drive(env, "exec", sid, "sh", "-c", "echo through; exit 2")
    assert (r["exit_code"], r["stdout"]) == (2, "through\n")
    assert drive(env, "start", sid) == {}  # started already: its Pod is there (409), which is what was asked
    assert drive(env, "remove", sid) == {}
    assert sid not in d.sandboxes


def test_kubeconfig_with_a_token_and_the_cluster_ca(double, pki, tmp_path):
    cfg = kubeconfig(double.url, {"token": TOKEN},
                     {"certificate-authority-data": b64file(os.path.join(pki, "ca.crt"))})
    path = tmp_path / "config"
    path.write_text(yaml_text(cfg))
    before = len(double.requests)
    roundtrip(double, clean_env(tmp_path, KUBECONFIG=str(path)))
    mine = double.requests[before:]
    assert mine and all(r["authorized"] for r in mine)
    # the same file trusting another CA: the server is refused, clearly
    cfg["clusters"][0]["cluster"]["certificate-authority-data"] = b64file(os.path.join(pki, "other-ca.crt"))
    path.write_text(yaml_text(cfg))
    err = drive(clean_env(tmp_path, KUBECONFIG=str(path)), "create", "x")
    assert err["error"] == "EREMOTE" and err["message"].startswith("kubernetes") and TOKEN not in err["message"]


def test_kubeconfig_with_a_client_certificate_in_files(double, pki, tmp_path):
    """Files named relative to the kubeconfig; no token: the certificate
    alone is the credential (no Authorization header is sent)."""
    for name in ("client.crt", "client.key", "ca.crt"):
        (tmp_path / name).write_bytes(open(os.path.join(pki, name), "rb").read())
    cfg = kubeconfig(double.url, {"client-certificate": "client.crt", "client-key": "client.key"},
                     {"certificate-authority": "ca.crt"})
    (tmp_path / "kc").mkdir()
    path = tmp_path / "kc" / "config"
    for name in ("client.crt", "client.key", "ca.crt"):
        os.rename(tmp_path / name, tmp_path / "kc" / name)
    path.write_text(yaml_text(cfg))
    before = len(double.requests)
    roundtrip(double, clean_env(tmp_path, KUBECONFIG=str(path)))
    assert all(r["authorized"] for r in double.requests[before:])
    # without the certificate the same server says 401, which names the provider
    cfg["users"][0]["user"] = {"token": "not-the-token"}
    path.write_text(yaml_text(cfg))
    err = drive(clean_env(tmp_path, KUBECONFIG=str(path)), "create", "x")
    assert err["error"] == "EAUTH" and err["message"].startswith("kubernetes rejected")


def test_kubeconfig_json_given_as_the_key(double, pki, tmp_path):
    cfg = kubeconfig(double.url, {"token": TOKEN},
                     {"certificate-authority-data": b64file(os.path.join(pki, "ca.crt"))}, namespace="from-key")
    roundtrip(double, clean_env(tmp_path, PE_PROVIDER_KEY=json.dumps(cfg, indent=1)), ns="from-key")


BAD = {
    "not yaml": f"users:\n- name: u1\n  user:\n    token: {TOKEN}\n  - [unclosed\n",
    "no current-context": json.dumps({"users": [{"name": "u1", "user": {"token": TOKEN}}]}),
    "unknown context": None,  # made below
    "program credential": None,
    "certificate without key": None,
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_kubeconfig_is_a_clear_error_without_the_token(double, pki, tmp_path, case):
    base = kubeconfig(double.url, {"token": TOKEN})
    text = BAD[case]
    if case == "unknown context":
        base["current-context"] = "nope"
    elif case == "program credential":
        base["users"][0]["user"] = {"token": TOKEN, "exec": {"command": "aws", "args": ["eks", "get-token"]}}
    elif case == "certificate without key":
        base["users"][0]["user"] = {"client-certificate-data": b64file(os.path.join(pki, "client.crt"))}
    if text is None:
        text = yaml_text(base)
    path = tmp_path / "config"
    path.write_text(text)
    before = len(double.requests)
    err = drive(clean_env(tmp_path, KUBECONFIG=str(path)), "create", "x")
    want = {"not yaml": "is not YAML", "no current-context": "no current-context",
            "unknown context": "no context named 'nope'", "program credential": "from a program",
            "certificate without key": "without its key"}[case]
    assert err["error"] == "EINVAL" and err["message"].startswith("kubernetes: ") and want in err["message"], err
    assert TOKEN not in err["message"] and str(path) in err["message"]
    assert len(double.requests) == before  # nothing was sent


def test_kubeconfig_given_as_the_key_names_no_host_file(double, tmp_path):
    """A kubeconfig that comes as the key (from an account's owner, through
    the daemon) must not make this host read its files."""
    for user, cluster, field in (({"tokenFile": "/etc/hostname"}, {}, "tokenFile"),
                                 ({"token": TOKEN}, {"certificate-authority": "/etc/hostname"}, "certificate-authority"),
                                 ({"client-certificate": "/etc/hostname", "client-key": "/etc/hostname"}, {},
                                  "client-certificate")):
        before = len(double.requests)
        err = drive(clean_env(tmp_path, PE_PROVIDER_KEY=json.dumps(kubeconfig(double.url, user, cluster))),
                    "create", "x")
        assert err["error"] == "EINVAL" and f"names a file ({field})" in err["message"], err
        assert TOKEN not in err["message"] and len(double.requests) == before


def test_missing_kubeconfig_and_no_credentials(tmp_path):
    err = drive(clean_env(tmp_path, KUBECONFIG=str(tmp_path / "absent")), "create", "x")
    assert err["error"] == "EINVAL" and str(tmp_path / "absent") in err["message"]
    err = drive(clean_env(tmp_path, POCKETENV_K8S_SERVICEACCOUNT_DIR=str(tmp_path / "no-sa")), "create", "x")
    assert err == {"error": "EINVAL", "message": "kubernetes: no credentials: give a token or a kubeconfig "
                   "as the key, set KUBECONFIG, or run in a pod with a service account"}


def test_in_cluster_service_account(double, pki, tmp_path):
    """A pod's service account: token, ca.crt and namespace from its
    directory, the server from KUBERNETES_SERVICE_HOST/PORT."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(TOKEN + "\n")
    (sa / "namespace").write_text("team-a")
    (sa / "ca.crt").write_bytes(open(os.path.join(pki, "ca.crt"), "rb").read())
    port = double.url.rsplit(":", 1)[1]
    env = clean_env(tmp_path, POCKETENV_K8S_SERVICEACCOUNT_DIR=str(sa), KUBERNETES_SERVICE_HOST="127.0.0.1",
                    KUBERNETES_SERVICE_PORT=port)
    roundtrip(double, env, ns="team-a")
    (sa / "token").write_text("stale-token\n")
    err = drive(env, "create", "x")
    assert err["error"] == "EAUTH" and "stale-token" not in err["message"]


def test_agent_sandbox_crd_where_the_cluster_serves_it(tmp_path):
    """Where agents.x-k8s.io is served, a sandbox is a Sandbox whose
    controller runs its Pod: create makes the Sandbox (and no Pod of its
    own), stop and start set its replicas (the Sandbox stays), remove
    deletes it. Without the group (the conformance suite's double) the
    same calls make plain Pods."""
    d = double_class("kubernetes")(agent_sandbox=True)
    d.start()
    try:
        env = clean_env(tmp_path, PE_PROVIDER_URL=d.url, PE_PROVIDER_KEY=d.key)
        sid = drive(env, "create", "crd", "GREETING=from the record")["id"]
        assert sid.startswith("ps-crd-") and ("default", sid) in d.agent_sandboxes
        assert d.seen("sandbox.create") and not d.seen("create")  # the controller made the Pod
        sbx = d.agent_sandboxes[("default", sid)]
        assert sbx["apiVersion"] == "agents.x-k8s.io/v1alpha1" and sbx["spec"]["replicas"] == 1
        r = drive(env, "exec", sid, "printenv", "GREETING")
        assert (r["exit_code"], r["stdout"]) == (0, "from the record\n")
        drive(env, "write", sid, "/workspace/a.txt", "hello")
        assert drive(env, "read", sid, "/workspace/a.txt")["data"] == "hello"
        assert drive(env, "stop", sid) == {}
        assert sbx["spec"]["replicas"] == 0 and sid not in d.sandboxes
        assert drive(env, "status", sid)["state"] == "stopped"
        assert drive(env, "start", sid) == {}
        assert sbx["spec"]["replicas"] == 1 and drive(env, "status", sid)["state"] == "running"
        assert [r["method"] for r in d.seen("sandbox.patch")] == ["PATCH", "PATCH"]
        assert drive(env, "remove", sid) == {}
        assert d.agent_sandboxes == {} and d.sandboxes == {} and d.secrets == {}
        err = drive(env, "status", sid)
        assert err["error"] == "ENOENT"
    finally:
        d.stop()


# ---- through the daemon (serve --provider-config with a kubernetes entry) ----

SB = "io.pocketenv.sandbox."


@pytest.fixture(scope="module")
def kd(double, pki, tmp_path_factory):
    """One daemon for the module whose operator configured the TLS double
    as its cluster (a kubeconfig file with the token and the CA). The
    daemon's own environment points KUBECONFIG and HOME's ~/.kube/config at
    another API server (a second double): nothing a user sends may make it
    use those."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_daemon import serving
    from test_resources import ResDaemon, banner_key
    other = double_class("kubernetes")(key="other-cluster-token-0123456789")
    other.start()
    tmp = tmp_path_factory.mktemp("k8sd")
    kc = tmp / "cluster.yaml"
    kc.write_text(yaml_text(kubeconfig(double.url, {"token": TOKEN},
                                       {"certificate-authority-data": b64file(os.path.join(pki, "ca.crt"))},
                                       namespace="pe-daemon")))
    home = tmp / "home"
    (home / ".kube").mkdir(parents=True)
    host_kc = yaml_text(kubeconfig(other.url, {"token": other.key}, namespace="host"))
    (home / ".kube" / "config").write_text(host_kc)
    (tmp / "host-kubeconfig").write_text(host_kc)
    conf = tmp / "providers.json"
    conf.write_text(json.dumps({"kubernetes": {"kubeconfig": str(kc), "timeoutMs": 5000,
                                               "createTimeoutMs": 15000}}))
    os.chmod(conf, 0o600)
    env = {"KUBECONFIG": str(tmp / "host-kubeconfig"), "HOME": str(home)}
    try:
        with serving(tmp, ResDaemon, ["--rate-limit", "0", "--provider-config", str(conf)], env=env) as d:
            d.public_key = banner_key(d)
            d.double, d.other = double, other
            yield d
    finally:
        other.stop()


def k8s_create(d, name, **extra):
    st, sb = d.call(SB + "createSandbox", body={"base": "busybox", "name": name, "provider": "kubernetes",
                                                **extra}, timeout=60)
    assert st == 200, sb
    assert (sb["provider"], sb["backend"], sb["status"]) == ("kubernetes", "kubernetes", "RUNNING"), sb
    return sb


def test_daemon_lifecycle_on_kubernetes(kd):
    """createSandbox with provider kubernetes → exec with its exit code and
    environment → a file resource → stop (the Pod goes, the record stays)
    → start → delete, each reaching the API server with the operator's
    credential."""
    d, dbl = kd, kd.double
    before = len(dbl.requests)
    sb = k8s_create(d, "k8s-life", envs=[{"name": "GREETING", "value": "hello pod"}],
                    secrets=[{"name": "API_TOKEN", "value": d.seal("s3cret-k8s")}])
    rid = sb["remoteId"]
    assert rid in dbl.sandboxes and dbl.sandboxes[rid].ns == "pe-daemon"
    out = d.sh(sb["id"], "echo out; echo err >&2; exit 3")
    assert (out["stdout"], out["stderr"], out["exitCode"]) == ("out\n", "err\n", 3), out
    assert d.sh(sb["id"], "printenv GREETING; printenv API_TOKEN")["stdout"] == "hello pod\ns3cret-k8s\n"
    st, o = d.call("io.pocketenv.file.addFile", body={"file": {
        "sandboxId": sb["id"], "path": "/opt/app/conf.json", "content": d.seal('{"k": 8}\n')}})
    assert st == 200, o
    assert d.sh(sb["id"], "cat /opt/app/conf.json")["stdout"] == '{"k": 8}\n'

    assert d.sandbox("stopSandbox", sb["id"])[0] == 200
    assert d.wait_status(sb["id"], ["STOPPED"])
    assert rid not in dbl.sandboxes and ("pe-daemon", rid) in dbl.secrets  # the record stays
    st, o = d.sandbox("startSandbox", sb["id"])
    assert st == 200, o
    d.wait_status(sb["id"], ["RUNNING"])
    # the Pod is new; the file resource went in again at start
    assert d.sh(sb["id"], "cat /opt/app/conf.json; printenv GREETING")["stdout"] == '{"k": 8}\nhello pod\n'
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
    assert rid not in dbl.sandboxes and not [k for k in dbl.secrets if k[1] == rid]
    mine = dbl.requests[before:]
    assert mine and all(r["authorized"] for r in mine)
    assert kd.other.requests == []
    assert TOKEN not in d.log_text() and "s3cret-k8s" not in d.log_text()


def test_daemon_terminal_streaming_exec_and_cp_on_kubernetes(kd):
    """The terminal (WebSocket and SSE), /exec/:id/ws and cp between two
    Pods (pushDirectory, pullDirectory), through the exec subresource."""
    import urllib.request
    from test_exec_stream import collect
    from wsclient import SSE, WS
    d = kd
    a, b = k8s_create(d, "k8s-term"), k8s_create(d, "k8s-cp-to")
    port = int(d.url.rsplit(":", 1)[1])
    ws = WS(port, f"/tty/{a['id']}/ws?sessionId=t1&cols=100&rows=30&token={d.token}")
    assert ws.status == 101, ws.head
    ws.send("echo pod-$((6*7))\n")
    ws.read_until("pod-42")
    sse = SSE(port, f"/tty/{a['id']}/stream?sessionId=t2", {"Authorization": f"Bearer {d.token}"})
    assert sse.status == 200, sse.head
    req = urllib.request.Request(f"{d.url}/tty/{a['id']}/input?sessionId=t2", data=b"echo via-$((1+1))-sse\n",
                                 method="POST", headers={"Authorization": f"Bearer {d.token}"})
    with urllib.request.urlopen(req, timeout=15) as r:
        assert r.status == 204
    sse.read_output_until("via-2-sse")
    sse.close()
    ws.send("exit\n")
    ws.wait_close()
    ws.close()

    x = WS(port, f"/exec/{a['id']}/ws", headers={"Authorization": f"Bearer {d.token}"})
    assert x.status == 101, x.head
    x.send(json.dumps({"argv": ["sh", "-c", "cat; echo oops >&2; exit 7"]}))
    out, err, code, close = collect(x, stdin=b"hello\n")
    assert (out, err, code, close) == (b"hello\n", b"oops\n", 7, 1000)

    assert d.sh(a["id"], "mkdir -p /work/sub; echo one > /work/a.txt; echo two > /work/sub/b.txt")["exitCode"] == 0
    st, o = d.call(SB + "pushDirectory", body={"sandboxId": a["id"], "directoryPath": "/work"})
    assert st == 200, o
    st, o = d.call(SB + "pullDirectory", body={"sandboxId": b["id"], "uuid": o["uuid"], "directoryPath": "/dest"})
    assert st == 200, o
    assert d.sh(b["id"], "cat /dest/a.txt /dest/sub/b.txt")["stdout"] == "one\ntwo\n"
    for sb in (a, b):
        assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
    assert kd.other.requests == []


def test_daemon_preview_through_port_forward(kd):
    """exposePort on a kubernetes sandbox: our preview URL reaches a real
    server in the Pod through the API server's portforward subresource
    (the operator's credential, which no client sees); private to its
    owner (another user's token: as missing; none: 401), the share URL
    opens it, and unexposePort closes it."""
    from test_ports import get
    d, dbl = kd, kd.double
    d.port = int(d.url.rsplit(":", 1)[1])
    sb = k8s_create(d, "k8s-web")
    ip = dbl.sandboxes[sb["remoteId"]].ip
    out = d.sh(sb["id"], f"mkdir -p /www && echo from-pod-$((6*7)) > /www/index.html && httpd -p {ip}:8080 -h /www")
    assert out["exitCode"] == 0, out
    st, o = d.call(SB + "exposePort", {"id": sb["id"]}, body={"port": 8080})
    assert st == 200, o
    assert o["previewUrl"].startswith("http://8080-k8s-web-") and o["previewUrl"].endswith(f".localhost:{d.port}/")
    assert TOKEN not in json.dumps(o) and "portforward" not in json.dumps(o) and "shareUrl" in o
    host = o["previewUrl"].split("//", 1)[1].rstrip("/")
    before = len(dbl.forwards)
    st, h, body = get(d, "/index.html", host=host, token=d.token)
    assert (st, body) == (200, b"from-pod-42\n"), (st, h, body)
    fwd = dbl.forwards[before:]
    assert [(f["pod"], f["port"], f["protocol"]) for f in fwd] == [(sb["remoteId"], 8080, "v4.channel.k8s.io")]
    seen = dbl.seen("portforward")
    assert seen and all(r["authorized"] for r in seen)
    # the path form and the share URL go the same way
    st, _, body = get(d, f"/p/{sb['id']}/8080/index.html", token=d.token)
    assert (st, body) == (200, b"from-pod-42\n")
    share = o["shareUrl"].split(host, 1)[1]
    assert get(d, share.replace("/?", "/index.html?"), host=host)[::2] == (200, b"from-pod-42\n")
    # private: nobody else
    other = d.token_for("did:key:z6MkK8sPreviewThief")
    assert get(d, "/index.html", host=host, token=other)[0] == 404
    assert get(d, "/index.html", host=host)[0] == 401
    assert len(dbl.forwards) == before + 3, "a refused caller still reached the Pod"
    assert d.call(SB + "getExposedPorts", {"id": sb["id"]}, token=other)[0] == 404
    st, o2 = d.call(SB + "getExposedPorts", {"id": sb["id"]})
    assert st == 200 and [(p["port"], p["previewUrl"]) for p in o2["ports"]] == [(8080, o["previewUrl"])]
    # a port nothing listens on in the Pod: a clean 502
    assert d.call(SB + "exposePort", {"id": sb["id"]}, body={"port": 8081})[0] == 200
    st, _, body = get(d, "/", host=host.replace("8080-", "8081-", 1), token=d.token)
    assert st == 502 and b"UpstreamFailure" in body, body
    # unexposePort closes it at once
    assert d.call(SB + "unexposePort", {"id": sb["id"]}, body={"port": 8080})[0] == 200
    assert get(d, "/index.html", host=host, token=d.token)[0] == 404
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
    assert TOKEN not in d.log_text()


def test_a_user_cannot_choose_the_cluster(kd):
    """Whatever a user sends (a kubeconfig or a token in the create, in
    putPreferences), the daemon talks only to the operator's API server
    with the operator's credential: never the host's KUBECONFIG or
    ~/.kube/config (both name another server here), never one the user
    names."""
    d, other = kd, kd.other
    theirs = json.dumps(kubeconfig(other.url, {"token": other.key}))
    url = other.url
    sb = k8s_create(d, "k8s-choose", kubeconfig=d.seal(theirs), apiKey=d.seal(other.key), url=url,
                    apiUrl=url, kubernetesApiKey=d.seal(theirs), providerOptions={"server": url})
    st, o = d.call(SB + "putPreferences", body={"sandboxId": sb["id"], "preferences": [
        {"$type": "io.pocketenv.sandbox.defs#sandboxProviderPref", "name": "kubernetes",
         "apiKey": d.seal(theirs)}]})
    assert st == 400 and "must be a provider" in o["message"], o  # no user credential for kubernetes
    assert d.sh(sb["id"], "echo still-ours")["stdout"] == "still-ours\n"
    assert sb["remoteId"] in d.double.sandboxes
    assert d.sandbox("deleteSandbox", sb["id"])[0] == 200
    assert other.requests == [], "the daemon called an API server a user or the host's files named"


def test_kubernetes_entry_of_the_provider_config_is_checked(tmp_path):
    """kubernetes needs the operator's kubeconfig (absolute, readable) or
    key: without one the daemon would have nothing but the host's own
    credentials, which it never uses. And it is off unless configured."""
    from conftest import BIN
    ok = tmp_path / "kc.yaml"
    ok.write_text(yaml_text(kubeconfig("https://127.0.0.1:1", {"token": TOKEN})))
    cases = [({"kubernetes": {"url": "https://127.0.0.1:1"}}, "kubernetes needs a kubeconfig or a key"),
             ({"kubernetes": {"kubeconfig": "kc.yaml"}}, "kubeconfig must be an absolute path"),
             ({"kubernetes": {"kubeconfig": str(tmp_path / "absent")}}, str(tmp_path / "absent")),
             ({"daytona": {"kubeconfig": str(ok)}}, "only kubernetes takes one")]
    for conf, want in cases:
        path = tmp_path / "p.json"
        path.write_text(json.dumps(conf))
        os.chmod(path, 0o600)
        r = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:1", "--data", str(tmp_path / "data"),
                            "--provider-config", str(path)], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and want in r.stderr, (conf, r.stderr)
        assert TOKEN not in r.stderr
    r = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:1", "--data", str(tmp_path / "data"),
                        "--provider", "kubernetes=local"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "cannot be served locally" in r.stderr, r.stderr


def test_kubernetes_is_off_without_a_cluster(tmp_path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_daemon import serving
    from test_resources import ResDaemon
    with serving(tmp_path, ResDaemon, ["--rate-limit", "0"]) as d:
        st, o = d.call(SB + "createSandbox", body={"base": "busybox", "name": "k8s-off", "provider": "kubernetes"})
        assert st == 400 and o["error"] == "ProviderNotAvailable" and "kubernetes" in o["message"], o


def test_claims_from_a_warm_pool_where_the_extensions_are_served(tmp_path):
    """Where extensions.agents.x-k8s.io is served, a create makes (once)
    the SandboxTemplate of its image, named pe-<image>-<hash>, and a
    SandboxClaim of it, waits for the claim to be bound, and runs in the
    bound Sandbox's Pod: a warm one when the operator keeps a
    SandboxWarmPool of that template. The warm Pod started without the
    sandbox's variables: every exec gets them. stop/start are the bound
    Sandbox's replicas; remove deletes the claim (and so the Sandbox) and
    leaves the template to the next create."""
    d = double_class("kubernetes")(extensions=True)
    d.start()
    try:
        env = clean_env(tmp_path, PE_PROVIDER_URL=d.url, PE_PROVIDER_KEY=d.key)
        first = drive(env, "create", "cold")["id"]
        assert first.startswith("pc-cold-") and ("default", first) in d.claims
        [(tns, tpl)] = list(d.templates)
        assert tpl.startswith("pe-debian-bookworm-slim-") and len(tpl) == len("pe-debian-bookworm-slim-") + 8
        assert d.bindings == [(first, first, "cold")]  # no pool yet: a fresh Sandbox
        # the operator keeps two warm Sandboxes of that template
        d.pools[("default", "pool-a")] = {"metadata": {"name": "pool-a", "namespace": "default"},
                                          "spec": {"replicas": 2, "sandboxTemplateRef": {"name": tpl}}}
        d.call(d.fill_pools, "default")
        warm = list(d.warm[("default", "pool-a")])
        sid = drive(env, "create", "warm", "GREETING=from the record")["id"]
        assert sid.startswith("pc-warm-") and len(d.templates) == 1
        assert d.bindings[-1] == (sid, warm[0], "warm")
        assert len(d.warm[("default", "pool-a")]) == 2  # filled again
        assert [r["route"] for r in d.requests].count("template.create") == 2  # the second was a 409
        r = drive(env, "exec", sid, "printenv", "GREETING")
        assert (r["exit_code"], r["stdout"]) == (0, "from the record\n")
        assert d.sandboxes[warm[0]].env.get("GREETING") is None  # not in the Pod: at each exec
        drive(env, "write", sid, "/workspace/a.txt", "hello")
        assert drive(env, "read", sid, "/workspace/a.txt")["data"] == "hello"
        assert "/workspace/a.txt" in d.sandboxes[warm[0]].fs.snapshot()
        assert drive(env, "stop", sid) == {}
        assert d.agent_sandboxes[("default", warm[0])]["spec"]["replicas"] == 0 and warm[0] not in d.sandboxes
        assert drive(env, "status", sid)["state"] == "stopped"
        assert drive(env, "start", sid) == {}
        assert drive(env, "status", sid)["state"] == "running" and warm[0] in d.sandboxes
        for x in (sid, first):
            assert drive(env, "remove", x) == {}
        assert d.claims == {} and ("default", warm[0]) not in d.agent_sandboxes and warm[0] not in d.sandboxes
        assert not [k for k in d.secrets if k[1] in (sid, first)]
        assert list(d.templates) == [(tns, tpl)]
        assert drive(env, "status", sid)["error"] == "ENOENT"
    finally:
        d.stop()


def test_without_the_extensions_no_claim_is_made(tmp_path):
    """The fallbacks: agents.x-k8s.io alone makes a Sandbox; no group at
    all makes a Pod. Neither asks for the extensions' resources."""
    for kw, prefix in (({"agent_sandbox": True}, "ps-"), ({}, "pe-")):
        d = double_class("kubernetes")(**kw)
        d.start()
        try:
            env = clean_env(tmp_path, PE_PROVIDER_URL=d.url, PE_PROVIDER_KEY=d.key)
            sid = drive(env, "create", "plain")["id"]
            assert sid.startswith(prefix + "plain-"), sid
            assert drive(env, "exec", sid, "echo", "ok")["stdout"] == "ok\n"
            assert drive(env, "remove", sid) == {}
            assert not any("claim" in r["route"] or "template" in r["route"] for r in d.requests)
        finally:
            d.stop()
