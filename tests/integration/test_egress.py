"""Egress policy (issue 20): getNetworkPolicy/putNetworkPolicy, the
sandbox's nftables table and the daemon's DNS forwarder.

Network safety: traffic only goes to loopback, to sandboxes, and to an
"internet" network namespace this file creates (10.124.0.0/24, a test-only
range reached over a veth of ours): a DNS server on 10.124.0.2:53 that the
daemon uses as its upstream, and HTTP servers on 10.124.0.2 and .3.
"""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import BIN, kill_tree, wait_for
from test_daemon import serving

HOST = "10.124.0.1"
DNS = "10.124.0.2"     # the namespace's DNS server, and allowed.test's host
OTHER = "10.124.0.3"   # denied.test's host
ZONE = (f"allowed.test {DNS}\ndenied.test {OTHER}\nalso.allowed.test {OTHER}\n"
        f"doh.test {OTHER}\nflip.test {DNS}\nshared.test {DNS}\n")

DNS_SERVER = r"""
import socket, struct, sys, os
zone_file = sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(4096)
    zone = dict(l.split() for l in open(zone_file).read().splitlines() if l.strip())
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode().lower().replace(".", "\\."))
        i += 1 + q[i]
    name, qtype = ".".join(labels), struct.unpack("!H", q[i + 1:i + 3])[0]
    with open(zone_file + ".log", "a") as log:
        log.write(name + "\n")
    question = q[12:i + 5]
    addr = zone.get(name)
    if addr is None:
        flags, answers = 0x8183, b""
    elif qtype == 1:
        flags = 0x8180
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 2, 4) + socket.inet_aton(addr)
    else:
        flags, answers = 0x8180, b""
    s.sendto(q[:2] + struct.pack("!HHHHH", flags, 1, 1 if answers else 0, 0, 0) + question +
             answers, peer)
"""

HTTP_SERVER = r"""
import http.server, socketserver, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/stream":
            self.send_response(200)
            self.end_headers()
            try:
                for i in range(600):
                    self.wfile.write(b"tick\n")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
            return
        if self.path.startswith("/big/"):  # /big/N: N bytes
            n = int(self.path[5:])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            try:
                for _ in range(n // 4096):
                    self.wfile.write(b"x" * 4096)
                self.wfile.write(b"x" * (n % 4096))
            except OSError:
                pass
            return
        body = sys.argv[1].encode()
        if len(sys.argv) > 3:  # a virtual host: say which
            body += b"/" + self.headers.get("Host", "-").encode()
            if self.headers.get("X-Key") is not None:  # what it received, kept here only
                with open(sys.argv[4], "a") as f:
                    f.write(self.headers.get("Host", "-") + " " + self.headers["X-Key"] + "\n")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
if len(sys.argv) > 3:
    H.protocol_version = "HTTP/1.1"  # keep-alive: several requests on one connection
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S((sys.argv[1], int(sys.argv[2])), H)
print("ready", flush=True)
s.serve_forever()
"""


TLS_SERVER = r"""
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
s = socket.create_server((sys.argv[1], 443))
print("ready", flush=True)
def serve(c):
    try:
        with ctx.wrap_socket(c, server_side=True) as t:
            head = t.recv(100)
            while head.startswith(b"GET ") and b"\r\n\r\n" not in head and len(head) < 65536:
                more = t.recv(4096)
                if not more:
                    break
                head += more
            if not head.startswith(b"GET "):
                t.sendall(b"tls " + sys.argv[1].encode())
                return
            # HTTP over TLS: keep what it received (Host, X-Key), say who served
            hdr = dict(l.split(": ", 1) for l in head.decode().split("\r\n")[1:] if ": " in l)
            with open(sys.argv[4], "a") as f:
                f.write(hdr.get("Host", "-") + " " + hdr.get("X-Key", "-") + "\n")
            body = ("tls " + sys.argv[1] + "/" + hdr.get("Host", "-")).encode()
            t.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    except (OSError, ssl.SSLError):
        pass
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def spawn(ns, *args):
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", *args],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert p.stdout.readline() == "ready\n"
    return p


def remove_dead_internets():
    """A run killed before its teardown leaves its namespace, veth and
    servers, whose route to 10.124.0.0/24 would capture this run's traffic:
    remove those whose run (the pid in the name) is gone."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for ns in (line.split()[0] for line in names.splitlines() if line.startswith("pt-inet-")):
        tag = ns[len("pt-inet-"):]
        if tag.isdigit() and os.path.exists(f"/proc/{tag}"):
            continue
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        for pid in pids.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "link", "del", "pt-ih-" + tag], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def internet(tmp_path_factory):
    """The test's internet: a namespace with DNS and HTTP servers. Yields the
    zone file (lines "name address"; the server reads it at every query)."""
    remove_dead_internets()
    tag = os.getpid()  # the name says whose it is (remove_dead_internets)
    ns, host_if, ns_if = f"pt-inet-{tag}", f"pt-ih-{tag}", f"pt-in-{tag}"
    zone = tmp_path_factory.mktemp("zone") / "zone"
    zone.write_text(ZONE)
    procs = []
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{HOST}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        for a in (DNS, OTHER):
            sh("ip", "-n", ns, "addr", "add", f"{a}/24", "dev", ns_if)
        sh("ip", "-n", ns, "link", "set", ns_if, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        procs.append(spawn(ns, DNS_SERVER, DNS, str(zone)))
        for port in ("8000", "8001"):
            procs.append(spawn(ns, HTTP_SERVER, DNS, port))
            procs.append(spawn(ns, HTTP_SERVER, OTHER, port))
        # HTTP and HTTPS on their own ports, for the proxy's tests: virtual
        # hosts (allowed.test and shared.test share DNS's address)
        cert, key = zone.with_name("cert.pem"), zone.with_name("key.pem")
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-days", "2", "-subj", "/CN=allowed.test", "-keyout", str(key),
           "-out", str(cert), "-addext", "subjectAltName=DNS:allowed.test,DNS:shared.test")
        # OTHER's certificate is from no CA the daemon trusts (the egress
        # proxy's "wrong CA" case); DNS's is in POCKETENV_EGRESS_CA_FILE
        ocert, okey = zone.with_name("other-cert.pem"), zone.with_name("other-key.pem")
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-days", "2", "-subj", "/CN=also.allowed.test", "-keyout", str(okey),
           "-out", str(ocert), "-addext", "subjectAltName=DNS:also.allowed.test,DNS:denied.test")
        for a, c, k in ((DNS, cert, key), (OTHER, ocert, okey)):
            procs.append(spawn(ns, HTTP_SERVER, a, "80", "vhost", str(zone.with_name(f"recv-{a}"))))
            procs.append(spawn(ns, TLS_SERVER, a, str(c), str(k),
                               str(zone.with_name(f"recv-tls-{a}"))))
        yield zone
    finally:
        for p in procs:
            kill_tree(p)
            p.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, internet):
    with serving(tmp_path_factory.mktemp("egress"),
                 env={"POCKETENV_DNS_UPSTREAM": f"{DNS}:53",
                      "POCKETENV_EGRESS_CA_FILE": str(internet.with_name("cert.pem"))}) as d:
        yield d


def put(d, ident, policy):
    return d.call("io.pocketenv.sandbox.putNetworkPolicy", {"id": ident}, {"policy": policy})


def get(d, ident):
    return d.call("io.pocketenv.sandbox.getNetworkPolicy", {"id": ident})


def run(d, ident, script):
    st, out = d.sandbox("exec", ident, {"command": script})
    assert st == 200, out
    return out["stdout"]


def reaches(d, ident, script, want):
    """The script's lines become want: a lookup and a connect that must
    succeed may be slow on a loaded host (a busybox resolver gives up after
    a few seconds), so they are tried until a deadline. What must fail is
    checked with run() once: it fails at once or never succeeds."""
    got = []

    def check():
        got[:] = run(d, ident, script).split()
        return got == want
    wait_for(check, 30, f"{want} from the sandbox (last: {got})")


def fetch(target, timeout=3, port=8000, path="/"):
    """Shell: GET http://target:port/ from inside, printing the body (or
    nothing). busybox nc, as in test_network.py."""
    return (f"printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w {timeout} {target} {port} 2>/dev/null"
            " | tail -n 1; echo; ")


@pytest.fixture(scope="module")
def box(daemon):
    st, out = daemon.call("io.pocketenv.sandbox.createSandbox",
                          body={"base": "busybox", "name": "egress"})
    assert st == 200, out
    daemon.wait_status("egress", ["RUNNING"])
    yield "egress"
    daemon.sandbox("deleteSandbox", "egress")


def test_policy_api_default_roundtrip_and_bad_input(daemon, box):
    st, out = get(daemon, box)
    assert st == 200 and out["isDefault"] and out["policy"]["mode"] == "open", out
    for bad, msg in (({"mode": "closed"}, "mode must be"),
                     ({"mode": "allowlist", "allowDomains": ["a..b"]}, "empty label"),
                     ({"mode": "allowlist", "allowDomains": ["ex*ample.org"]}, "wildcard"),
                     ({"mode": "allowlist", "allowCidrs": ["10.0.0.0/33"]}, "length must be"),
                     ({"mode": "allowlist", "allowCidrs": ["::1/128"]}, "IPv6"),
                     ({"mode": "allowlist", "ports": [0]}, "ports[0]"),
                     ({"mode": "allowlist", "allowDomains": ["x"] * 300}, "at most 256"),
                     ({"mode": "open", "extra": 1}, "unknown policy field"),
                     ("allowlist", "must be an object")):
        st, out = put(daemon, box, bad)
        assert st == 400 and out["error"] == "InvalidRequest" and msg in out["message"], (bad, out)
    st, out = daemon.call("io.pocketenv.sandbox.putNetworkPolicy", {"id": box}, {})
    assert st == 400, out
    # nothing was stored by the refused ones
    assert get(daemon, box)[1]["isDefault"]
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["Example.ORG", "*.x.org"],
                                "allowCidrs": ["10.124.0.9/24"], "ports": [443]})
    assert st == 200, out
    want = {"mode": "allowlist", "allowDomains": ["example.org", "*.x.org"], "denyDomains": [],
            "allowCidrs": ["10.124.0.0/24"], "denyCidrs": [], "ports": [443]}
    assert out == {"policy": want, "isDefault": False}
    assert get(daemon, box)[1] == {"policy": want, "isDefault": False}
    # overlapping networks and repeated entries are one rule's worth, not an error
    st, out = put(daemon, box, {"mode": "allowlist", "allowCidrs": ["10.0.0.0/8", "10.1.0.0/16",
                                                                  "10.1.0.0/16"],
                                "denyCidrs": ["10.2.0.0/16", "10.2.3.0/24"], "ports": [443, 443]})
    assert st == 200, out
    st, out = put(daemon, box, None)
    assert st == 200 and out["isDefault"], out
    assert get(daemon, box)[1]["isDefault"]


def test_no_policy_keeps_the_open_network(daemon, box):
    """The default for --net nat stays what it was: both hosts by address."""
    put(daemon, box, None)
    reaches(daemon, box, fetch(DNS) + fetch(OTHER), [DNS, OTHER])


def test_allowlist_allows_names_and_blocks_the_rest(daemon, box):
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["allowed.test"]})
    assert st == 200, out
    # the allowed name resolves (through the daemon) and is reachable
    reaches(daemon, box, fetch("allowed.test"), [DNS])
    # a denied name is NXDOMAIN; its address, and one never resolved, blocked
    out = run(daemon, box, "nslookup denied.test 2>&1; echo rc=$?")
    assert "rc=0" not in out and OTHER not in out, out
    assert run(daemon, box, fetch("denied.test") + fetch(OTHER)).split() == []
    # DNS to another resolver (the real one, by address) is answered by ours
    out = run(daemon, box, f"nslookup denied.test {DNS} 2>&1; echo rc=$?")
    assert "rc=0" not in out and OTHER not in out, out
    # a wildcard-less allow does not allow subdomains
    assert run(daemon, box, fetch("also.allowed.test")).split() == []
    log = daemon.log_text()
    assert "event=egress_denied" in log and "name=denied.test" in log


class Stream:
    """A connection from inside the sandbox to target's /stream (a line
    every 0.1 s), its lines timestamped as they arrive."""

    def __init__(self, daemon, box, target):
        sid = daemon.sandbox("getSandbox", box)[1]["sandbox"]["id"]
        self.client = subprocess.Popen(
            [BIN, "--data", daemon.data, "runtime", "exec", sid, "--", "/bin/sh", "-c",
             f"printf 'GET /stream HTTP/1.0\\r\\n\\r\\n' | nc {target} 8000"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        self.got = []
        threading.Thread(target=lambda: self.got.extend(
            (time.monotonic(), line) for line in self.client.stdout), daemon=True).start()

    def __enter__(self):
        # the first lookup may wait out a lost UDP answer on a loaded host
        wait_for(lambda: sum(1 for _, l in self.got if l == b"tick\n") > 5, 30,
                 "the stream to flow")
        return self

    def __exit__(self, *exc):
        kill_tree(self.client)
        self.client.wait()

    def flows_after(self, t):
        """Whether lines still arrive from 0.5 s after t (watched 1.5 s)."""
        time.sleep(max(0, t + 2.0 - time.monotonic()))
        return any(at > t + 0.5 for at, _ in self.got)


def test_none_cuts_an_open_connection_within_a_second(daemon, box):
    st, out = put(daemon, box, {"mode": "allowlist", "allowCidrs": [f"{DNS}/32"]})
    assert st == 200, out
    with Stream(daemon, box, DNS) as stream:
        t0 = time.monotonic()
        st, out = put(daemon, box, {"mode": "none"})
        assert st == 200, out
        changed = time.monotonic()
        assert changed - t0 < 1.0
        assert stream.flows_after(changed) is False
    # and a new connection to the same address is refused at once
    assert run(daemon, box, fetch(DNS)).split() == []


def test_wildcards_ports_and_deny_over_allow(daemon, box):
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["*.allowed.test"],
                                "allowCidrs": [f"{DNS}/32"], "ports": [8000]})
    assert st == 200, out
    # *.name: its subdomains, not the name itself
    reaches(daemon, box, fetch("also.allowed.test"), [OTHER])
    out = run(daemon, box, "nslookup allowed.test 2>&1; echo rc=$?")
    assert "rc=0" not in out, out
    # an allowed address, on an allowed port only
    assert run(daemon, box, fetch(DNS, port=8001)).split() == []
    reaches(daemon, box, fetch(DNS), [DNS])
    # deny wins over allow, for names and for addresses
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["*.allowed.test"],
                                "denyDomains": ["also.allowed.test"],
                                "allowCidrs": ["10.124.0.0/24"], "denyCidrs": [f"{OTHER}/32"]})
    assert st == 200, out
    out = run(daemon, box, "nslookup also.allowed.test 2>&1; echo rc=$?")
    assert "rc=0" not in out and OTHER not in out, out
    assert run(daemon, box, fetch(OTHER)).split() == []
    reaches(daemon, box, fetch(DNS), [DNS])


def test_open_mode_denies_only_what_it_lists(daemon, box):
    st, out = put(daemon, box, {"mode": "open", "denyDomains": ["denied.test"],
                                "denyCidrs": [f"{OTHER}/32"]})
    assert st == 200, out
    reaches(daemon, box, fetch("allowed.test") + fetch(DNS, port=8001), [DNS, DNS])
    assert run(daemon, box, fetch("denied.test") + fetch(OTHER)).split() == []


def test_doh_host_and_raw_sockets_are_under_the_policy(daemon, box):
    """DNS over HTTPS is just a host: not allowed, not reached, by name or by
    address. Raw sockets (busybox ping, CAP_NET_RAW) go through the same
    table."""
    put(daemon, box, None)
    assert run(daemon, box, f"ping -c 1 -W 2 {OTHER} >/dev/null 2>&1; echo rc=$?").split() == \
        ["rc=0"]  # without a policy the host answers pings
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["allowed.test"]})
    assert st == 200, out
    assert run(daemon, box, fetch("doh.test", path="/dns-query?dns=AAAB") +
               fetch(OTHER, path="/dns-query?dns=AAAB")).split() == []
    assert run(daemon, box, f"ping -c 1 -W 2 {OTHER} >/dev/null 2>&1; echo rc=$?").split() == \
        ["rc=1"]


def test_ipv6_is_dropped(daemon, box):
    """Sandboxes have IPv4 only (and no CAP_NET_ADMIN to add IPv6); with a
    policy the table drops any IPv6 but loopback's as well, so an IPv6 route
    that appeared would still carry nothing."""
    st, out = put(daemon, box, {"mode": "open"})
    assert st == 200, out
    sid = daemon.sandbox("getSandbox", box)[1]["sandbox"]["id"]
    pid = json.loads(subprocess.run([BIN, "--data", daemon.data, "runtime", "inspect", sid],
                                    capture_output=True, text=True, check=True).stdout)["pid"]
    rules = subprocess.run(["nsenter", "-t", str(pid), "-n", "nft", "list", "chain", "inet",
                            "pe_egress", "out"], capture_output=True, text=True, check=True).stdout
    assert "meta nfproto ipv6 drop" in rules and "ip6 daddr ::1 accept" in rules, rules
    # the sandbox has no IPv6 address but a link-local one: nothing leaves
    out = run(daemon, box, "ping -6 -c 1 -W 1 ff02::1%eth0 >/dev/null 2>&1; echo rc=$?")
    assert "rc=0" not in out, out


def test_a_name_moving_to_a_denied_address_is_not_followed(daemon, box, internet):
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["flip.test"],
                                "denyCidrs": [f"{OTHER}/32"]})
    assert st == 200, out
    try:
        reaches(daemon, box, fetch("flip.test"), [DNS])
        internet.write_text(ZONE.replace(f"flip.test {DNS}", f"flip.test {OTHER}"))
        # the name now resolves to a denied address: not added, not reached
        assert run(daemon, box, fetch("flip.test")).split() == []
        assert run(daemon, box, fetch(OTHER)).split() == []
    finally:
        internet.write_text(ZONE)


def test_policy_survives_a_restart_of_the_sandbox(daemon, box):
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["allowed.test"]})
    assert st == 200, out
    assert daemon.sandbox("stopSandbox", box)[0] == 200
    daemon.wait_status(box, ["STOPPED"])
    assert daemon.sandbox("startSandbox", box)[0] == 200
    daemon.wait_status(box, ["RUNNING"])
    assert get(daemon, box)[1]["policy"]["allowDomains"] == ["allowed.test"]
    # in force from the first instruction: the address was never resolved
    assert run(daemon, box, fetch(OTHER)).split() == []
    reaches(daemon, box, fetch("allowed.test"), [DNS])


def test_cli_net_policy(daemon, box):
    env = dict(os.environ, POCKETENV_API_URL=daemon.url, POCKETENV_TOKEN=daemon.token,
               HOME=str(daemon.tmp), NO_COLOR="1")

    def cli(*args):
        return subprocess.run([BIN, "net", "policy", *args], capture_output=True, text=True,
                              env=env, timeout=60)
    p = cli(box, "--reset")
    assert p.returncode == 0 and "open (no policy set)" in p.stdout, p
    p = cli(box, "allowlist", "--allow", "allowed.test", "--allow", "10.124.0.0/24",
            "--deny", "denied.test", "--port", "8000")
    assert p.returncode == 0, p
    assert p.stdout.splitlines() == ["mode:   allowlist", "allow:  allowed.test 10.124.0.0/24",
                                     "deny:   denied.test", "ports:  8000"]
    p = cli(box, "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["ports"] == [8000], p
    assert run(daemon, box, fetch(OTHER, port=8001)).split() == []
    reaches(daemon, box, fetch(OTHER), [OTHER])
    p = cli(box, "allowlist", "--port", "99999")
    assert p.returncode == 2 and "65535" in p.stderr, p
    p = cli(box, "sometimes")
    assert p.returncode == 1 and "mode must be" in p.stderr, p
    p = cli("no-such-box")
    assert p.returncode == 1 and "not found" in p.stderr, p
    # limits and egress-only secrets
    p = cli(box, "open", "--max-connections", "7", "--max-rate", "300",
            "--secret", "API_KEY=allowed.test,*.allowed.test")
    assert p.returncode == 0, p
    assert p.stdout.splitlines()[-2:] == ["limits: 7 connections 300 KB/s",
                                          "secret: API_KEY -> allowed.test *.allowed.test"], p
    pol = get(daemon, box)[1]["policy"]
    assert pol["maxConnections"] == 7 and pol["maxRateKBps"] == 300, pol
    assert pol["secrets"] == [{"name": "API_KEY", "hosts": ["allowed.test", "*.allowed.test"]}]
    # (that the limits hold: test_limits_cap_connections_and_bandwidth)
    for bad, msg in ((["--max-connections", "0"], "65535"), (["--max-rate", "x"], "10000000"),
                     (["--secret", "=a.test"], "NAME=HOST")):
        p = cli(box, "open", *bad)
        assert p.returncode == 2 and msg in p.stderr, (bad, p)
    p = cli(box, "open", "--secret", "BAD NAME=a.test")
    assert p.returncode == 1 and "secrets[0].name" in p.stderr, p
    assert cli(box, "--reset").returncode == 0


def test_forwarder_comes_back_after_the_daemon_is_killed(tmp_path, internet):
    """A sandbox outlives a killed daemon; the next daemon adopts it and
    serves its names again, under the same policy."""
    from test_daemon_restart import Served
    s = Served(tmp_path, env=dict(os.environ, POCKETENV_DNS_UPSTREAM=f"{DNS}:53"))
    d = s.start()
    try:
        st, out = d.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "busybox", "name": "kept"})
        assert st == 200, out
        d.wait_status("kept", ["RUNNING"])
        assert put(d, "kept", {"mode": "allowlist", "allowDomains": ["allowed.test"]})[0] == 200
        reaches(d, "kept", fetch("allowed.test"), [DNS])
        s.kill9()
        d = s.start()
        d.wait_status("kept", ["RUNNING"])
        assert run(d, "kept", fetch(OTHER)).split() == []
        reaches(d, "kept", fetch("allowed.test"), [DNS])
    finally:
        if d.proc.poll() is None:
            d.sandbox("deleteSandbox", "kept")
            s.stop()


def test_a_change_keeps_connections_to_names_still_allowed(daemon, box):
    """Also past the name's TTL (the test zone's is 2 s): an open connection
    does not depend on its address staying in the resolved set."""
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["allowed.test"]})
    assert st == 200, out
    with Stream(daemon, box, "allowed.test") as stream:
        assert stream.flows_after(time.monotonic() + 2.5) is True
        # another name allowed besides: the open connection goes on
        st, out = put(daemon, box, {"mode": "allowlist",
                                    "allowDomains": ["allowed.test", "doh.test"]})
        assert st == 200, out
        assert stream.flows_after(time.monotonic()) is True
        # the name is no longer allowed: its address goes, the connection is cut
        st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["doh.test"]})
        assert st == 200, out
        assert stream.flows_after(time.monotonic()) is False


def test_policy_set_at_create_holds_from_the_first_instruction(daemon):
    st, out = daemon.call("io.pocketenv.sandbox.createSandbox",
                          body={"base": "busybox", "name": "badpolicy",
                                "networkPolicy": {"mode": "allowlist", "ports": [0]}})
    assert st == 400 and "networkPolicy: ports[0]" in out["message"], out
    assert daemon.sandbox("getSandbox", "badpolicy")[0] == 404
    st, out = daemon.call("io.pocketenv.sandbox.createSandbox",
                          body={"base": "busybox", "name": "born",
                                "networkPolicy": {"mode": "allowlist",
                                                  "allowDomains": ["Allowed.test"]}})
    assert st == 200, out
    try:
        # asked at once, before or while the sandbox is made: the create's policy
        st, out = get(daemon, "born")
        assert st == 200 and out["policy"]["allowDomains"] == ["allowed.test"], out
        daemon.wait_status("born", ["RUNNING"])
        assert get(daemon, "born")[1]["isDefault"] is False
        assert run(daemon, "born", fetch(OTHER)).split() == []
        reaches(daemon, "born", fetch("allowed.test"), [DNS])
    finally:
        daemon.sandbox("deleteSandbox", "born")


def test_a_name_with_a_dot_inside_a_label_is_not_a_subdomain(daemon, box, internet):
    r"""Labels ["also.allowed", "test"] print as also\.allowed.test, which
    ends like a subdomain of allowed.test but is a name under test: refused,
    never sent upstream."""
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["*.allowed.test"]})
    assert st == 200, out
    log = internet.with_name(internet.name + ".log")
    out = run(daemon, box, r"nslookup 'also\.allowed.test' 2>&1; "
              "nslookup also.allowed.test 2>&1")
    # the proper subdomain went upstream (so the log works), the odd one not
    assert "also.allowed.test\n" in log.read_text(), out
    assert "also\\.allowed.test" not in log.read_text(), out


def test_dns_over_tcp_is_answered_by_the_daemon_too(daemon, box):
    """TCP port 53 to any address reaches the daemon's resolver as well
    (clients fall back to it for long answers): denied names NXDOMAIN,
    allowed ones answered."""
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["allowed.test"]})
    assert st == 200, out

    def ask(name):
        labels = "".join("\\%03o%s" % (len(l), l) for l in name.split("."))
        body = r"\022\064\001\000\000\001\000\000\000\000\000\000" + labels + \
            r"\000\000\001\000\001"
        length = 12 + sum(1 + len(l) for l in name.split(".")) + 1 + 4
        q = "\\000\\%03o" % length + body
        out = run(daemon, box, f"printf '{q}' | nc -w 3 {OTHER} 53 | od -An -tx1 | tr -d '\\n'")
        return out.split()
    a = ask("denied.test")
    assert a[2:4] == ["12", "34"] and int(a[5], 16) & 0x0f == 3, a  # NXDOMAIN
    a = ask("allowed.test")
    assert a[2:4] == ["12", "34"] and int(a[5], 16) & 0x0f == 0, a
    assert a[-4:] == [f"{int(x):02x}" for x in DNS.split(".")], a  # its address


# ---- the name-checking proxy: HTTP Host and TLS SNI ----

def octal(data):
    return "".join("\\%03o" % b for b in data)


def http_get(target, hosts, timeout=3):
    """Shell: a GET for each of hosts (Host header) on one kept-alive
    connection to target:80, the last one closing; prints the bodies
    (address/host served)."""
    hosts = hosts if isinstance(hosts, list) else [hosts]
    reqs = "".join(f"GET / HTTP/1.1\r\nHost: {h}\r\n" +
                   ("Connection: close\r\n" if i == len(hosts) - 1 else "") + "\r\n"
                   for i, h in enumerate(hosts))
    return (f"printf '{octal(reqs.encode())}' | nc -w {timeout} {target} 80 2>/dev/null"
            " | grep -o '10\\.124\\.0\\.[0-9]*/[A-Za-z0-9.:-]*'; echo; ")


def client_hello(name):
    """A real ClientHello (Python's ssl) asking for name, as printf octal."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inb, outb, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return octal(outb.read())


def tls_hello(target, name, timeout=3):
    """Shell: send name's ClientHello to target:443 and print the first
    two bytes of the answer in hex ("16 03": a ServerHello came back)."""
    return (f"printf '{client_hello(name)}' | nc -w {timeout} {target} 443 2>/dev/null"
            " | head -c 2 | od -An -tx1; echo; ")


def test_proxy_refuses_a_denied_host_sharing_an_allowed_address_over_http(daemon, box):
    """shared.test has allowed.test's address: by address the kernel lets
    it through; the proxy reads Host and refuses, on every request of a
    kept-alive connection."""
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["allowed.test"]})
    assert st == 200, out
    reaches(daemon, box, "nslookup allowed.test >/dev/null 2>&1; " + http_get(DNS, "allowed.test"),
            [f"{DNS}/allowed.test"])
    assert run(daemon, box, http_get(DNS, "shared.test")).split() == []
    # an allowed request first, then the denied host on the same connection
    out = run(daemon, box, http_get(DNS, ["allowed.test", "shared.test"])).split()
    assert out == [f"{DNS}/allowed.test"], out
    # an allowed name sent to an address it does not resolve to
    assert run(daemon, box, http_get(OTHER, "allowed.test")).split() == []
    # Host tricks: a second Host, a port, upper case
    two = ("printf 'GET / HTTP/1.1\\r\\nHost: allowed.test\\r\\nHost: shared.test\\r\\n"
           f"Connection: close\\r\\n\\r\\n' | nc -w 3 {DNS} 80 | grep -c 10.124; echo")
    assert run(daemon, box, two).split() == ["0"]
    reaches(daemon, box, http_get(DNS, "Allowed.TEST:80"), [f"{DNS}/Allowed.TEST:80"])
    log = daemon.log_text()
    assert "via=proxy" in log and "name=shared.test addr=10.124.0.2 port=80" in log, log[-3000:]


def test_proxy_refuses_a_denied_host_sharing_an_allowed_address_over_tls(daemon, box):
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["allowed.test"]})
    assert st == 200, out
    reaches(daemon, box, "nslookup allowed.test >/dev/null 2>&1; " + tls_hello(DNS, "allowed.test"),
            ["16", "03"])
    assert run(daemon, box, tls_hello(DNS, "shared.test")).split() == []
    assert run(daemon, box, tls_hello(OTHER, "allowed.test")).split() == []
    # open mode: only what is denied by name
    st, out = put(daemon, box, {"mode": "open", "denyDomains": ["shared.test"]})
    assert st == 200, out
    reaches(daemon, box, tls_hello(OTHER, "denied.test"), ["16", "03"])
    assert run(daemon, box, tls_hello(DNS, "shared.test")).split() == []


def test_proxy_cuts_its_connections_on_a_change(daemon, box):
    """Proxied connections leave from the daemon's socket, not the
    sandbox's: the change is applied to them by the proxy."""
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["allowed.test", "doh.test"]})
    assert st == 200, out
    sid = daemon.sandbox("getSandbox", box)[1]["sandbox"]["id"]
    client = subprocess.Popen(
        [BIN, "--data", daemon.data, "runtime", "exec", sid, "--", "/bin/sh", "-c",
         "nslookup allowed.test >/dev/null 2>&1; printf 'GET /stream HTTP/1.0\\r\\n"
         f"Host: allowed.test\\r\\n\\r\\n' | nc {DNS} 80"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    got = []
    threading.Thread(target=lambda: got.extend((time.monotonic(), l) for l in client.stdout),
                     daemon=True).start()
    try:
        wait_for(lambda: sum(1 for _, l in got if l == b"tick\n") > 5, 30, "the stream to flow")
        st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["allowed.test"]})
        assert st == 200, out
        t = time.monotonic()
        time.sleep(1.5)
        assert any(at > t + 0.5 for at, _ in got), "a change that still allows it cut it"
        st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["doh.test"]})
        assert st == 200, out
        t = time.monotonic()
        time.sleep(2.0)
        assert not any(at > t + 0.5 for at, _ in got), "still flowing after the change"
    finally:
        kill_tree(client)
        client.wait()


def test_denied_attempts_are_readable_by_the_owner(daemon, box):
    """What the resolver and the proxy refused, newest first: time, name,
    address, port (tests/integration/test_daemon.py's matrix checks that no
    one else reads them)."""
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["allowed.test"]})
    assert st == 200, out
    run(daemon, box, "nslookup denied.test >/dev/null 2>&1; " + http_get(DNS, "shared.test"))

    def denials(**params):
        return daemon.call("io.pocketenv.sandbox.getNetworkDenials", {"id": box, **params})
    st, out = denials()
    assert st == 200, out
    got = out["denials"]
    proxy = next(e for e in got if e.get("name") == "shared.test")
    assert proxy["address"] == DNS and proxy["port"] == 80 and proxy["via"] == "proxy", got
    dns = next(e for e in got if e.get("name") == "denied.test")
    assert dns["via"] == "dns" and "address" not in dns, got
    assert got.index(proxy) < got.index(dns)  # newest first
    assert proxy["time"].endswith("Z") and proxy["time"] >= dns["time"], got
    st, out = denials(limit=1)
    assert st == 200 and out["denials"] == [proxy], out
    for bad in (0, 1001, "ten", ""):
        st, out = denials(limit=bad)
        assert st == 400 and out["error"] == "InvalidRequest", out
    st, out = daemon.call("io.pocketenv.sandbox.getNetworkDenials", {"id": "no-such-box"})
    assert st == 404 and out["error"] == "SandboxNotFound", out


def test_limits_cap_connections_and_bandwidth(daemon, box):
    """maxConnections: the one over the cap is refused, and works again once
    one closed; maxRateKBps: a download takes as long as the rate says."""
    for bad, msg in (({"mode": "open", "maxConnections": 0}, "maxConnections must be"),
                     ({"mode": "open", "maxRateKBps": "fast"}, "maxRateKBps must be")):
        st, out = put(daemon, box, bad)
        assert st == 400 and msg in out["message"], out
    st, out = put(daemon, box, {"mode": "allowlist", "allowCidrs": [f"{DNS}/32"],
                                "maxConnections": 2})
    assert st == 200 and out["policy"]["maxConnections"] == 2, out
    reaches(daemon, box, fetch(DNS), [DNS])
    with Stream(daemon, box, DNS), Stream(daemon, box, DNS):
        assert run(daemon, box, fetch(DNS)).split() == []
        run(daemon, box, "killall nc; true")  # the streams' clients in the sandbox
    reaches(daemon, box, fetch(DNS), [DNS])
    # 800 KB at 200 KB/s with 200 KB of burst: 3 s (timed inside, by
    # /proc/uptime; unlimited, it takes milliseconds on a veth)
    st, out = put(daemon, box, {"mode": "allowlist", "allowCidrs": [f"{DNS}/32"],
                                "maxRateKBps": 200})
    assert st == 200, out
    size = 800 * 1024
    got = run(daemon, box, "cut -d' ' -f1 /proc/uptime; "
              f"printf 'GET /big/{size} HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {DNS} 8000 | "
              f"tail -c {size} | wc -c; cut -d' ' -f1 /proc/uptime").split()
    assert got[1] == str(size), got
    assert float(got[2]) - float(got[0]) >= 2.0, got


# ---- egress-only secrets (placeholders) ----

def received(internet, addr, tls=False):
    """Lines "host X-Key" the HTTP (or HTTPS) server at addr received."""
    f = internet.with_name(f"recv-tls-{addr}" if tls else f"recv-{addr}")
    return f.read_text().splitlines() if f.exists() else []


def keyed_get(target, host, timeout=3):
    """Shell: GET / from target:80 with Host host and X-Key: $API_KEY."""
    return (f"printf 'GET / HTTP/1.1\\r\\nHost: {host}\\r\\nX-Key: %s\\r\\n"
            f"Connection: close\\r\\n\\r\\n' \"$API_KEY\" | nc -w {timeout} {target} 80 "
            "2>/dev/null | grep -o '10\\.124\\.0\\.[0-9]*/[A-Za-z0-9.:-]*'; echo; ")


@pytest.fixture(scope="module")
def secret_box(daemon):
    """A sandbox whose API_KEY is egress-only, bound to allowed.test, from
    its create on (so its init never had the value either)."""
    value = "real-" + os.urandom(12).hex()
    st, out = daemon.call("io.pocketenv.sandbox.createSandbox", body={
        "base": "busybox", "name": "secrets",
        "secrets": [{"name": "API_KEY", "value": value}],
        "networkPolicy": {"mode": "allowlist",
                          "allowDomains": ["allowed.test", "shared.test", "flip.test",
                                           "also.allowed.test"],
                          "secrets": [{"name": "API_KEY", "hosts": [
                              "Allowed.test", "flip.test", "also.allowed.test"]}]}})
    assert st == 200, out
    daemon.wait_status("secrets", ["RUNNING"])
    st, out = daemon.call("io.pocketenv.secret.getSecrets",
                          {"sandboxId": daemon.sandbox("getSandbox", "secrets")[1]["sandbox"]["id"]})
    assert st == 200, out
    yield "secrets", value, out["secrets"][0]["id"]
    daemon.sandbox("deleteSandbox", "secrets")


def test_secret_policy_bad_input(daemon, box):
    for bad, msg in (({"mode": "open", "secrets": "x"}, "secrets must be an array"),
                     ({"mode": "open", "secrets": [{"name": "A B", "hosts": []}]}, "secrets[0].name"),
                     ({"mode": "open", "secrets": [{"name": "A", "hosts": ["a..b"]}]}, "empty label"),
                     ({"mode": "open", "secrets": [{"name": "A", "other": 1}]}, "unknown field"),
                     ({"mode": "open", "secrets": [{"name": "A"}] * 65}, "at most 64")):
        st, out = put(daemon, box, bad)
        assert st == 400 and out["error"] == "InvalidRequest" and msg in out["message"], (bad, out)
    st, out = put(daemon, box, {"mode": "open", "secrets": [{"name": "K", "hosts": ["A.test"]}]})
    assert st == 200 and out["policy"]["secrets"] == [{"name": "K", "hosts": ["a.test"]}], out
    # bound while it runs: the CA goes into its trust store at once
    assert run(daemon, box, "head -1 /etc/ssl/certs/pocketenv-egress-ca.pem").split() == [
        "-----BEGIN", "CERTIFICATE-----"]
    put(daemon, box, None)


def test_secret_is_a_placeholder_in_the_sandbox_and_substituted_for_its_host_only(
        daemon, secret_box, internet):
    name, value, sid = secret_box
    placeholder = "PE_SECRET_" + sid[len("secret_"):]
    assert run(daemon, name, "echo $API_KEY").split() == [placeholder]
    # the bound host gets the value; the server saw it, the sandbox did not
    reaches(daemon, name, "nslookup allowed.test >/dev/null 2>&1; " +
            keyed_get(DNS, "allowed.test"), [f"{DNS}/allowed.test"])
    assert f"allowed.test {value}" in received(internet, DNS)
    # another host (allowed, same address) gets the placeholder, logged
    reaches(daemon, name, "nslookup shared.test >/dev/null 2>&1; " +
            keyed_get(DNS, "shared.test"), [f"{DNS}/shared.test"])
    assert f"shared.test {placeholder}" in received(internet, DNS)
    assert not any(value in line for line in received(internet, DNS) if "shared" in line)
    st, out = daemon.call("io.pocketenv.sandbox.getNetworkDenials", {"id": name})
    assert st == 200, out
    assert any(e["via"] == "secret" and e.get("name") == "shared.test" and "API_KEY" in e["reason"]
               for e in out["denials"]), out
    assert value not in json.dumps(out)


def test_secret_value_is_nowhere_in_the_sandbox_nor_the_log(daemon, secret_box):
    name, value, sid = secret_box

    def holders(text):
        """Files of the sandbox and /proc/*/environ holding text (set in
        two halves, so no command line of ours holds it whole)."""
        half = len(text) // 2
        return run(daemon, name, f"A='{text[:half]}'; B='{text[half:]}'; V=$A$B; "
                   "find / \\( -path /proc -o -path /sys \\) -prune -o -type f -print 2>/dev/null"
                   " | while read -r f; do grep -lF \"$V\" \"$f\" 2>/dev/null; done; "
                   "for e in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $e 2>/dev/null | grep -qF \"$V\""
                   " && echo $e; done"
                   ).split()

    # the search finds what is there: the placeholder, in init's environment
    # and in a file the sandbox writes
    placeholder = "PE_SECRET_" + sid[len("secret_"):]
    run(daemon, name, "echo $API_KEY > /tmp/probe")
    found = holders(placeholder)
    assert "/proc/1/environ" in found and "/tmp/probe" in found, found
    assert holders(value) == []
    assert value not in daemon.log_text()


def sandbox_pid(daemon, name):
    sid = daemon.sandbox("getSandbox", name)[1]["sandbox"]["id"]
    p = subprocess.run([BIN, "--data", daemon.data, "runtime", "ls", "--json"],
                       capture_output=True, text=True, check=True)
    return next(s["pid"] for s in json.loads(p.stdout) if s["name"] == sid)


def https_get(daemon, name, cafile, host, addr, key, header_host=None):
    """GET https://host/ (at addr) with X-Key: key, from the sandbox's
    network namespace (its table, its proxy) with OpenSSL verifying against
    cafile: busybox's TLS client in the image cannot do ECDSA. Returns
    (verified, body)."""
    req = f"GET / HTTP/1.0\r\nHost: {header_host or host}\r\nX-Key: {key}\r\n\r\n"
    p = subprocess.run(["nsenter", "-t", str(sandbox_pid(daemon, name)), "-n", "openssl",
                        "s_client", "-quiet", "-connect", f"{addr}:443", "-servername", host,
                        "-CAfile", str(cafile), "-verify_hostname", host, "-verify_return_error"],
                       input=req, capture_output=True, text=True, timeout=30)
    return p.returncode == 0, p.stdout.splitlines()[-1] if p.stdout else ""


@pytest.fixture(scope="module")
def sandbox_ca(daemon, secret_box, internet):
    """The CA certificate installed in secret_box, as a file on the host."""
    name = secret_box[0]
    ca = run(daemon, name, "cat /etc/ssl/certs/pocketenv-egress-ca.pem")
    assert ca.startswith("-----BEGIN CERTIFICATE-----"), ca
    f = internet.with_name("sandbox-ca.pem")
    f.write_text(ca)
    return f


def test_https_to_a_bound_host_is_intercepted_and_substituted(daemon, secret_box, internet,
                                                               sandbox_ca):
    name, value, sid = secret_box
    placeholder = "PE_SECRET_" + sid[len("secret_"):]
    # the sandbox's trust store and variables name its CA
    env = run(daemon, name, "echo $SSL_CERT_FILE $NODE_EXTRA_CA_CERTS $REQUESTS_CA_BUNDLE")
    assert env.split() == ["/etc/ssl/certs/ca-certificates.crt",
                           "/etc/ssl/certs/pocketenv-egress-ca.pem",
                           "/etc/ssl/certs/ca-certificates.crt"], env
    assert sandbox_ca.read_text() in run(daemon, name, "cat /etc/ssl/certs/ca-certificates.crt")
    # the bound host: a leaf of the sandbox's CA for its name, the value put in
    ok, body = https_get(daemon, name, sandbox_ca, "allowed.test", DNS, placeholder)
    assert ok and body == f"tls {DNS}/allowed.test", body
    assert f"allowed.test {value}" in received(internet, DNS, tls=True)
    # shared.test (same address, bound to nothing) is passed through: the
    # server's own certificate (not the sandbox CA's) and the placeholder
    ok, body = https_get(daemon, name, sandbox_ca, "shared.test", DNS, placeholder)
    assert not ok and body == "", body
    # (that server ends without close_notify: OpenSSL's status says so, the
    # body is what counts here)
    ok, body = https_get(daemon, name, internet.with_name("cert.pem"), "shared.test", DNS,
                         placeholder)
    assert body == f"tls {DNS}/shared.test", body
    assert f"shared.test {placeholder}" in received(internet, DNS, tls=True)


def test_https_upstream_certificate_failures_fail_the_request(daemon, secret_box, internet,
                                                              sandbox_ca):
    """flip.test is served with allowed.test's certificate (wrong name),
    also.allowed.test by a CA the daemon does not trust: the proxy refuses
    both, and nothing (the value least of all) reaches those servers."""
    name, value, sid = secret_box
    placeholder = "PE_SECRET_" + sid[len("secret_"):]
    for host, addr in (("flip.test", DNS), ("also.allowed.test", OTHER)):
        ok, body = https_get(daemon, name, sandbox_ca, host, addr, placeholder)
        assert not ok and "tls" not in body, (host, body)
        assert not any(line.startswith(host) for line in received(internet, addr, tls=True))
    st, out = daemon.call("io.pocketenv.sandbox.getNetworkDenials", {"id": name})
    reasons = [(e.get("name"), e["reason"]) for e in out["denials"]]
    assert any(n == "flip.test" and "certificate not accepted" in r for n, r in reasons), reasons
    assert any(n == "also.allowed.test" and "certificate not accepted" in r
               for n, r in reasons), reasons


def test_the_ca_key_is_not_in_the_sandbox(daemon, secret_box, sandbox_ca, tmp_path):
    """No private key in the sandbox's files is the CA's (its public key is
    the certificate's); its own SSH key is there, and is another."""
    name = secret_box[0]
    ca_pub = subprocess.run(["openssl", "x509", "-noout", "-pubkey", "-in", str(sandbox_ca)],
                            capture_output=True, text=True, check=True).stdout
    files = run(daemon, name, "find / \\( -path /proc -o -path /sys \\) -prune -o -type f -print "
                "2>/dev/null | while read -r f; do grep -l 'PRIVATE KEY' \"$f\" 2>/dev/null; done"
                ).split()
    for f in files:
        (tmp_path / "k.pem").write_text(run(daemon, name, f"cat {f}"))
        pub = subprocess.run(["openssl", "pkey", "-pubout", "-in", str(tmp_path / "k.pem")],
                             capture_output=True, text=True).stdout
        assert pub != ca_pub, f
    # and none in any process's environment
    assert run(daemon, name, "cat /proc/[0-9]*/environ | grep -c 'PRIVATE KEY'").split() == ["0"]


def test_an_agent_template_gets_its_default_policy_at_create(daemon, internet):
    """A create from claude-code naming no networkPolicy gets that
    template's allowlist, in force: an allowed registry resolves and is
    reached, a name outside it does not resolve. (The image is busybox's
    root under the template's name: no template is built here.)"""
    images = os.path.join(daemon.data, "images")
    shutil.copytree(os.path.join(images, "busybox"), os.path.join(images, "claude-code"),
                    symlinks=True)
    with open(internet, "a") as f:
        f.write(f"registry.npmjs.org {DNS}\n")
    st, out = daemon.call("io.pocketenv.sandbox.createSandbox",
                          body={"base": "claude-code", "name": "agent"})
    assert st == 200, out
    try:
        assert daemon.wait_status("agent", ["RUNNING", "FAILED"])["status"] == "RUNNING"
        st, out = get(daemon, "agent")
        assert st == 200 and out["isDefault"] is False, out
        assert out["policy"]["mode"] == "allowlist"
        assert {"api.anthropic.com", "registry.npmjs.org"} <= set(out["policy"]["allowDomains"])
        reaches(daemon, "agent", fetch("registry.npmjs.org"), [DNS])
        out = run(daemon, "agent", "nslookup allowed.test 2>&1; echo rc=$?")
        assert "rc=0" not in out and DNS not in out, out
        # an address no allowed name resolved to is refused too
        assert run(daemon, "agent", fetch(OTHER)).split() == []
    finally:
        daemon.sandbox("deleteSandbox", "agent")
        shutil.rmtree(os.path.join(images, "claude-code"))


def test_a_pooled_agent_sandbox_resolves_through_its_policy_from_the_claim(tmp_path, internet):
    """--pool claude-code=1: the filler starts a pooled sandbox's resolver
    and egress proxy ahead (a claim does not). The claimed sandbox's first
    exec already resolves an allowed name and reaches it, a name outside
    the allowlist does not resolve, and an address none resolved to is
    refused. The resolver's threads run at the default priority, not the
    filler's nice 19."""
    from test_pool import pool_metrics
    data = tmp_path / "data"
    subprocess.run([BIN, "--data", str(data), "image", "build", "busybox"], check=True,
                   capture_output=True)
    images = data / "images"
    shutil.copytree(images / "busybox", images / "claude-code", symlinks=True)
    with open(internet, "a") as f:
        f.write(f"registry.npmjs.org {DNS}\n")
    with serving(tmp_path, extra=["--pool", "claude-code=1"],
                 env={"POCKETENV_DNS_UPSTREAM": f"{DNS}:53"}) as d:
        wait_for(lambda: pool_metrics(d, "claude-code").get("ready") == 1, 30, "the pool to fill")
        st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "claude-code"})
        assert st == 200 and sb["status"] == "RUNNING", sb  # the pool's
        reaches(d, sb["id"], fetch("registry.npmjs.org"), [DNS])
        out = run(d, sb["id"], "nslookup allowed.test 2>&1; echo rc=$?")
        assert "rc=0" not in out and DNS not in out, out
        assert run(d, sb["id"], fetch(OTHER)).split() == []
        def niced():
            out = []
            for t in os.listdir(f"/proc/{d.proc.pid}/task"):
                try:
                    with open(f"/proc/{d.proc.pid}/task/{t}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[16]) != 0:
                            out.append(t)
                except FileNotFoundError:
                    pass  # a thread that just ended
            return out
        # The filler alone (nice 19 where it may), once the short-lived
        # helper threads of its refill are gone; a niced resolver stays.
        wait_for(lambda: len(niced()) <= 1, 10, "only the filler to run niced")
        assert d.sandbox("deleteSandbox", sb["id"])[0] == 200


def test_kernel_refusals_are_in_the_denial_log(daemon, box):
    """What only the table sees (a connection by address to a port the
    proxy does not take, IPv6) is in the owner's denial log too (NFLOG in
    the sandbox's namespace)."""
    st, out = put(daemon, box, {"mode": "allowlist", "allowDomains": ["allowed.test"]})
    assert st == 200, out
    assert run(daemon, box, fetch(OTHER, timeout=1)).split() == []
    run(daemon, box, "ping -6 -c 1 -W 1 ff02::1%eth0 >/dev/null 2>&1; true")

    def kernel():
        st, out = daemon.call("io.pocketenv.sandbox.getNetworkDenials", {"id": box})
        assert st == 200, out
        return [e for e in out["denials"] if e["via"] == "kernel"]
    wait_for(lambda: any(e.get("address") == OTHER and e.get("port") == 8000 for e in kernel()),
             10, "the refused TCP connection in the log")
    wait_for(lambda: any(e["reason"] == "IPv6 is dropped" for e in kernel()), 10, "IPv6")
    put(daemon, box, None)


def test_a_bound_name_does_not_carry_the_value_elsewhere(daemon, secret_box, internet,
                                                          sandbox_ca):
    """The value follows the verified destination, not the words of the
    request: a bound Host sent to an address it does not resolve to (open
    mode lets the connection through) gets the placeholder; inside TLS
    terminated for allowed.test, a Host naming another host is refused."""
    name, value, sid = secret_box
    placeholder = "PE_SECRET_" + sid[len("secret_"):]
    st, pol = get(daemon, name)
    try:
        st, out = put(daemon, name, {"mode": "open", "secrets": pol["policy"]["secrets"]})
        assert st == 200, out
        reaches(daemon, name, keyed_get(OTHER, "allowed.test"), [f"{OTHER}/allowed.test"])
        got = received(internet, OTHER)
        assert f"allowed.test {placeholder}" in got and not any(value in g for g in got), got
    finally:
        put(daemon, name, pol["policy"])
    ok, body = https_get(daemon, name, sandbox_ca, "allowed.test", DNS, placeholder,
                         header_host="flip.test")
    # (the server hears nothing but the end: it answers its non-HTTP greeting)
    assert "flip.test" not in body, body
    assert not any(g.startswith("flip.test") for g in received(internet, DNS, tls=True))
    st, out = daemon.call("io.pocketenv.sandbox.getNetworkDenials", {"id": name})
    assert any(e["reason"] == "Host is not the TLS name" and e.get("name") == "flip.test"
               for e in out["denials"]), out
