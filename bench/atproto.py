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
    return f"{statistics.median(xs) * 1000:.1f} | {p(0.1) * 1000:.1f} | {p(0.9) * 1000:.1f}"


def timed(fn):
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


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
    import pathlib
    res = {k: [] for k in ("login", "owner", "first-owner", "first-signed", "cold", "warm")}
    try:
        with serving(pathlib.Path(tmp), extra=extra, check_leaks=False) as d:
            token = t.sign_in(d, pds, "alice.test")
            d.others = [token]
            for _ in range(n):
                res["login"].append(timed(lambda: t.post_json(f"{d.url}/oauth/login",
                                                              {"handle": "alice.test"})))
                res["owner"].append(timed(lambda: d.call("io.pocketenv.actor.getProfile")))
            for _ in range(n):
                t.restart_daemon(d, extra)
                res["first-owner"].append(timed(lambda: d.call("io.pocketenv.actor.getProfile")))
                res["first-signed"].append(timed(lambda: d.call("io.pocketenv.actor.getProfile",
                                                                token=token)))
                for kind in ("cold", "warm"):
                    t0 = time.monotonic()
                    st, sb = d.call("io.pocketenv.sandbox.createSandbox",
                                    body={"base": "busybox"}, token=token)
                    assert st == 200, sb
                    wait_for(lambda: (t.record_state(d, token, sb["id"]) or {}).get("state")
                             == "synced", 60, "record")
                    res[kind].append(time.monotonic() - t0)
                    d.sandbox("deleteSandbox", sb["id"], token=token)
    finally:
        dns.close()
        pds.close()
    print(f"AT Protocol sign-in, {n} rounds (ms: median | p10 | p90)\n")
    print("| what | ms |\n|---|---|")
    for k, label in [("login", "POST /oauth/login (resolve + discovery + PAR)"),
                     ("owner", "peer: getProfile, owner's token"),
                     ("first-owner", "first call after a restart, owner's token"),
                     ("first-signed", "first call after a restart, signed-in user's token"),
                     ("cold", "createSandbox -> record written, cold session (restore + refresh)"),
                     ("warm", "createSandbox -> record written, warm session")]:
        print(f"| {label} | {ms(res[k])} |")


if __name__ == "__main__":
    main()
