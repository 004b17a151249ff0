"""Opt-in live mode of the provider conformance checks: the same adapter
steps as test_provider_conformance.py, against the real service, for each
provider whose credentials are in the environment. Skipped otherwise;
never run in CI here (this machine cannot reach the providers, and tests
send traffic to loopback only unless a person asks for this).

    PE_LIVE_DAYTONA_KEY=...                      [PE_LIVE_DAYTONA_URL=...]
    PE_LIVE_SPRITES_KEY=...
    PE_LIVE_DENO_KEY=...
    PE_LIVE_VERCEL_KEY=... PE_LIVE_VERCEL_ORG=team_... PE_LIVE_VERCEL_PROJECT=prj_...
    PE_LIVE_CLOUDFLARE_KEY=... PE_LIVE_CLOUDFLARE_URL=https://<your bridge Worker>

Each run creates one sandbox and removes it at the end, even on failure.
Only what a real service can be asked without a double is checked: the
lifecycle, exec with stdout/stderr/exit code, a streamed exec, a file
written and read back, and the standard error of a capability not declared.
"""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PE_BUILD", os.path.join(ROOT, "build"))
DRIVE = os.path.join(BUILD, "tests", "provider-drive")
PROVIDERS = ["blaxel", "cloudflare", "daytona", "deno", "e2b", "hopx", "runloop", "sprites", "vercel"]
WORKDIR = {"cloudflare": "/workspace"}


def live_env(provider):
    up = provider.upper()
    if not os.environ.get(f"PE_LIVE_{up}_KEY"):
        pytest.skip(f"live mode: set PE_LIVE_{up}_KEY (see this file's docstring)")
    env = dict(os.environ, PE_PROVIDER_KEY=os.environ[f"PE_LIVE_{up}_KEY"],
               PE_PROVIDER_TIMEOUT_MS="60000", PE_PROVIDER_CREATE_TIMEOUT_MS="300000")
    for var in ("URL", "ORG", "PROJECT", "PORTS"):
        if os.environ.get(f"PE_LIVE_{up}_{var}"):
            env[f"PE_PROVIDER_{var}"] = os.environ[f"PE_LIVE_{up}_{var}"]
    return env


def drive(provider, env, *args, ok=True):
    r = subprocess.run([DRIVE, provider, *args], capture_output=True, text=True, env=env, timeout=600)
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert lines, r.stderr
    if ok:
        assert r.returncode == 0, lines[-1]
    else:
        assert r.returncode == 1, lines[-1]
    return lines[-1] if len(lines) == 1 else lines


@pytest.mark.parametrize("provider", PROVIDERS)
def test_live(provider):
    env = live_env(provider)
    sid = drive(provider, env, "create", "pe-live")["id"]
    try:
        assert drive(provider, env, "status", sid)["state"] == "running"
        r = drive(provider, env, "exec", sid, "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (r["exit_code"], r["stdout"], r["stderr"]) == (3, "out\n", "err\n")
        lines = drive(provider, env, "stream", sid, "sh", "-c", "echo a; sleep 1; echo b")
        assert "".join(x.get("data", "") for x in lines) == "a\nb\n" and lines[-1] == {"exit_code": 0}
        path = WORKDIR.get(provider, "/tmp") + "/pe-live.txt"
        drive(provider, env, "write", sid, path, "hello")
        assert drive(provider, env, "read", sid, path)["data"] == "hello"
        err = drive(provider, env, "pause", sid, ok=False)
        assert err == {"error": "ENOTCAP", "message": f"not supported by {provider}: pause"}
    finally:
        drive(provider, env, "remove", sid)
