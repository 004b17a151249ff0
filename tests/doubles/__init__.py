"""Doubles of the remote sandbox providers' APIs, for tests.

    from tests.doubles import start
    with start("daytona") as d:          # serves on 127.0.0.1, random port
        d.url, d.key                     # base URL and the credential it accepts
        d.fault("exec", status=503, times=1)
        ...                              # point a client at d.url with d.key
        d.sandboxes, d.seen("create")    # what it keeps and what it saw

Providers: sprites, daytona, vercel, deno, cloudflare (the bridge Worker), e2b, runloop, hopx, blaxel,
kubernetes (which runs real processes, chrooted in a busybox root), modal (gRPC over h2c).
Each double's module docstring says what it implements and what not;
`_core.Fault` lists the fault kinds, `_core.Interpreter` the commands exec
understands. Run one by hand: python3 -m tests.doubles PROVIDER.
"""
import importlib

PROVIDERS = {
    "sprites": ("sprites", "SpritesDouble"),
    "daytona": ("daytona", "DaytonaDouble"),
    "vercel": ("vercel", "VercelDouble"),
    "deno": ("deno", "DenoDouble"),
    "cloudflare": ("cloudflare", "CloudflareDouble"),
    "e2b": ("e2b", "E2BDouble"),
    "runloop": ("runloop", "RunloopDouble"),
    "hopx": ("hopx", "HopxDouble"),
    "blaxel": ("blaxel", "BlaxelDouble"),
    "kubernetes": ("kubernetes", "KubernetesDouble"),
    "modal": ("modal", "ModalDouble"),
}


def double_class(provider):
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; doubles exist for {sorted(PROVIDERS)}")
    module, cls = PROVIDERS[provider]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def start(provider, key=None, faults=()):
    """Start the double of `provider`; returns it serving (use as a context
    manager or call .stop()). `faults`: dicts of Double.fault arguments."""
    d = double_class(provider)(key=key)
    d.start()
    for f in faults:
        f = dict(f)
        d.fault(f.pop("route"), **f)
    return d
