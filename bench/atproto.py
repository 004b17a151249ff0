#!/usr/bin/env python3
"""What AT Protocol sign-in costs (issue 18), against a real PDS and PLC
directory on loopback (tests/atproto/pds.mjs) and a real `pocketenv serve`.

1. POST /oauth/login: resolve the handle (DNS TXT, PLC), discover the
   authorization server, PAR. Peer: getProfile with the owner's token.
2. The first API call with the token sign-in gave vs with the owner's
   did:key token (both HS256 JWTs checked locally: sign-in adds nothing
   per call; printed to show it).
3. createSandbox -> its record written, for a cold session (the daemon
   just restarted: the sealed session restored, the authorization server
   discovered again, a refresh) against a warm one (the next sandbox).

Each for both kinds of client: the loopback client, and the confidential
web client (--atproto-public-url; every call to the authorization server
carries a client assertion, and the PDS fetches our metadata document and
JWKS, here routed to the daemon on loopback as the tests do).

The user's part of the sign-in (the PDS's page in headless chromium) runs
once and is not timed. Prints markdown; asserts nothing (STYLE rule 21).
As root: bench/atproto.py [-n ROUNDS] (after ninja -C build).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("PE_BUILD", os.path.join(HERE, "..", "build"))

from atproto_pds import DnsTxt, Pds  # noqa: E402
from conftest import wait_for  # noqa: E402
import test_atproto as t  # noqa: E402
from test_daemon import serving  # noqa: E402


def ms(xs):
    xs = sorted(xs)
    p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    return f"{statistics.median(xs) * 1000:.1f} ({p(0.1) * 1000:.1f}-{p(0.9) * 1000:.1f})"


def timed(fn):
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


WEB = "https://pocketenv.home.arpa"  # routed to the daemon on loopback (tests' stand-in)


def sign_in_web(d, pds, handle):
    """t.sign_in for a daemon that is a web client at WEB."""
    st, started = t.post_json(f"{d.url}/oauth/login", {"handle": handle})
    assert st == 200, started
    got = t.sign_in_in_browser(started["url"], pds.accounts[handle]["password"],
                               f"{WEB}/oauth/callback", follow=True,
                               proxy={"from": WEB, "to": d.url})
    assert f"Signed in as @{handle}" in got["page"], got
    st, out = t.post_json(f"{d.url}/oauth/token", {"pickup": started["pickup"]})
    assert st == 200, out
    return out["token"]


def rounds(d, token, extra, n, res, kind):
    """n rounds of each measure on daemon d (a kind of client), into res."""
    for _ in range(n):
        res[f"login-{kind}"].append(timed(lambda: t.post_json(f"{d.url}/oauth/login",
                                                              {"handle": "alice.test"})))
        res["owner"].append(timed(lambda: d.call("io.pocketenv.actor.getProfile")))
    for _ in range(n):
        t.restart_daemon(d, extra)
        res["first-owner"].append(timed(lambda: d.call("io.pocketenv.actor.getProfile")))
        res[f"first-{kind}"].append(timed(lambda: d.call("io.pocketenv.actor.getProfile",
                                                         token=token)))
        for state in ("cold", "warm"):
            t0 = time.monotonic()
            st, sb = d.call("io.pocketenv.sandbox.createSandbox",
                            body={"base": "busybox"}, token=token)
            assert st == 200, sb
            wait_for(lambda: (t.record_state(d, token, sb["id"]) or {}).get("state")
                     == "synced", 60, "record")
            res[f"{state}-{kind}"].append(time.monotonic() - t0)
            d.sandbox("deleteSandbox", sb["id"], token=token)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10, help="rounds")
    n = ap.parse_args().n
    tmp = tempfile.mkdtemp(prefix="pocketenv-bench-atproto-")
    pds = Pds(os.path.join(tmp, "pds"), [("alice.test", "alice-password-1")])
    dns = DnsTxt()
    dns.records["_atproto.alice.test"] = [f"did={pds.accounts['alice.test']['did']}"]
    extra = ["--atproto-plc", pds.plc, "--atproto-dns", dns.addr, "--atproto-insecure-http",
             "--atproto-allow-private"]
    web = extra + ["--atproto-public-url", WEB]
    import pathlib
    res = {k: [] for k in ("owner", "first-owner")}
    for kind in ("loopback", "web"):
        for k in ("login", "first", "cold", "warm"):
            res[f"{k}-{kind}"] = []
    try:
        # The two kinds of client, one daemon each, one after the other
        # (the same PDS, the same machine, within one run).
        os.mkdir(os.path.join(tmp, "loopback"))
        with serving(pathlib.Path(tmp, "loopback"), extra=extra, check_leaks=False) as d:
            res["login0-loopback"] = [timed(lambda: t.post_json(f"{d.url}/oauth/login",
                                                                {"handle": "alice.test"}))]
            token = t.sign_in(d, pds, "alice.test")
            d.others = [token]
            rounds(d, token, extra, n, res, "loopback")
        os.mkdir(os.path.join(tmp, "web"))
        with serving(pathlib.Path(tmp, "web"), extra=web, check_leaks=False) as d:
            pds.command("route", origin=WEB, to=d.url)
            # The PDS has not seen this client yet: it fetches our metadata
            # document and JWKS during this PAR.
            res["login0-web"] = [timed(lambda: t.post_json(f"{d.url}/oauth/login",
                                                           {"handle": "alice.test"}))]
            token = sign_in_web(d, pds, "alice.test")
            d.others = [token]
            rounds(d, token, web, n, res, "web")
    finally:
        dns.close()
        pds.close()
    print(f"AT Protocol sign-in, {n} rounds (ms: median (p10-p90))\n")
    print("| what | loopback client | web client (private_key_jwt) |\n|---|---|---|")
    for k, label in [("login0", "first POST /oauth/login of the daemon (once)"),
                     ("login", "POST /oauth/login (resolve + discovery + PAR)"),
                     ("first", "first call after a restart, signed-in user's token"),
                     ("cold", "createSandbox -> record written, cold session (restore + refresh)"),
                     ("warm", "createSandbox -> record written, warm session")]:
        print(f"| {label} | {ms(res[k + '-loopback'])} | {ms(res[k + '-web'])} |")
    print(f"| peer: getProfile, owner's token | {ms(res['owner'])} | |")
    print(f"| peer: first call after a restart, owner's token | {ms(res['first-owner'])} | |")


if __name__ == "__main__":
    main()
