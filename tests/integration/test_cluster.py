"""Many daemons as one service (issue 22, docs/cluster.md).

One PostgreSQL server (Debian's, Unix socket only, as test_daemon_postgres)
and three daemons, a, b and c, each in a network namespace of its own that
the module makes: a bridge in a hub namespace, a veth from each node's
namespace to it, and one from this (the test's) namespace, all in a /24
that only these namespaces use. Each daemon has its own data directory;
they share the store, the cluster key and DATA/keys (one service, one
token key). The module reuses the three daemons throughout; the test that
kills c runs last.
"""
import base64
import glob
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import BIN, wait_for
from test_daemon import Daemon
from test_daemon_postgres import PG_BIN, pg  # noqa: F401 (module fixture)
from test_exec_stream import collect
from test_hot_paths import metric
from test_keys import keygen
from test_resources import banner_key, seal
from test_snapshots_api import BTRFS_WAIT_S, snapshot_layers
from wsclient import SSE, WS

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.doubles import start as start_double  # noqa: E402

LEASE = 2.0
TAG = f"{os.getpid() % 10000}"
SUBNET = f"10.231.{os.getpid() % 250}"
HUB = f"pe-cl-hub-{TAG}"


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Node:
    def __init__(self, name, index, top, store, key_file, providers):
        self.name = name
        self.ns = f"pe-cl-{name}-{TAG}"
        self.addr = f"{SUBNET}.{index}"
        self.top = top
        self.data = os.path.join(top, name, "data")
        os.makedirs(os.path.dirname(self.data))
        self.store = store
        self.key_file = key_file
        self.providers = providers
        self.d = Daemon(self.data, 8789, os.path.join(top, name, "token.json"))
        self.d.url = f"http://{self.addr}:8789"
        self.log_path = os.path.join(top, name, "daemon.log")
        subprocess.run([BIN, "--data", self.data, "image", "build", "busybox"], check=True,
                       capture_output=True, text=True)

    def start(self):
        self.log = open(self.log_path, "a")
        # nsenter, not `ip netns exec`: that also mounts a sysfs of its own,
        # which hides the cgroup2 mount the runtime needs.
        self.d.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns}", BIN, "serve", "--listen", f"{self.addr}:8789",
             "--data", self.data, "--token-file", self.d.token_file, "--rate-limit", "0",
             "--sandbox-net", "nat", "--store", self.store, "--cluster-key-file",
             self.key_file, "--node-name", self.name, "--node-lease", str(LEASE),
             "--provider-config", self.providers],
            stderr=self.log)
        wait_for(lambda: self.d.healthy() or self.d.proc.poll() is not None, 20, "/healthz")
        assert self.d.proc.poll() is None, self.log_text()
        with open(self.d.token_file) as f:
            self.d.token = json.load(f)["token"]
        return self.d

    def log_text(self):
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def kill9(self):
        self.d.proc.send_signal(signal.SIGKILL)
        self.d.proc.wait(10)

    def stop(self):
        self.d.proc.send_signal(signal.SIGTERM)
        return self.d.proc.wait(30)

    def node_id(self):
        with open(os.path.join(self.data, "node-id")) as f:
            return f.read().strip()

    def runtime_names(self):
        p = subprocess.run([BIN, "--data", self.data, "runtime", "ls", "--json"],
                           capture_output=True, text=True, check=True)
        return {s["name"] for s in json.loads(p.stdout)}


def make_network(names):
    ip("netns", "add", HUB)
    ip("-n", HUB, "link", "set", "lo", "up")
    ip("-n", HUB, "link", "add", "br0", "type", "bridge")
    ip("-n", HUB, "link", "set", "br0", "up")
    # This namespace's way in: the host end keeps SUBNET.254.
    ip("link", "add", f"pecl{TAG}h", "type", "veth", "peer", "name", "to-host", "netns", HUB)
    ip("-n", HUB, "link", "set", "to-host", "master", "br0", "up")
    ip("addr", "add", f"{SUBNET}.254/24", "dev", f"pecl{TAG}h")
    ip("link", "set", f"pecl{TAG}h", "up")
    for i, name in enumerate(names, 1):
        ns = f"pe-cl-{name}-{TAG}"
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"to-{name}",
           "netns", HUB)
        ip("-n", HUB, "link", "set", f"to-{name}", "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")


def drop_network(names):
    ip("link", "del", f"pecl{TAG}h", check=False)
    for name in names:
        ip("netns", "del", f"pe-cl-{name}-{TAG}", check=False)
    ip("netns", "del", HUB, check=False)


class Relay:
    """A TCP relay from this namespace's end of the nodes' network to a
    double on loopback (doubles listen on 127.0.0.1 only; each node's
    loopback is its own namespace's)."""

    def __init__(self, to_port):
        self.to = to_port
        self.sock = socket.create_server((f"{SUBNET}.254", 0))
        self.url = f"http://{SUBNET}.254:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.to))
            for x, y in ((c, u), (u, c)):
                threading.Thread(target=self.pipe, args=(x, y), daemon=True).start()

    @staticmethod
    def pipe(x, y):
        try:
            while data := x.recv(65536):
                y.sendall(data)
        except OSError:
            pass
        finally:
            for z in (x, y):
                try:
                    z.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


class Cluster:
    def __init__(self, nodes, key, hopx=None):
        self.nodes = nodes
        self.key = key
        self.hopx = hopx
        self.a, self.b, self.c = (n.d for n in nodes)

    def mint(self, to_node, did, what, ms=None, from_node="test"):
        """A node credential as daemon/cluster.c makes them, with the key."""
        k = hashlib.blake2b(self.key, digest_size=32, key=b"pocketenv-cluster").digest()
        ms = str(int(time.time() * 1000) if ms is None else ms)
        nonce = secrets.token_hex(16)
        msg = "".join(p + "\n" for p in ["pocketenv-node-v1", from_node, to_node, ms, nonce,
                                          did, what]).encode()
        mac = hmac.new(k, msg, hashlib.sha512).digest()[:32]
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        return f"PocketenvNode v1.{from_node}.{to_node}.{ms}.{nonce}.{b64(did.encode())}." \
               f"{b64(what.encode())}.{b64(mac)}"


@pytest.fixture(scope="module")
def cluster(pg, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    names = ["a", "b", "c"]
    top = str(tmp_path_factory.mktemp("cluster"))
    key = base64.b64encode(secrets.token_bytes(48))
    key_file = os.path.join(top, "cluster.key")
    with open(key_file, "wb") as f:
        f.write(key + b"\n")
    os.chmod(key_file, 0o600)
    store = pg()
    drop_network(names)
    make_network(names)
    nodes = []
    # A remote provider, Hopx's double, reached through a relay: the
    # sandboxes it makes are supervised by one node (docs/cluster.md)
    hopx = start_double("hopx")
    relay = Relay(int(hopx.url.rsplit(":", 1)[1]))
    hopx.url = relay.url  # its agent's address, as the double tells it
    providers = os.path.join(top, "providers.json")
    with open(providers, "w") as f:
        json.dump({"hopx": {"url": relay.url, "key": hopx.key, "timeoutMs": 3000,
                            "createTimeoutMs": 8000}}, f)
    os.chmod(providers, 0o600)
    try:
        for i, name in enumerate(names, 1):
            nodes.append(Node(name, i, top, store, key_file, providers))
        nodes[0].start()
        # One service: every node has a's keys (tokens, sealing, owner).
        for n in nodes[1:]:
            shutil.copytree(os.path.join(nodes[0].data, "keys"), os.path.join(n.data, "keys"))
            n.start()
        yield Cluster(nodes, key.strip(), hopx)
    finally:
        for n in nodes:
            if n.d.proc and n.d.proc.poll() is None:
                for sb in sandboxes(n.d):
                    n.d.sandbox("deleteSandbox", sb["id"])
        codes = {n.name: n.stop() for n in nodes if n.d.proc and n.d.proc.poll() is None}
        relay.close()
        hopx.stop()
        drop_network(names)
        # A clean stop (and, under ASan, no leak or error at exit).
        assert all(rc == 0 for rc in codes.values()), codes


def sandboxes(d):
    st, o = d.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local", "limit": 100})
    assert st == 200, o
    return o["sandboxes"]


def create(d, name):
    st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox", "name": name})
    assert st == 200, sb
    d.wait_status(sb["id"], ["RUNNING"], timeout=60)
    return sb


def drain(d, name, draining=True):
    st, o = d.call("io.pocketenv.node.drainNode", body={"name": name, "draining": draining})
    assert st == 200 and o["draining"] is draining, o


@pytest.fixture(scope="module")
def on_c(cluster):
    """A sandbox that c runs, created through a: a and b drain meanwhile,
    so placement has no other choice."""
    drain(cluster.a, "a")
    drain(cluster.a, "b")
    try:
        sb = create(cluster.a, "made-on-c")
    finally:
        drain(cluster.a, "a", False)
        drain(cluster.a, "b", False)
    assert sb["id"] in cluster.nodes[2].runtime_names()
    assert sb["id"] not in cluster.nodes[0].runtime_names()
    return sb


def test_nodes_register_with_a_lease(cluster):
    st, o = cluster.a.call("io.pocketenv.node.listNodes")
    assert st == 200, o
    by = {n["name"]: n for n in o["nodes"]}
    assert set(by) == {"a", "b", "c"}
    assert all(n["status"] == "UP" and not n["draining"] for n in by.values())
    assert by["a"]["self"] and not by["b"]["self"]
    assert by["c"]["address"] == f"http://{SUBNET}.3:8789"
    assert by["b"]["id"] == cluster.nodes[1].node_id()
    # The owner's only: another user is refused, no token is 401.
    bob = cluster.a.token_for("did:plc:clusterbob")
    assert cluster.a.call("io.pocketenv.node.listNodes", token=bob)[0] == 403
    assert cluster.a.call("io.pocketenv.node.listNodes", token=None)[0] == 401
    assert cluster.b.call("io.pocketenv.node.drainNode", body={"name": "c"}, token=bob)[0] == 403


def test_cli_node_ls_and_drain(cluster):
    env = dict(os.environ, POCKETENV_API_URL=cluster.b.url, POCKETENV_TOKEN=cluster.b.token,
               NO_COLOR="1")

    def cli(*args):
        return subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=30)
    p = cli("node", "ls")
    assert p.returncode == 0, p.stderr
    rows = {line.split()[0]: line.split() for line in p.stdout.splitlines()[1:]}
    assert set(rows) == {"a", "b", "c"} and rows["c"][1] == "UP", p.stdout
    assert "b *" in p.stdout  # the node that answered
    p = cli("node", "drain", "c")
    assert p.returncode == 0 and "Node c drains" in p.stdout, p.stderr
    nodes = json.loads(cli("node", "ls", "--json").stdout)
    assert {n["name"]: n["draining"] for n in nodes} == {"a": False, "b": False, "c": True}
    assert cli("node", "undrain", "c").returncode == 0
    p = cli("node", "drain", "nosuch")
    assert p.returncode != 0 and "no such node" in p.stderr, (p.stdout, p.stderr)
    bob = cluster.b.token_for("did:plc:clusterbob")
    p = subprocess.run([BIN, "node", "ls"], capture_output=True, text=True, timeout=30,
                       env=dict(env, POCKETENV_TOKEN=bob))
    assert p.returncode != 0 and "owner" in p.stderr, p.stderr


def test_drain_is_kept_across_renewals(cluster):
    st, o = cluster.b.call("io.pocketenv.node.drainNode", body={"name": "b"})
    assert st == 200 and o == {"id": cluster.nodes[1].node_id(), "draining": True}
    time.sleep(LEASE)  # several renewals of b's row (each lease/3)
    nodes = {n["name"]: n for n in cluster.a.call("io.pocketenv.node.listNodes")[1]["nodes"]}
    assert nodes["b"]["draining"] and nodes["b"]["status"] == "UP"
    st, o = cluster.a.call("io.pocketenv.node.drainNode", body={"name": "b", "draining": False})
    assert st == 200 and o["draining"] is False
    st, o = cluster.a.call("io.pocketenv.node.drainNode", body={"name": "nosuch"})
    assert st == 404 and o["error"] == "NodeNotFound"


def test_exec_through_another_node_runs_on_the_owning_node(cluster, on_c):
    assert on_c["id"] not in cluster.nodes[0].runtime_names()
    st, out = cluster.a.sandbox("exec", on_c["id"], {"command": "echo via-a; cat /proc/1/comm"})
    assert st == 200, out
    assert out["stdout"].startswith("via-a\n")
    # By name too, and through b.
    st, out = cluster.b.sandbox("exec", "made-on-c", {"command": "echo via-b"})
    assert st == 200 and out["stdout"] == "via-b\n", out
    # A failed command's answer is relayed as it came.
    st, out = cluster.a.sandbox("exec", on_c["id"], {"command": "exit 3"})
    assert st == 200 and out["exitCode"] == 3, out


def where(cluster, ident):
    return {n.name for n in cluster.nodes if ident in n.runtime_names()}


def test_placement_spreads_and_skips_a_drained_node(cluster, on_c):
    # c runs on_c: a and b have the most room, so they get the next two.
    made = [create(cluster.a, f"placed-{i}") for i in range(2)]
    assert {w for sb in made for w in where(cluster, sb["id"])} == {"a", "b"}
    # No new sandbox on a drained node, whoever is asked.
    drain(cluster.a, "a")
    try:
        more = [create(cluster.a, "placed-2"), create(cluster.b, "placed-3")]
        assert all(where(cluster, sb["id"]) <= {"b", "c"} for sb in more)
        assert all(len(where(cluster, sb["id"])) == 1 for sb in more)
        made += more
    finally:
        drain(cluster.a, "a", False)
    for sb in made:
        st, out = cluster.c.sandbox("exec", sb["id"], {"command": "echo placed"})
        assert st == 200 and out["stdout"] == "placed\n", out
        assert cluster.b.sandbox("deleteSandbox", sb["id"])[0] == 200
    assert not any(where(cluster, sb["id"]) for sb in made)


def test_authz_holds_through_forwarding(cluster, on_c):
    bob = cluster.a.token_for("did:plc:clusterbob")
    for d in (cluster.a, cluster.b, cluster.c):
        st, o = d.sandbox("exec", on_c["id"], {"command": "echo x"}, token=bob)
        assert st == 404, (d.url, st, o)
        st, o = d.sandbox("stopSandbox", "made-on-c", token=bob)
        assert st == 404, (d.url, st, o)
    # A client header naming an identity is nobody.
    st, o = cluster.a.call("io.pocketenv.sandbox.exec", {"id": on_c["id"]},
                           {"command": "echo x"}, token=None,
                           headers={"X-Pocketenv-Did": "did:plc:clusterbob"})
    assert st == 401


def test_node_credentials_are_checked(cluster, on_c):
    c_id = cluster.nodes[2].node_id()
    a_id = cluster.nodes[0].node_id()
    owner = json.loads(base64.urlsafe_b64decode(cluster.a.token.split(".")[1] + "=="))["did"]
    nsid = "io.pocketenv.sandbox.exec"

    def call(cred, d=cluster.c):
        return d.call(nsid, {"id": on_c["id"]}, {"command": "echo node"}, token=None,
                      headers={"Authorization": cred})

    good = cluster.mint(c_id, owner, nsid)
    st, o = call(good)
    assert st == 200 and o["stdout"] == "node\n", o
    # The same credential again: a replay.
    st, o = call(good)
    assert st == 401 and o["error"] == "InvalidNodeCredential" and "replayed" in o["message"]
    # Expired, for another node, for another call, made with another key, garbage.
    old = cluster.mint(c_id, owner, nsid, ms=int(time.time() * 1000) - 120_000)
    assert call(old)[1]["message"].endswith("expired")
    assert call(cluster.mint(a_id, owner, nsid))[1]["message"].endswith("wrong_node")
    other = cluster.mint(c_id, owner, "io.pocketenv.sandbox.getSandbox")
    assert call(other)[1]["message"].endswith("wrong_node")
    forged = Cluster(cluster.nodes, b"another key of at least thirty-two bytes!").mint(
        c_id, owner, nsid)
    assert call(forged)[1]["message"].endswith("bad_mac")
    for junk in ("PocketenvNode ", "PocketenvNode v1.a.b", "PocketenvNode " + "x" * 5000):
        st, o = call(junk)
        assert st == 401 and o["error"] == "InvalidNodeCredential", (junk[:40], o)
    # None of these ran anything: only the good call is in c's log as served.
    assert "node credential refused" in cluster.nodes[2].log_text()


def host_of(d):
    return d.url.split("//")[1].split(":")[0]


def ws_to(d, path, token, headers=None):
    h = {"Authorization": f"Bearer {token}"} if token else {}
    return WS(8789, path, headers={**h, **(headers or {})}, host=host_of(d))


def sse_to(d, path, token):
    return SSE(8789, path, {"Authorization": f"Bearer {token}"}, host=host_of(d))


def http(d, method, path, body=None, token=None, headers=None):
    req = urllib.request.Request(d.url + path, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_exec_stream_through_another_node(cluster, on_c):
    ws = ws_to(cluster.a, f"/exec/{on_c['id']}/ws", cluster.a.token)
    assert ws.status == 101, (ws.head, ws.body)
    ws.send(json.dumps({"command": "cat; echo to-err >&2; hostname >/dev/null; exit 5"}))
    out, err, code, close = collect(ws, stdin=b"stdin-through-a\n" * 1000)
    assert out == b"stdin-through-a\n" * 1000 and err == b"to-err\n", (out[-100:], err)
    assert code == 5 and close == 1000
    # The client going away through a ends the process on c.
    ws = ws_to(cluster.b, "/exec/made-on-c/ws", cluster.b.token)
    assert ws.status == 101, ws.head
    ws.send(json.dumps({"argv": ["sh", "-c", "echo up; exec sleep 313"]}))
    ws.read_until(b"up")
    ws.close()

    def sleeping():
        st, o = cluster.c.sandbox("exec", on_c["id"], {"command": "ps -o args"})
        assert st == 200, o
        return "sleep 313" in o["stdout"]
    wait_for(lambda: not sleeping(), 10, "the remote process to end")


def test_terminal_through_another_node(cluster, on_c):
    sid = on_c["id"]
    tok = cluster.a.token
    ws = WS(8789, f"/tty/{sid}/ws?sessionId=cl&cols=100&rows=30&token={tok}",
            host=host_of(cluster.a))
    assert ws.status == 101, (ws.head, ws.body)
    ws.send("stty size; echo e''nd1\n")
    assert b"30 100" in ws.read_until(b"end1")
    ws.send(json.dumps({"type": "resize", "cols": 123, "rows": 45}))
    ws.send("stty size; echo e''nd2\n")
    assert b"45 123" in ws.read_until(b"end2")
    # Resize through b, by POST: the same session on c.
    st, _ = http(cluster.b, "POST", f"/tty/{sid}/resize?sessionId=cl",
                 json.dumps({"cols": 77, "rows": 22}).encode(), token=tok)
    assert st == 204
    ws.send("stty size; echo e''nd3\n")
    assert b"22 77" in ws.read_until(b"end3")
    # SSE through b, input through a.
    sse = sse_to(cluster.b, f"/tty/{sid}/stream?sessionId=clsse", tok)
    assert sse.status == 200 and "text/event-stream" in sse.head, sse.head
    st, _ = http(cluster.a, "POST", f"/tty/{sid}/input?sessionId=clsse", b"echo $((6*7))q\n",
                 token=tok)
    assert st == 204
    sse.read_output_until("42q")
    st, body = http(cluster.a, "POST", f"/tty/{sid}/input?sessionId=nobody", b"x", token=tok)
    assert st == 404 and b"Session not found" in body
    sse.close()
    # The shell ending on c closes the client on a, with its exit code.
    ws.send("exit 4\n")
    code, reason, frames = ws.wait_close()
    assert (code, reason) == (1000, "exit 4")


def test_streams_authz_and_node_credentials(cluster, on_c):
    sid = on_c["id"]
    bob = cluster.a.token_for("did:plc:clusterbob")
    for d in (cluster.a, cluster.b):
        ws = ws_to(d, f"/exec/{sid}/ws", bob)
        assert ws.status == 404, (d.url, ws.head)
        ws = WS(8789, f"/tty/{sid}/ws?token={bob}", host=host_of(d))
        assert ws.status == 404, (d.url, ws.head)
        assert sse_to(d, f"/tty/{sid}/stream", bob).status == 404
        st, _ = http(d, "POST", f"/tty/{sid}/input", b"x", token=bob)
        assert st == 404
    # Straight to c with a node credential: only a valid one for this path.
    c_id = cluster.nodes[2].node_id()
    owner = json.loads(base64.urlsafe_b64decode(cluster.a.token.split(".")[1] + "=="))["did"]
    path = f"/exec/{sid}/ws"
    good = cluster.mint(c_id, owner, path)
    ws = ws_to(cluster.c, path, None, {"Authorization": good})
    assert ws.status == 101, ws.head
    ws.send(json.dumps({"command": "echo node-cred"}))
    out, _, code, _ = collect(ws)
    assert out == b"node-cred\n" and code == 0
    for cred in (good,  # replayed
                 cluster.mint(c_id, owner, f"/tty/{sid}/ws"),  # another path
                 Cluster(cluster.nodes, b"not the key, but thirty-two bytes long").mint(
                     c_id, owner, path),
                 "PocketenvNode v1.x"):
        ws = ws_to(cluster.c, path, None, {"Authorization": cred})
        assert ws.status == 401 and b"InvalidNodeCredential" in ws.body, (cred[:40], ws.head)
    st, body = http(cluster.c, "POST", f"/tty/{sid}/input", b"x",
                    headers={"Authorization": cluster.mint(c_id, owner, "/elsewhere")})
    assert st == 401 and b"InvalidNodeCredential" in body


def test_preview_through_another_node(cluster, on_c):
    sid = on_c["id"]
    st, o = cluster.a.sandbox("exec", sid, {
        "command": "mkdir -p /www && echo page-on-c > /www/index.html && "
                   "dd if=/dev/urandom of=/www/big bs=1024 count=3072 2>/dev/null && "
                   "md5sum /www/big && httpd -p 8080 -h /www"})
    assert st == 200 and o["exitCode"] == 0, o
    big_md5 = o["stdout"].split()[0]
    st, o = cluster.a.call("io.pocketenv.sandbox.exposePort", {"id": sid}, {"port": 8080})
    assert st in (200, 409), o
    st, o = cluster.b.call("io.pocketenv.sandbox.getExposedPorts", {"id": sid})
    host = o["ports"][0]["previewUrl"].split("//", 1)[1].split("/", 1)[0]
    tok = cluster.a.token
    # The path form through a, the Host form through b.
    st, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(
        http(cluster.a, "GET", f"/p/{sid}/8080/index.html", token=tok)), 10, "preview via a")
    assert body == b"page-on-c\n"
    st, body = http(cluster.b, "GET", "/index.html", token=tok, headers={"Host": host})
    assert st == 200 and body == b"page-on-c\n", (st, body[:200])
    st, body = http(cluster.b, "GET", f"/p/{sid}/8080/big", token=tok)
    assert st == 200 and hashlib.md5(body).hexdigest() == big_md5
    # Another user, through any node: as missing. A node credential that is
    # not valid, straight to c: refused.
    bob = cluster.a.token_for("did:plc:clusterbob")
    for d in (cluster.a, cluster.b):
        assert http(d, "GET", f"/p/{sid}/8080/index.html", token=bob)[0] == 404
    c_id = cluster.nodes[2].node_id()
    owner = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "=="))["did"]
    forged = Cluster(cluster.nodes, b"not the key, but thirty-two bytes long").mint(
        c_id, owner, f"/p/{sid}/8080/index.html")
    st, body = http(cluster.c, "GET", f"/p/{sid}/8080/index.html",
                    headers={"X-Pocketenv-Node-Credential": forged.split(" ", 1)[1]})
    assert st == 401 and b"InvalidNodeCredential" in body, (st, body)


def test_cp_through_another_node(cluster, on_c, tmp_path):
    def cli(d, *args, token=None):
        env = dict(os.environ, POCKETENV_API_URL=d.url, POCKETENV_TOKEN=token or d.token,
                   NO_COLOR="1")
        return subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=60)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "hello.txt").write_text("hello from the test\n")
    (src / "sub" / "data.bin").write_bytes(os.urandom(300_000))
    # Up through a (the object lands on a, the unpack runs on c).
    p = cli(cluster.a, "cp", str(src), "made-on-c:/cpdir")
    assert p.returncode == 0, p.stderr
    st, o = cluster.c.sandbox("exec", on_c["id"], {"command": "cat /cpdir/hello.txt"})
    assert st == 200 and o["stdout"] == "hello from the test\n", o
    # Down through b (packed on c, downloaded from b).
    back = tmp_path / "back"
    p = cli(cluster.b, "cp", "made-on-c:/cpdir", str(back))
    assert p.returncode == 0, p.stderr
    assert (back / "sub" / "data.bin").read_bytes() == (src / "sub" / "data.bin").read_bytes()
    # Nothing is left waiting on any node.
    for n in cluster.nodes:
        cp = os.path.join(n.data, "cp")
        assert not os.path.isdir(cp) or not [f for f in os.listdir(cp)
                                              if not f.startswith(".")], n.name
    # Straight to c's /cp: only a valid node credential for the path.
    c_id = cluster.nodes[2].node_id()
    owner = json.loads(base64.urlsafe_b64decode(cluster.a.token.split(".")[1] + "=="))["did"]
    forged = Cluster(cluster.nodes, b"not the key, but thirty-two bytes long").mint(
        c_id, owner, "/cp")
    for cred, path, body in ((forged, "/cp", b"x"),
                             (cluster.mint(c_id, owner, "/cp"), "/cp/" + "0" * 36, None)):
        st, out = http(cluster.c, "POST" if body else "GET", path, body,
                       headers={"Authorization": cred})
        assert st == 401 and b"InvalidNodeCredential" in out, (path, st, out)
    # Another user, through any node: no such sandbox.
    bob = cluster.a.token_for("did:plc:clusterbob")
    for d in (cluster.a, cluster.b):
        p = cli(d, "cp", str(src), "made-on-c:/bobdir", token=bob)
        assert p.returncode != 0
        p = cli(d, "cp", "made-on-c:/cpdir", str(tmp_path / "bob"), token=bob)
        assert p.returncode != 0 and not (tmp_path / "bob").exists()


def test_network_denials_through_another_node(cluster, on_c):
    """The denials live in c's resolver and proxy: a asks c."""
    sid = on_c["id"]
    pol = "io.pocketenv.sandbox.putNetworkPolicy"
    st, o = cluster.a.call(pol, {"id": sid}, {"policy": {"mode": "allowlist",
                                                        "allowDomains": ["allowed.test"]}})
    assert st == 200, o
    try:
        st, o = cluster.a.sandbox("exec", sid, {"command": "nslookup denied.test >/dev/null 2>&1;"
                                                           " true"})
        assert st == 200, o
        for d in (cluster.a, cluster.b):
            st, o = d.call("io.pocketenv.sandbox.getNetworkDenials", {"id": sid})
            assert st == 200, o
            assert any(e.get("name") == "denied.test" for e in o["denials"]), (d.url, o)
    finally:
        assert cluster.a.call(pol, {"id": sid}, {"policy": {"mode": "open"}})[0] == 200


def test_backup_restores_on_its_node_through_another(cluster, on_c):
    """A backup of a sandbox on c is an archive in c's data directory: made
    through a, restored through b, both run on c."""
    sid, sb = on_c["id"], "io.pocketenv.sandbox."

    def content():
        st, o = cluster.c.sandbox("exec", sid, {"command": "cat /bakdir/f.txt"})
        assert st == 200, o
        return o["stdout"]

    st, o = cluster.a.sandbox("exec", sid, {"command": "mkdir -p /bakdir && echo one > /bakdir/f.txt"})
    assert st == 200 and o["exitCode"] == 0, o
    st, o = cluster.a.call(sb + "createBackup", {"id": sid}, {"directory": "/bakdir"})
    assert st == 200, o
    bid = o["backup"]["id"]
    assert os.path.isfile(os.path.join(cluster.nodes[2].data, "backups", bid + ".tar.zst"))
    st, o = cluster.a.sandbox("exec", sid, {"command": "echo two > /bakdir/f.txt"})
    assert st == 200 and o["exitCode"] == 0, o
    # Another user cannot restore it, through any node: as missing.
    bob = cluster.a.token_for("did:plc:clusterbob")
    for d in (cluster.a, cluster.b, cluster.c):
        st, o = d.call(sb + "restoreBackup", body={"backupId": bid}, token=bob)
        assert st == 404 and o["error"] == "BackupNotFound", (d.url, st, o)
    assert content() == "two\n"
    st, o = cluster.b.call(sb + "restoreBackup", body={"backupId": bid})
    assert st == 200, o
    assert content() == "one\n"


def test_ssh_keys_installed_through_another_node(cluster, on_c, tmp_path):
    """putSshKeys installs the key in the running sandbox: on c."""
    priv, pub = keygen(tmp_path)
    st, o = cluster.b.call("io.pocketenv.sandbox.putSshKeys",
                           body={"id": on_c["id"], "privateKey": seal(banner_key(cluster.b), priv),
                                 "publicKey": pub})
    assert st == 200, o
    st, o = cluster.c.sandbox("exec", on_c["id"], {"command": "cat /root/.ssh/id_ed25519.pub"})
    assert st == 200 and o["stdout"] == pub + "\n", o


def test_snapshots_live_on_their_node(cluster, on_c):
    """A snapshot of c's sandbox is a layer in c's runtime: taken through a,
    inspected and used through b (the new sandbox runs on c), removed
    through a (the layer goes on c); another user's calls find nothing
    through any node; a drained snapshot node is named."""
    sid, sb = on_c["id"], "io.pocketenv.sandbox."
    a, b, c = cluster.a, cluster.b, cluster.c
    st, o = a.sandbox("exec", sid, {"command": "echo snapped > /snapf.txt"})
    assert st == 200 and o["exitCode"] == 0, o
    before_a, before_c = set(snapshot_layers(a)), set(snapshot_layers(c))
    st, o = a.call(sb + "createSnapshot", {"id": sid}, {"name": "on-c"}, timeout=BTRFS_WAIT_S)
    assert st == 200, o
    try:
        check_snapshot_on_c(cluster, sb, o["snapshot"]["id"], before_a, before_c)
    finally:  # a failed check leaves no layer for the next run
        a.call(sb + "deleteSnapshot", {"id": "on-c"}, post=True, timeout=BTRFS_WAIT_S)


def check_snapshot_on_c(cluster, sb, snid, before_a, before_c):
    a, b, c = cluster.a, cluster.b, cluster.c
    new = set(snapshot_layers(c)) - before_c
    assert new and set(snapshot_layers(a)) == before_a
    st, o = b.call(sb + "getSnapshot", {"id": "on-c"})
    assert st == 200 and o["snapshot"]["id"] == snid, o
    assert "exclusiveBytes" in o["snapshot"], o  # measured where the layer is
    bob = a.token_for("did:plc:clusterbob")
    for d in (a, b, c):
        st, o = d.call(sb + "getSnapshots", token=bob)
        assert st == 200 and o["snapshots"] == [], (d.url, o)
        for key in (snid, "on-c"):
            assert d.call(sb + "getSnapshot", {"id": key}, token=bob)[0] == 404
            assert d.call(sb + "deleteSnapshot", {"id": key}, token=bob, post=True)[0] == 404
        st, o = d.call(sb + "createSandbox", body={"base": "snapshot:on-c", "name": "bobs"},
                       token=bob)
        assert st == 404 and o["error"] == "SnapshotNotFound", (d.url, st, o)
    # From it through b: placed on c, where the layer is (b and a have room).
    st, made = b.call(sb + "createSandbox", body={"base": "snapshot:on-c", "name": "from-snap"})
    assert st == 200, made
    b.wait_status(made["id"], ["RUNNING"], timeout=60)
    assert made["id"] in cluster.nodes[2].runtime_names()
    st, o = b.sandbox("exec", made["id"], {"command": "cat /snapf.txt"})
    assert st == 200 and o["stdout"] == "snapped\n", o
    assert a.sandbox("deleteSandbox", made["id"])[0] == 200
    # c drained: no new sandbox can come from it, and the error says where.
    drain(a, "c")
    try:
        st, o = b.call(sb + "createSandbox", body={"base": "snapshot:on-c", "name": "nope"})
    finally:
        drain(a, "c", False)
    assert st == 503 and "node c" in o["message"] and "draining" in o["message"], o
    # Removed through a: gone from the store and, soon, from c's runtime.
    st, o = a.call(sb + "deleteSnapshot", {"id": "on-c"}, post=True, timeout=BTRFS_WAIT_S)
    assert st == 200, o
    assert b.call(sb + "getSnapshot", {"id": snid})[0] == 404
    wait_for(lambda: not new & set(snapshot_layers(c)), BTRFS_WAIT_S,
             "the snapshot's layer to go on c")


def test_volumes_live_on_their_node(cluster, on_c):
    """A volume mounted in c's sandbox is made on c (through a) and removed
    there (through b); a volume made on a cannot be mounted in c's sandbox:
    409 naming both nodes."""
    vol, sid = "io.pocketenv.volume.", on_c["id"]
    a, b = cluster.a, cluster.b
    st, o = a.call(vol + "addVolume", body={"volume": {"name": "vol-c", "sandboxId": sid,
                                                       "path": "/mnt/vc"}})
    assert st == 200, o
    vid = o["volume"]["id"]
    on = {n.name for n in cluster.nodes
          if os.path.isdir(os.path.join(n.data, "volumes", vid))}
    assert on == {"c"}, on
    st, o = a.call(vol + "addVolume", body={"volume": {"name": "vol-a"}})
    assert st == 200, o
    vid_a = o["volume"]["id"]
    assert os.path.isdir(os.path.join(cluster.nodes[0].data, "volumes", vid_a))
    st, o = b.call(vol + "addVolume", body={"volume": {"name": "vol-a", "sandboxId": sid,
                                                       "path": "/mnt/va"}})
    assert st == 409 and "node a" in o["message"] and "node c" in o["message"], o
    for v, n in ((vid, cluster.nodes[2]), (vid_a, cluster.nodes[0])):
        st, o = b.call(vol + "deleteVolume", {"id": v}, post=True)
        assert st == 200, o
        assert not os.path.exists(os.path.join(n.data, "volumes", v))


def slots_free(d):
    return {n["name"]: n["slotsFree"] for n in d.call("io.pocketenv.node.listNodes")[1]["nodes"]}


def kept(d, ident):
    """getSandbox of ident as d's read cache answers it (a hit: d keeps
    answers of the PostgreSQL store while it hears the store's
    notifications). Tried until one is: another node's write between the
    two reads rightly ends what d kept."""
    def hit():
        hits = metric(d, "pocketenv_read_cache_hits_total")
        st, o = d.sandbox("getSandbox", ident)
        return o if st == 200 and metric(d, "pocketenv_read_cache_hits_total") == hits + 1 else None
    return wait_for(hit, 10, "a read answered from the read cache")


def change_seen_at_once(cluster, ident):
    """a keeps c's sandbox's answer; c changes the row through its own API
    (startSandbox's keepAlive, on a running sandbox: one write); a's next
    reads show it well within the second a kept answer may live, so only
    the store's NOTIFY can explain it."""
    a, c = cluster.a, cluster.c
    heard = metric(a, "pocketenv_store_notifications_total")
    keep = kept(a, ident)["sandbox"]["keepAlive"]
    try:
        st, o = c.sandbox("startSandbox", ident, {"keepAlive": not keep})
        assert st == 200, o
        wait_for(lambda: a.sandbox("getSandbox", ident)[1]["sandbox"]["keepAlive"] is (not keep),
                 0.5, "a to see the change c made")
    finally:
        assert c.sandbox("startSandbox", ident, {"keepAlive": keep})[0] == 200
    assert metric(a, "pocketenv_store_notifications_total") > heard


def test_a_change_on_another_node_reaches_the_read_cache_at_once(cluster, on_c):
    change_seen_at_once(cluster, on_c["id"])
    change_seen_at_once(cluster, "made-on-c")  # by name: its own entry


def test_a_node_listens_again_after_losing_the_store(cluster, on_c):
    """a's listening connection ends (a server restart, an operator): a
    connects again (it keeps nothing meanwhile) and hears changes again."""
    a = cluster.nodes[0]
    lost = metric(a.d, "pocketenv_store_listen_lost_total")
    p = subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN[-1]}/psql", a.store, "-Atc",
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'pocketenv-listen/a'"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == "1", p.stdout + p.stderr
    wait_for(lambda: metric(a.d, "pocketenv_store_listen_lost_total") == lost + 1
             and metric(a.d, "pocketenv_store_listen_up") == 1, 5, "a to listen again")
    assert "event=store_listen_restored" in a.log_text()
    change_seen_at_once(cluster, on_c["id"])


def test_a_revocation_reaches_every_node_at_once(cluster):
    """`pocketenv token revoke` writes the shared store, no daemon asked:
    every node refuses the user's tokens within a second (the store's
    NOTIFY makes it read the revocations), not at its next tick (10 s
    here, the default)."""
    did = "did:plc:clusterrevoked"
    tok = cluster.a.token_for(did)
    for d in (cluster.a, cluster.b, cluster.c):
        st, o = d.call("io.pocketenv.sandbox.getSandboxes", token=tok)
        assert st == 200, o
    a = cluster.nodes[0]
    p = subprocess.run([BIN, "--data", a.data, "token", "revoke", "--did", did, "--store",
                        a.store], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    for d in (cluster.a, cluster.b, cluster.c):
        wait_for(lambda: d.call("io.pocketenv.sandbox.getSandboxes", token=tok)[0] == 401, 1,
                 f"{d.url} to refuse the revoked token")
    assert f"event=tokens_revoked_elsewhere did={did}" in cluster.nodes[1].log_text()


def pause_view(d, sid):
    """What d says of sid's pause: getSandbox's (paused, resumedBy), the
    same from getActorSandboxes, and E2B's list state."""
    from test_e2b import e2b_key
    st, o = d.sandbox("getSandbox", sid)
    assert st == 200, o
    got = (o["sandbox"].get("paused", False), o["sandbox"].get("resumedBy"))
    listed = [(s.get("paused", False), s.get("resumedBy")) for s in sandboxes(d)
              if s["id"] == sid]
    st, o = e2b_raw(d, "GET", "/v2/sandboxes?state=running,paused", e2b_key(d.token))
    assert st == 200, o
    state = [s["state"] for s in o if s["sandboxID"] == sid]
    return got, listed, state


def test_a_pause_on_c_is_seen_through_every_node(cluster, on_c):
    """c freezes its sandbox (E2B's pause, made on c): a and b, which answer
    getSandbox, getActorSandboxes and E2B's list from the store, say paused at
    once (the row's change, heard; their tick is 10 s), though their read
    caches had it running. An exec through a is relayed to c, which thaws
    it first: every node then says what resumed it."""
    from test_e2b import e2b_key
    sid = on_c["id"]
    for d in (cluster.a, cluster.b):
        kept(d, sid)  # a running answer in the read cache
        assert pause_view(d, sid)[0][0] is False
    st, o = e2b_raw(cluster.c, "POST", f"/sandboxes/{sid}/pause", e2b_key(cluster.c.token))
    assert st == 204, (st, o)
    try:
        for d in (cluster.a, cluster.b):
            wait_for(lambda: pause_view(d, sid)[0][0] is True, 1, f"{d.url} to say paused")
            got, listed, state = pause_view(d, sid)
            assert listed == [(True, got[1])] and state == ["paused"], (d.url, listed, state)
        st, o = cluster.a.sandbox("exec", sid, {"command": "echo awake"})
        assert st == 200 and o["stdout"] == "awake\n", o
        for d in (cluster.a, cluster.b):
            wait_for(lambda: pause_view(d, sid)[0] == (False, "exec"), 1,
                     f"{d.url} to say resumed by exec")
            got, listed, state = pause_view(d, sid)
            assert listed == [(False, "exec")] and state == ["running"], (d.url, listed, state)
            st, o = d.sandbox("getSandbox", sid)
            assert st == 200 and o["sandbox"]["resumedAt"], o
    finally:  # running again whatever failed above
        assert cluster.c.sandbox("exec", sid, {"command": "true"})[0] == 200


def test_a_remote_sandbox_is_supervised_by_the_node_that_made_it(cluster):
    """A Hopx sandbox made through a (b and c drained) is a's to supervise:
    its row names a. Changed at Hopx (paused there) while the nodes run,
    a restart of b leaves its row alone (b settles no remote row of
    another node, though the store is shared); a restart of a settles it
    at once (STOPPED, saying so), seen through b."""
    a, b = cluster.nodes[0], cluster.nodes[1]
    drain(cluster.a, "b")
    drain(cluster.a, "c")
    try:
        st, sb = cluster.a.call("io.pocketenv.sandbox.createSandbox", body={
            "base": "busybox", "name": "remote-on-a", "provider": "hopx"}, timeout=60)
    finally:
        drain(cluster.a, "b", False)
        drain(cluster.a, "c", False)
    assert st == 200, sb
    sid = sb["id"]
    try:
        got = cluster.b.wait_status(sid, ["RUNNING"], timeout=30)
        cluster.hopx.sandboxes[got["remoteId"]].status = "paused"

        def restarted(n):
            mark = len(n.log_text())
            assert n.stop() == 0
            n.start()
            return wait_for(lambda: [ln for ln in n.log_text()[mark:].splitlines()
                                     if "event=reconcile_remote" in ln], 15,
                            f"{n.name}'s remote rows at start")[0]
        assert "sandboxes=0" in restarted(b), b.log_text()[-2000:]
        assert cluster.b.sandbox("getSandbox", sid)[1]["sandbox"]["status"] == "RUNNING"
        assert "sandboxes=1" in restarted(a), a.log_text()[-2000:]
        got = cluster.b.wait_status(sid, ["STOPPED"], timeout=15)
        assert "hopx" in got["statusReason"], got
    finally:
        cluster.a.sandbox("deleteSandbox", sid)


def test_a_node_stopped_cleanly_is_down_at_once(cluster, on_c):
    """SIGTERM: c ends its lease as it stops (and NOTIFYs), so the others
    report its sandboxes down well before its lease would lapse; a restart
    brings it back."""
    c = cluster.nodes[2]
    # An E2B timeout c keeps (set through a, relayed), whose row the store
    # lost (as one kept before the store had them): c's restart puts it back.
    from test_e2b import e2b_key
    key = e2b_key(cluster.a.token)
    st, _ = e2b_raw(cluster.a, "POST", f"/sandboxes/{on_c['id']}/timeout", key, {"timeout": 3600})
    assert st == 204
    p = subprocess.run([sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1], c.store, "-c",
                        "DELETE FROM e2b_sandboxes"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "DELETE 1", (p.stdout, p.stderr)
    # a keeps the answer that c's sandbox is up: the NOTIFY must end it.
    assert "statusReason" not in kept(cluster.a, on_c["id"])["sandbox"]
    heard = f"event=node_changed node={c.node_id()}"
    before = cluster.nodes[0].log_text().count(heard)  # c's start was heard too
    c.d.proc.send_signal(signal.SIGTERM)

    def down():
        st, o = cluster.a.sandbox("getSandbox", on_c["id"])
        return st == 200 and o["sandbox"].get("statusReason") == "node c is down"
    # Renewed every LEASE/3, c's lease runs at least 2/3 LEASE past the
    # signal, and a kept answer lives a second: seeing it down within half
    # of that needs the release and a's hearing of it.
    wait_for(down, 0.5, "a to see c down after its SIGTERM")
    wait_for(lambda: cluster.nodes[0].log_text().count(heard) == before + 1, 5,
             "a to log that it heard c leave")
    st, o = cluster.b.sandbox("exec", on_c["id"], {"command": "true"})
    assert st == 503 and o["error"] == "NodeDown", o
    assert c.d.proc.wait(30) == 0
    assert "event=node_left" in c.log_text()
    c.start()
    # Back up: heard too (its start is a notification), so what a kept
    # saying "node c is down" goes.
    wait_for(lambda: cluster.nodes[0].log_text().count(heard) == before + 2, 5,
             "a to hear c come back")
    assert "statusReason" not in cluster.a.sandbox("getSandbox", on_c["id"])[1]["sandbox"]
    wait_for(lambda: cluster.a.sandbox("exec", on_c["id"], {"command": "true"})[0] == 200,
             LEASE + 10, "c's sandbox reachable again")
    st, listed = e2b_raw(cluster.b, "GET", "/sandboxes", key)
    end = [e["endAt"] for e in listed if e["sandboxID"] == on_c["id"]]
    assert st == 200 and end and not end[0].startswith("9999"), listed


def test_ssh_gateway_through_another_node(cluster, on_c):
    """Upstream's CLI /ssh flow (test_compat_ssh.py) through a, to a
    sandbox that c runs: connect is relayed to c, which makes the session;
    its WebSocket, input, resize and disconnect made on a reach it there.
    Another user cannot use the session id through a."""
    from test_compat_ssh import read_b64_until
    tok = cluster.a.token
    st, body = http(cluster.a, "POST", "/ssh/connect", json.dumps({"cols": 100, "rows": 30}).encode(),
                    token=tok, headers={"Content-Type": "application/json",
                                        "X-Sandbox-Id": on_c["id"]})
    assert st == 200, body
    sid = json.loads(body)["sessionId"]
    ws = WS(8789, f"/ssh/{sid}/ws?token={tok}", headers={"User-Agent": "pocketenv-cli"},
            host=host_of(cluster.a))
    assert ws.status == 101, (ws.head, ws.body)
    ws.send("stty size; echo hi-$((6*7))\n")
    assert b"30 100" in read_b64_until(ws, b"hi-42")
    st, _ = http(cluster.a, "POST", f"/ssh/resize/{sid}",
                 json.dumps({"cols": 90, "rows": 20}).encode(), token=tok)
    assert st == 200
    st, _ = http(cluster.a, "POST", f"/ssh/input/{sid}",
                 json.dumps({"data": "stty size; echo e''nd\n"}).encode(), token=tok)
    assert st == 200
    assert b"20 90" in read_b64_until(ws, b"end")
    bob = cluster.a.token_for("did:plc:clusterbob")
    for d in (cluster.a, cluster.c):
        st, _ = http(d, "POST", f"/ssh/input/{sid}", b'{"data": "x"}', token=bob)
        assert st == 404, d.url
    ws.close()
    st, body = http(cluster.a, "DELETE", f"/ssh/disconnect/{sid}", token=tok)
    assert (st, json.loads(body)) == (200, {"ok": True})
    st, _ = http(cluster.c, "POST", f"/ssh/input/{sid}", b'{"data": "x"}', token=tok)
    assert st == 404  # ended on c


def envd_call(d, sandbox_id, path, body, key=None, headers=None):
    """(status, body) of one raw envd call (Connect unary, JSON) to d."""
    h = {"Content-Type": "application/json", "E2b-Sandbox-Id": sandbox_id,
         "Connect-Protocol-Version": "1", **(headers or {})}
    if key:
        h["X-Access-Token"] = key
    req = urllib.request.Request(d.url + path, data=json.dumps(body).encode(), headers=h,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_e2b_sdk_through_another_node(cluster, on_c):
    """E2B's SDK pointed at a runs commands (a Connect stream) and writes,
    lists and reads files in a sandbox that c runs: each envd call is
    relayed to c, one hop, with a node credential; the user's key stays on
    a. Another user is refused through any node."""
    from test_e2b import drive, e2b_key
    out = drive(cluster.a, "remote", template=on_c["id"], timeout=120)
    assert out["run"] == {"stdout": "out\n", "stderr": "err\n", "exitCode": 0}, out
    assert out["exit3"] == {"exitCode": 3, "stdout": "before\n"}, out
    assert out["read"] == "hello file", out
    assert {"name": "a.txt", "type": "file"} in out["list"], out
    assert out["readMissing"]["name"] == "FileNotFoundError", out
    # the upload went to c's sandbox
    st, o = cluster.c.sandbox("exec", on_c["id"], {"command": "cat /tmp/e2b/a.txt"})
    assert st == 200 and o["stdout"] == "hello file", o
    owner = e2b_key(cluster.a.token)
    st, o = envd_call(cluster.b, on_c["id"], "/filesystem.Filesystem/Stat",
                      {"path": "/tmp/e2b/a.txt"}, owner)
    assert st == 200 and o["entry"]["name"] == "a.txt", o
    bob = e2b_key(cluster.a.token_for("did:plc:clusterbob"))
    for d in (cluster.a, cluster.b, cluster.c):
        st, o = envd_call(d, on_c["id"], "/filesystem.Filesystem/Stat", {"path": "/tmp"}, bob)
        assert st == 404, (d.url, st, o)
    # c takes no made-up node credential in place of a key
    st, o = envd_call(cluster.c, on_c["id"], "/filesystem.Filesystem/Stat", {"path": "/tmp"},
                      headers={"Authorization": "PocketenvNode v1.x.y.1.n.a.b.c"})
    assert st == 401 and o["error"] == "InvalidNodeCredential", o


def e2b_raw(d, method, path, key=None, body=None, headers=None):
    """(status, JSON or None) of one E2B control-plane request to d."""
    h = {"X-API-Key": key} if key else {}
    st, out = http(d, method, path, json.dumps(body).encode() if body is not None else None,
                   headers={**h, **({"Content-Type": "application/json"} if body else {}),
                            **(headers or {})})
    return st, json.loads(out) if out else None


def test_e2b_control_plane_through_another_node(cluster, on_c):
    """E2B's SDK pointed at a only: its create is placed on c (a and b
    drained), and kill, setTimeout, pause and connect (resume) of it made
    through a act on c, relayed with a node credential; the key stays on
    a, which puts it back into the answers. Another user's key cannot
    touch it through a; c takes a relayed call only with a valid node
    credential for its path."""
    from test_e2b import drive, e2b_key
    owner, bob = e2b_key(cluster.a.token), e2b_key(cluster.a.token_for("did:plc:clusterbob"))
    drain(cluster.a, "a")
    drain(cluster.a, "b")
    try:
        made = drive(cluster.a, "placedCreate", timeout=120)
        drain(cluster.a, "c")
        try:  # no node with room: said, nothing made
            before = len(sandboxes(cluster.a))
            st, o = e2b_raw(cluster.a, "POST", "/sandboxes", owner, {"templateID": "busybox"})
            assert st == 503 and "no node" in o["message"].lower(), (st, o)
            assert len(sandboxes(cluster.a)) == before
        finally:
            drain(cluster.a, "c", False)
    finally:
        drain(cluster.a, "a", False)
        drain(cluster.a, "b", False)
    sid = made["sandboxId"]
    assert made["run"] == "placed\n", made
    assert where(cluster, sid) == {"c"}
    # Another user, through a: as missing, for reads and changes alike.
    for method, path in (("DELETE", ""), ("POST", "/pause"), ("POST", "/connect"),
                         ("GET", "")):
        st, o = e2b_raw(cluster.a, method, f"/sandboxes/{sid}{path}", bob,
                        {"timeout": 30} if method == "POST" else None)
        assert st == 404, (method, path, st, o)
    st, o = e2b_raw(cluster.a, "POST", f"/sandboxes/{sid}/timeout", bob, {"timeout": 1})
    assert st == 404, o
    # Relayed, the answer has the caller's key; c never had it.
    st, o = e2b_raw(cluster.b, "GET", f"/sandboxes/{sid}", owner)
    assert st == 200 and o["metadata"] == {"placed": "yes"}, o
    assert o["envdAccessToken"] == owner, o
    # Straight to c: only a node credential made for this path, once.
    c_id = cluster.nodes[2].node_id()
    did = json.loads(base64.urlsafe_b64decode(cluster.a.token.split(".")[1] + "=="))["did"]
    path = f"/sandboxes/{sid}"
    good = cluster.mint(c_id, did, path)
    st, o = e2b_raw(cluster.c, "GET", path, headers={"Authorization": good})
    assert st == 200 and o["sandboxID"] == sid and "envdAccessToken" not in o, o
    forged = Cluster(cluster.nodes, b"not the key, but thirty-two bytes long").mint(
        c_id, did, f"{path}/pause")
    for cred in (good, cluster.mint(c_id, did, path), forged, "PocketenvNode v1.x"):
        st, o = e2b_raw(cluster.c, "POST", f"{path}/pause", headers={"Authorization": cred})
        assert st == 401 and o["error"] == "InvalidNodeCredential", (cred[:40], st, o)
    st, o = e2b_raw(cluster.c, "DELETE", path, headers={"Authorization": cluster.mint(
        cluster.nodes[0].node_id(), did, path)})
    assert st == 401 and o["message"].endswith("wrong_node"), o
    assert sid in cluster.nodes[2].runtime_names()
    out = drive(cluster.a, "placedDrive", template=sid, timeout=120)
    assert out["info"]["metadata"] == {"placed": "yes"} and out["info"]["state"] == "running", out
    assert 80 <= out["info"]["endInS"] <= 95, out  # the timeout c armed, seen through a
    assert out["paused"] == "paused" and out["stateAfter"] == "running", out
    assert out["listedPaused"] == ["paused"], out  # a's list, from the store
    assert out["resumed"] == "placed\n" and out["byMeta"] == [sid], out
    assert out["kill"] is True and out["killedAgain"] is False, out
    assert not where(cluster, sid)
    assert cluster.a.sandbox("getSandbox", sid)[0] == 404


def test_a_node_down_is_reported_and_comes_back(cluster, on_c):
    # Slots freed by the tests before count once b renews its lease.
    wait_for(lambda: (lambda f: f["b"] > f["c"])(slots_free(cluster.b)), LEASE + 3,
             "b to report more free slots than c")
    drain(cluster.b, "a")
    try:
        on_b = create(cluster.c, "made-on-b")  # c has on_c already: b has more room
    finally:
        drain(cluster.b, "a", False)
    assert where(cluster, on_b["id"]) == {"b"}
    c = cluster.nodes[2]
    c.kill9()
    killed = time.monotonic()

    def down():
        st, o = cluster.a.sandbox("exec", on_c["id"], {"command": "true"})
        return o if st == 503 else None
    o = wait_for(down, LEASE + 3, "a to see c down")
    assert time.monotonic() - killed < LEASE + 3
    assert o["error"] == "NodeDown" and "node c is down" in o["message"]
    nodes = {n["name"]: n for n in cluster.a.call("io.pocketenv.node.listNodes")[1]["nodes"]}
    assert nodes["c"]["status"] == "DOWN" and nodes["a"]["status"] == "UP"
    # a and b keep serving, b's sandbox through a included.
    st, out = cluster.a.sandbox("exec", on_b["id"], {"command": "echo still"})
    assert st == 200 and out["stdout"] == "still\n", out
    # Nothing of c's sandbox left the store; its views say why it is out of reach.
    st, o = cluster.b.sandbox("getSandbox", on_c["id"])
    assert st == 200 and o["sandbox"]["name"] == "made-on-c"
    assert o["sandbox"]["statusReason"] == "node c is down", o
    listed = {s["id"]: s for s in sandboxes(cluster.a)}
    assert listed[on_c["id"]]["statusReason"] == "node c is down"
    # E2B: a change waits for c; a read is the store's.
    from test_e2b import e2b_key
    st, o = e2b_raw(cluster.a, "DELETE", f"/sandboxes/{on_c['id']}", e2b_key(cluster.a.token))
    assert st == 503 and "node c is down" in o["message"], o
    st, o = e2b_raw(cluster.b, "GET", f"/sandboxes/{on_c['id']}", e2b_key(cluster.a.token))
    assert st == 200 and o["sandboxID"] == on_c["id"], o
    assert "statusReason" not in listed[on_b["id"]]
    # c comes back and re-adopts it.
    c.start()
    wait_for(lambda: cluster.a.sandbox("exec", on_c["id"], {"command": "echo back"})[0] == 200,
             LEASE + 10, "c's sandbox reachable again")
    st, out = cluster.a.sandbox("exec", on_c["id"], {"command": "echo back"})
    assert out["stdout"] == "back\n"
    assert "statusReason" not in cluster.b.sandbox("getSandbox", on_c["id"])[1]["sandbox"]
    assert cluster.a.sandbox("deleteSandbox", on_b["id"])[0] == 200


def test_sqlite_stays_single_node(tmp_path):
    key = tmp_path / "k"
    key.write_bytes(secrets.token_bytes(40))
    key.chmod(0o600)
    p = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "d"),
                        "--token-file", str(tmp_path / "t.json"), "--cluster-key-file", str(key)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "PostgreSQL" in p.stderr, p.stderr
