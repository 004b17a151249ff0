#!/usr/bin/env python3
"""The layer rules of STYLE.md (Architecture, 2), checked on the sources.

1. lib/: a file never includes a header of a layer above its own
   (core -> ev -> runtime/image/store/http/auth/template -> provider ->
   sandbox); nothing in lib/ includes the daemon's or the CLI's headers.
2. daemon/handlers/: a handler file never includes a header (directly or
   through another header) that declares or calls a function defined in
   another handler file. What two handlers share lives below them, in
   daemon/sandbox-*.c or lib/sandbox. The handlers' register functions
   (pe_daemon_register_*), which serve.c calls, are the one exception.
3. Files of daemon/ outside handlers/ call no function defined in a
   handler file, except the register functions, those listed in
   FRONT_ENDS below (another front end reusing a method's work) and those
   in NOT_YET_MOVED.
4. The daemon's files that issue 15 puts behind the sandbox layer
   (RUNTIME_SEAM: the handlers, terminals, the preview proxy, cp and
   backups' archives, housekeeping) call no pe_runtime_ function: they ask
   lib/sandbox, which knows whether a sandbox runs on this host or on a
   provider.

Run by meson's unit suite (tests/meson.build); prints each violation as
file: what, and exits 1 if there is any. Comments are stripped first, so a
name in a comment is not a use. Usage: check-layers.py [SOURCE_ROOT]."""
import os
import re
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))

# Handler functions a daemon-level file may call (file -> names): a front
# end running a method's own work. Keep this short; anything else belongs
# below the handlers.
FRONT_ENDS = {
    # The E2B API runs createSandbox's, getSandbox's, startSandbox's and
    # deleteSandbox's work (handlers/sandbox.h).
    "daemon/e2b.c": {
        "pe_daemon_sandbox_get_work",
        "pe_daemon_sandbox_start_work",
        "pe_daemon_sandbox_delete_work",
        "pe_daemon_sandbox_create_now_work",
    },
}

# Handler functions daemon-level files still call, not yet moved below
# the handlers (docs/design/sandbox.md, status): the /cp object store of
# handlers/copy.c and the backups' expiry of handlers/backup.c. Remove an
# entry when its function moves; never add one.
NOT_YET_MOVED = {
    "daemon/cluster-forward.c": {"pe_daemon_copy_send", "pe_daemon_copy_fetch"},
    "daemon/housekeeping.c": {"pe_daemon_backups_expire", "pe_daemon_copy_expire"},
    "daemon/mcp-tools.c": {"pe_daemon_copy_put", "pe_daemon_copy_take"},
    "daemon/resource-limits.c": {"pe_daemon_copy_usage"},
}

# Files that reach the runtime only through lib/sandbox (rule 4), as
# patterns relative to the root. The rest of daemon/ (supervise.c, pool.c,
# serve.c, sandbox-run.c, ...) still calls it (docs/design/sandbox.md,
# status); add a file here once it no longer does.
RUNTIME_SEAM = ("daemon/handlers/*.c", "daemon/terminal*.c", "daemon/proxy*.c",
                "daemon/sandbox-archive.c", "daemon/housekeeping.c")
RUNTIME_CALL_RE = re.compile(r"\b(pe_runtime_[a-z0-9_]+)\s*\(")

LIB_RANK = {"core": 0, "ev": 1, "runtime": 2, "image": 2, "store": 2, "http": 2, "auth": 2,
            "template": 2, "provider": 3, "sandbox": 4}
PUBLIC_RANK = {"err.h": 0, "ev.h": 1, "runtime.h": 2, "egress.h": 2, "egress-sniff.h": 2,
               "http.h": 2, "auth.h": 2, "atproto.h": 2}  # store*.h: 2 (below)
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
DEF_RE = re.compile(r"^(?!static\b|typedef\b|extern\b|return\b)[a-z_][a-z0-9_ \t\*]*?\b(pe_[a-z0-9_]+)\s*\([^;]*$", re.M)
CALL_RE = re.compile(r"\b(pe_[a-z0-9_]+)\s*\(")


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def read(path):
    with open(path, encoding="utf-8") as f:
        return strip_comments(f.read())


def rel(path):
    return os.path.relpath(path, ROOT)


def sources(top, exts):
    for d, _, files in os.walk(os.path.join(ROOT, top)):
        for f in sorted(files):
            if f.endswith(exts):
                yield os.path.join(d, f)


def resolve(inc, from_file):
    for base in (os.path.dirname(from_file), os.path.join(ROOT, "daemon"), os.path.join(ROOT, "include"),
                 os.path.join(ROOT, "lib"), os.path.join(ROOT, "cli")):
        p = os.path.normpath(os.path.join(base, inc))
        if os.path.isfile(p):
            return p
    return None  # a system or generated header


def header_closure(path, seen=None):
    """path and every header it includes, transitively (project headers only)."""
    seen = set() if seen is None else seen
    for inc in INCLUDE_RE.findall(read(path)):
        p = resolve(inc, path)
        if p and p.endswith(".h") and p not in seen:
            seen.add(p)
            header_closure(p, seen)
    return seen


def lib_rank(path):
    r = rel(path).split(os.sep)
    if r[0] == "lib":
        return LIB_RANK.get(r[1])
    if r[0] == "include" and r[1] == "pocketenv":
        return 2 if r[2].startswith("store") else PUBLIC_RANK.get(r[2])
    if r[0] in ("daemon", "cli"):
        return 5
    return None


def check_lib():
    errors = []
    for f in sources("lib", (".c", ".h")):
        mine = lib_rank(f)
        if mine is None:
            continue
        for inc in INCLUDE_RE.findall(read(f)):
            p = resolve(inc, f)
            theirs = lib_rank(p) if p else None
            if theirs is not None and theirs > mine:
                errors.append(f"{rel(f)}: includes {inc} ({rel(p)}), a layer above its own")
    return errors


def check_daemon():
    errors = []
    handlers = list(sources("daemon/handlers", (".c",)))
    defined_in = {}  # name -> handler file that defines it
    for f in handlers:
        for name in DEF_RE.findall(read(f)):
            defined_in.setdefault(name, f)

    def foreign(name, f):
        owner = defined_in.get(name)
        return owner is not None and owner != f and not name.startswith("pe_daemon_register_")

    for f in handlers:
        for h in sorted(header_closure(f)):
            names = sorted({n for n in CALL_RE.findall(read(h)) if foreign(n, f)})
            if names:
                errors.append(f"{rel(f)}: includes {rel(h)}, which declares or calls "
                              f"{', '.join(names)} of {', '.join(sorted({rel(defined_in[n]) for n in names}))}")
    for f in sources("daemon", (".c",)):
        if rel(f).startswith(os.path.join("daemon", "handlers") + os.sep):
            continue
        allowed = FRONT_ENDS.get(rel(f), set()) | NOT_YET_MOVED.get(rel(f), set())
        called = {n for n in CALL_RE.findall(read(f)) if foreign(n, f)}
        names = sorted(called - allowed)
        if names:
            errors.append(f"{rel(f)}: calls {', '.join(names)}, defined in a handler file "
                          f"({', '.join(sorted({rel(defined_in[n]) for n in names}))})")
        stale = sorted(NOT_YET_MOVED.get(rel(f), set()) - called)
        if stale:
            errors.append(f"{rel(f)}: no longer calls {', '.join(stale)} of a handler file: "
                          f"remove it from NOT_YET_MOVED")
    return errors


def check_runtime_seam():
    import fnmatch

    errors = []
    for f in sources("daemon", (".c",)):
        if not any(fnmatch.fnmatchcase(rel(f), pat) for pat in RUNTIME_SEAM):
            continue
        names = sorted(set(RUNTIME_CALL_RE.findall(read(f))))
        if names:
            errors.append(f"{rel(f)}: calls {', '.join(names)} of the runtime directly "
                          f"(ask lib/sandbox: pe_sandbox_*)")
    return errors


def self_test():
    """The checks find what they are for, in a small tree made here."""
    import tempfile

    global ROOT
    files = {
        "lib/core/x.c": '#include "sandbox/sandbox.h"\n',
        "lib/sandbox/sandbox.h": "int pe_sandbox_f(void);\n",
        "daemon/daemon.h": "int pe_daemon_register_a(void);\n",
        "daemon/a.h": "/* pe_daemon_b_g( in a comment is no use */\nint pe_daemon_a_f(void);\n",
        "daemon/handlers/a.c": '#include "a.h"\nint pe_daemon_a_f(void)\n{\n    return 0;\n}\n'
                               "int pe_daemon_register_a(void)\n{\n    return 0;\n}\n",
        "daemon/handlers/b.c": '#include "daemon.h"\n#include "a.h"\n'
                               "int b(void) { return pe_runtime_oom_kills(0, 0, 0, 0, 0); }\n",
        "daemon/serve.c": '#include "daemon.h"\nint f(void) { return pe_daemon_register_a(); }\n',
        "daemon/pool.c": '#include "a.h"\nint g(void) { return pe_daemon_a_f(); }\n'
                         "int h(void) { return pe_runtime_list(0, 0, 0); }\n",
        "daemon/terminal.c": "/* pe_runtime_exec_start( in a comment is no use */\n"
                             "int t(void) { return pe_runtime_exec_start (0, 0, 0, 0, 0); }\n",
        "daemon/sandbox-archive.c": "int k(void) { return pe_sandbox_layer_dir(0, 0, 0, 0); }\n",
    }
    saved = ROOT
    with tempfile.TemporaryDirectory() as t:
        for name, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(t, name)), exist_ok=True)
            with open(os.path.join(t, name), "w") as f:
                f.write(text)
        ROOT = t
        got = check_lib() + check_daemon() + check_runtime_seam()
        ROOT = saved
    want = ["lib/core/x.c: includes sandbox/sandbox.h",
            "daemon/handlers/b.c: includes daemon/a.h, which declares or calls pe_daemon_a_f",
            "daemon/pool.c: calls pe_daemon_a_f",
            "daemon/handlers/b.c: calls pe_runtime_oom_kills of the runtime directly",
            "daemon/terminal.c: calls pe_runtime_exec_start of the runtime directly"]
    for w in want:
        if not any(g.startswith(w) for g in got):
            print(f"self-test: not found: {w}\n  got: {got}", file=sys.stderr)
            return False
    if len(got) != len(want):
        print(f"self-test: found more than planted: {got}", file=sys.stderr)
        return False
    return True


def main():
    if not self_test():
        return 2
    errors = check_lib() + check_daemon() + check_runtime_seam()
    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} layer violation(s): see STYLE.md, Architecture 2", file=sys.stderr)
        return 1
    print("layers: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
