"""--net nat: egress through the host's NAT, isolation, published ports,
generated /etc files, and cleanup.

Network safety: traffic only ever goes to loopback, to sandboxes, and to an
"upstream" network namespace this file creates (10.123.0.0/30, a test-only
range, with a route on the host for just that /30). Nothing here touches
the host's default route or any firewall rule but our own table's.
"""
import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from conftest import (kill_tree, net_leases, nft_elements, our_veths, run_file,
                      unaccounted_network, wait_for)

UP_HOST = "10.123.0.1"  # host side of the test veth
UP_NS = "10.123.0.2"    # the upstream namespace

SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H)
print("ready", flush=True)
s.serve_forever()
"""


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def start_server(addr, port, netns=None):
    cmd = [sys.executable, "-c", SERVER, addr, str(port)]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert p.stdout.readline() == "ready\n"
    return p


@pytest.fixture
def upstream():
    """An HTTP server in a namespace of its own, reached from the host over a
    veth: yields (server address, port)."""
    tag = os.getpid() % 100000
    ns, host_if, ns_if = f"pt-up-{tag}", f"pt-h-{tag}", f"pt-n-{tag}"
    server = None
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{UP_HOST}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "-n", ns, "addr", "add", f"{UP_NS}/30", "dev", ns_if)
        sh("ip", "-n", ns, "link", "set", ns_if, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        # Replies go back to the host side only (the NAT's address).
        server = start_server(UP_NS, 8000, ns)
        yield UP_NS, 8000
    finally:
        if server:
            kill_tree(server)
            server.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def get(addr, port, timeout=2):
    """Shell snippet: HTTP GET from inside a sandbox. busybox nc, because
    this busybox's wget crashes (SIGSEGV) in any sandbox."""
    return (f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w {timeout} {addr} {port}"
            " | tail -n 1")


def sandbox_addr(pe, name):
    return pe.inspect(name)["network"]["address"]


def bg_exec(pe, name, script):
    return subprocess.Popen(pe.cmd("runtime", "exec", name, "--", "/bin/sh", "-c", script),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def serve_www(pe, name, port=8080, text="hello"):
    return bg_exec(pe, name, f"mkdir -p /www && echo {text} > /www/index.html && "
                             f"exec httpd -f -p {port} -h /www")


def http_get(url, timeout=1):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode()
    except OSError:
        return None


def test_egress_is_masqueraded(pe, upstream):
    addr, port = upstream
    p = pe.sh(get(addr, port, 5), "--net", "nat")
    # The server saw the host's address on its link, not the sandbox's.
    assert p.stdout == UP_HOST


def test_net_none_stays_offline(pe, upstream):
    addr, port = upstream
    p = pe.sh(get(addr, port) + "; ip -o link | grep -c eth0")
    assert p.stdout.split() == ["0"]


def test_sandboxes_cannot_reach_each_other(pe):
    pe.create("a")
    pe.create("b")
    pe.start("a")
    pe.start("b")
    srv = serve_www(pe, "b", text="b-secret")
    try:
        b = sandbox_addr(pe, "b")
        # The host reaches b (so b serves) ...
        wait_for(lambda: http_get(f"http://{b}:8080/") == "b-secret\n", 10, "b's server")
        # ... a does not, neither bridged nor routed through the gateway.
        p = pe.exec("a", "/bin/sh", "-c", get(b, 8080))
        assert p.stdout == "", p.stdout
    finally:
        kill_tree(srv)
        srv.wait()


def test_host_is_unreachable_unless_allowed(pe, upstream):
    srv = start_server(UP_HOST, 8001)
    try:
        p = pe.sh(get(UP_HOST, 8001), "--net", "nat")
        assert p.stdout == ""
        gw = "10.89.0.1"
        p = pe.sh(get(gw, 8001), "--net", "nat")
        assert p.stdout == ""
        p = pe.sh(get(UP_HOST, 8001, 5), "--net", "nat",
                  "--net-allow-host")
        assert p.stdout.startswith("10.89."), p.stderr
    finally:
        kill_tree(srv)
        srv.wait()


def test_published_port(pe):
    pe.create("web", "--publish", "8080")
    p = pe.start("web")
    ports = pe.inspect("web")["network"]["ports"]
    assert len(ports) == 1 and ports[0]["port"] == 8080 and ports[0]["host"] > 0
    host = ports[0]["host"]
    assert f"127.0.0.1:{host}" in p.stdout
    srv = serve_www(pe, "web")
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{host}/") == "hello\n", 10,
                 "the published port to serve")
    finally:
        kill_tree(srv)
        srv.wait()
    # Stop releases the port; the next start chooses again.
    pe.run("runtime", "stop", "web", check=True)
    assert pe.inspect("web")["network"] is None
    assert not any(f"port-{host}" == c for c in os.listdir("/run/pocketenv/net"))


def test_explicit_host_port_and_conflict(pe):
    pe.create("p1", "-p", "28123:80")
    pe.create("p2", "-p", "28123:80")
    pe.start("p1")
    assert pe.inspect("p1")["network"]["ports"] == [{"host": 28123, "port": 80}]
    p = pe.run("runtime", "start", "p2")
    assert p.returncode != 0 and "28123" in p.stderr
    assert pe.inspect("p2")["status"] != "running"
    srv = serve_www(pe, "p1", port=80, text="p1")
    try:
        wait_for(lambda: http_get("http://127.0.0.1:28123/") == "p1\n", 10, "port 28123")
    finally:
        kill_tree(srv)
        srv.wait()


def test_etc_files_and_hostname(pe):
    pe.create("named")
    pe.start("named")
    addr = sandbox_addr(pe, "named")
    p = pe.exec("named", "/bin/sh", "-c", "hostname; cat /etc/hosts; "
                "echo x > /etc/hosts; echo rc=$?; head -1 /etc/resolv.conf")
    lines = p.stdout.splitlines()
    assert lines[0] == "named"
    assert f"{addr}\tnamed" in p.stdout
    assert "rc=0" not in p.stdout  # read-only bind
    assert "pocketenv" in p.stdout
    # Both are bound from the run directory's tmpfs, made again at each
    # start; the removal takes them.
    d = os.path.join(pe.data, "sandboxes", "named")
    made = [run_file(d, ext) for ext in ("resolv.conf", "hosts")]
    with open(made[1]) as f:
        assert f"{addr}\tnamed" in f.read()
    assert not os.path.exists(os.path.join(d, "hosts"))
    pe.run("runtime", "rm", "named", check=True)
    assert not any(os.path.exists(f) for f in made)


def test_rm_leaves_nothing(pe):
    pe.create("gone", "--publish", "80", "--net-allow-host")
    pe.start("gone")
    net = pe.inspect("gone")["network"]
    assert net["veth"] in our_veths()
    assert any(net["address"] in e[1] for e in nft_elements())
    pe.run("runtime", "rm", "gone", check=True)
    assert not net_leases(pe.data)
    assert not any(net["address"] in e[1] for e in nft_elements())
    wait_for(lambda: net["veth"] not in our_veths(), 10, "the veth to go with its netns")
    assert unaccounted_network() == []


def test_killed_run_is_collected(pe):
    proc = subprocess.Popen(pe.cmd("run", "--image", pe.image, "--net", "nat", "-p", "80",
                                   "--", "sleep", "100"), start_new_session=True)
    try:
        lease = wait_for(lambda: net_leases(pe.data), 10, "the run's lease")[0]["lease"]
        wait_for(lambda: lease["veth"] in our_veths(), 10, "the run's veth")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def collected():
        pe.run("runtime", "gc")
        return not net_leases(pe.data) and lease["veth"] not in our_veths()
    wait_for(collected, 10, "gc to release the killed run's network")
    assert not any(lease["address"] in e[1] for e in nft_elements())
    assert unaccounted_network() == []
