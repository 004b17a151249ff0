"""What every provider double shares: the server thread, the request log,
fault injection, credential checking, an in-memory filesystem and the toy
command interpreter that stands in for a sandbox's processes.

A double never runs anything for real (kubernetes.py, whose Pods run real
commands in a chroot, is the exception): it keeps its sandboxes in memory and
answers exec with what `Interpreter` makes of the command (see its
docstring for the exact, small language it understands). It listens on
127.0.0.1 only.
"""
import asyncio
import fnmatch
import json
import posixpath
import re
import secrets
import shlex
import threading
import time

from aiohttp import web

LOOPBACK = "127.0.0.1"  # network safety: a double never listens anywhere else
CONTROL = "/__double__"  # the test's own endpoints on every double


# ---------------------------------------------------------------- faults

class Fault:
    """One injected fault. `route` is a route name of the double (e.g.
    "create", "exec", "fs.read"; `*` wildcards allowed; a name with a
    `:variant` is also matched by its part before the colon). Kinds (one fault may
    combine a delay with one of the others):
      delay=S        wait S seconds, then answer normally
      hang=True      never answer (the client's timeout must fire)
      status=N       answer N with the provider's error shape (5xx, 429...);
                     retry_after=S adds a Retry-After header; code=/message=
                     set the error's code and message
      unauthorized   answer the provider's 401, whatever the credential
      garbage=True   answer 200 with a body that is not what the API speaks
      reset=True     close the connection without an answer
      drop_after=N   streams/WebSockets: cut the connection (no close frame,
                     no end of stream) after N messages/chunks of output
      chunk_delay=S  streams/WebSockets: send output in small pieces, S apart
    `times` limits how many requests it hits (None = every one)."""

    KINDS = ("delay", "hang", "status", "retry_after", "code", "message", "unauthorized",
             "garbage", "reset", "drop_after", "chunk_delay")

    def __init__(self, route, times=None, **kind):
        unknown = set(kind) - set(self.KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {self.KINDS}")
        self.route = route
        self.times = times
        self.kind = kind
        self.hits = 0

    def matches(self, route):
        # "fs.read:bulk" is one of the routes named "fs.read"
        route = route or ""
        return (fnmatch.fnmatchcase(route, self.route) or fnmatch.fnmatchcase(route.split(":")[0], self.route)) and \
            (self.times is None or self.hits < self.times)

    def as_dict(self):
        return {"route": self.route, "times": self.times, "hits": self.hits, **self.kind}


# ---------------------------------------------------------------- filesystem

class FsError(Exception):
    def __init__(self, code, path, message=None):
        super().__init__(message or f"{code}: {path}")
        self.code = code  # ENOENT, EISDIR, ENOTDIR, ENOTEMPTY, EEXIST
        self.path = path


class MemFS:
    """A sandbox's filesystem: absolute normalized paths to bytes, plus
    directories. Modes and times are kept only to answer stat/list."""

    def __init__(self, dirs=("/", "/tmp", "/root", "/home")):
        self.files = {}  # path -> bytearray
        self.meta = {}  # path -> {"mode": int, "mtime": float}
        self.dirs = set()
        for d in dirs:
            self.mkdir(d, parents=True)

    def clone(self):
        """An independent copy: what a snapshot keeps, and what a sandbox
        made from one starts with."""
        c = MemFS(dirs=())
        c.files = {k: bytearray(v) for k, v in self.files.items()}
        c.meta = {k: dict(v) for k, v in self.meta.items()}
        c.dirs = set(self.dirs)
        return c

    @staticmethod
    def norm(path, cwd="/"):
        if not path:
            raise FsError("EINVAL", path, "empty path")
        p = posixpath.normpath(posixpath.join(cwd or "/", path))
        return "/" + p.lstrip("/")

    def is_dir(self, p):
        return p in self.dirs

    def exists(self, p):
        return p in self.files or p in self.dirs

    def mkdir(self, p, parents=False, mode=0o755):
        p = self.norm(p)
        if p in self.files:
            raise FsError("EEXIST", p)
        parent = posixpath.dirname(p)
        if p != "/" and parent not in self.dirs:
            if not parents:
                raise FsError("ENOENT", parent)
            self.mkdir(parent, parents=True)
        if p not in self.dirs:
            self.dirs.add(p)
            self.meta[p] = {"mode": mode, "mtime": time.time()}

    def write(self, p, data, parents=True, mode=0o644, append=False):
        p = self.norm(p)
        if p in self.dirs:
            raise FsError("EISDIR", p)
        parent = posixpath.dirname(p)
        if parent not in self.dirs:
            if parent in self.files:
                raise FsError("ENOTDIR", parent)
            if not parents:
                raise FsError("ENOENT", parent)
            self.mkdir(parent, parents=True)
        if append and p in self.files:
            self.files[p] += bytes(data)
        else:
            self.files[p] = bytearray(data)
        self.meta[p] = {"mode": mode if not append else self.meta.get(p, {}).get("mode", mode),
                        "mtime": time.time()}

    def read(self, p):
        p = self.norm(p)
        if p in self.dirs:
            raise FsError("EISDIR", p)
        if p not in self.files:
            raise FsError("ENOENT", p)
        return bytes(self.files[p])

    def stat(self, p):
        p = self.norm(p)
        if p in self.dirs:
            return {"path": p, "name": posixpath.basename(p) or "/", "is_dir": True, "size": 0,
                    **self.meta.get(p, {"mode": 0o755, "mtime": 0})}
        if p in self.files:
            return {"path": p, "name": posixpath.basename(p), "is_dir": False,
                    "size": len(self.files[p]), **self.meta[p]}
        raise FsError("ENOENT", p)

    def list(self, p):
        p = self.norm(p)
        if p in self.files:
            raise FsError("ENOTDIR", p)
        if p not in self.dirs:
            raise FsError("ENOENT", p)
        prefix = p.rstrip("/") + "/"
        names = {x for x in list(self.files) + list(self.dirs)
                 if x != p and x.startswith(prefix) and "/" not in x[len(prefix):]}
        return [self.stat(x) for x in sorted(names)]

    def remove(self, p, recursive=False):
        p = self.norm(p)
        if p in self.files:
            del self.files[p]
            self.meta.pop(p, None)
            return
        if p not in self.dirs:
            raise FsError("ENOENT", p)
        if p == "/":
            raise FsError("EPERM", p)
        prefix = p.rstrip("/") + "/"
        inside = [x for x in list(self.files) + list(self.dirs) if x.startswith(prefix)]
        if inside and not recursive:
            raise FsError("ENOTEMPTY", p)
        for x in inside:
            self.files.pop(x, None)
            self.dirs.discard(x)
            self.meta.pop(x, None)
        self.dirs.discard(p)
        self.meta.pop(p, None)

    def snapshot(self):
        return {k: bytes(v) for k, v in self.files.items()}


# ---------------------------------------------------------------- toy exec

SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/bash", "zsh", "/bin/zsh"}


class Interpreter:
    """The double's stand-in for running a command. It understands exactly:

    * argv whose argv[0] is a shell (`sh`, `bash`, `/bin/sh`, `/bin/bash`)
      with `-c SCRIPT` (or `-lc`, or `-l -c`): SCRIPT is interpreted as below; any other
      argv is run as one command (no shell parsing of its words).
    * a script: commands separated by `;`, `&&`, `||` or newlines; words
      split like the shell does (quotes, backslashes) but WITHOUT variable
      expansion, globbing, pipes or command substitution (`|`, `$(`, a
      backquote: exit 2 with "unsupported" on stderr).
    * redirections on a command: `>&2` / `1>&2` (stdout to stderr),
      `2>&1`, `> FILE`, `>> FILE`, `2>/dev/null`.
    * commands: `echo [-n] WORDS`, `printf FORMAT [ARGS]` (%s, %d, %%, and
      \\n \\t \\\\ escapes), `cat [FILE...]` (no FILE: stdin), `exit [N]`,
      `true`, `false`, `env` (the environment, sorted KEY=VALUE lines),
      `printenv NAME`, `export NAME=VALUE`, `pwd`, `cd DIR`, `ls [DIR]`,
      `rm [-r] [-f] PATH...`, `mkdir [-p] DIR...`, `chmod OCTAL PATH...`,
      `sleep SECONDS` (at most
      60), `test -e|-f|-d PATH`.
    * a program of the sandbox's image: a file NAME in /usr/local/bin,
      /usr/bin, /usr/sbin or /bin (or the path given) whose first line is
      `#!double-program PROG` runs PROGRAMS[PROG] (the double's stand-ins
      for programs it cannot run, e.g. a fake tailscale pair).
      Anything else: "NAME: command not found" on stderr, exit 127.
    Output is emitted through `out(fd, bytes)` as each command runs, so
    `echo a; sleep 1; echo b` streams two pieces a second apart."""

    def __init__(self, fs, env=None, cwd="/"):
        self.fs = fs
        self.env = dict(env or {})
        self.cwd = cwd or "/"
        self.exited = False  # a script ran `exit`
        self._exit_code = 0

    async def run_argv(self, argv, out, stdin=None):
        argv = list(argv)
        if not argv:
            await out(2, b"double: empty command\n")
            return 127
        if argv[0] in SHELLS:
            # a login or interactive flag first, as E2B's SDK sends (`bash -l -c`)
            while len(argv) >= 4 and argv[1] in ("-l", "-i", "--login"):
                del argv[1]
            if len(argv) >= 3 and argv[1] in ("-c", "-lc", "-ic"):
                return await self.run_script(argv[2], out, stdin)
            if len(argv) == 1 and stdin is not None:
                return await self.run_script((await stdin.read_all()).decode(errors="replace"), out, None)
        code = await self._command(argv, out, stdin)
        if code is _EXIT:
            self.exited = True
            return self._exit_code
        return code

    async def run_script(self, script, out, stdin=None):
        for bad in ("|", "$(", "`"):
            if bad in script.replace("||", ""):
                await out(2, f"double: unsupported shell syntax {bad!r} (see tests/doubles/_core.py)\n".encode())
                return 2
        try:
            lex = shlex.shlex(script.replace("\n", " ; "), posix=True, punctuation_chars=";&|<>")
            lex.whitespace_split = True
            tokens = list(lex)
        except ValueError as e:
            await out(2, f"sh: syntax error: {e}\n".encode())
            return 2
        code = 0
        cmd, op = [], ";"
        i = 0
        while i <= len(tokens):
            tok = tokens[i] if i < len(tokens) else ";"
            if tok in (";", "&&", "||"):
                if cmd:
                    if op == ";" or (op == "&&" and code == 0) or (op == "||" and code != 0):
                        code = await self._redirected(cmd, out, stdin)
                        if code is _EXIT:
                            self.exited = True
                            return self._exit_code
                cmd, op = [], tok
            else:
                cmd.append(tok)
            i += 1
        return code

    async def _redirected(self, words, out, stdin):
        # fold redirections out of the words
        argv, target = [], None
        fdmap = {1: 1, 2: 2}
        i = 0
        while i < len(words):
            w = words[i]
            nxt = words[i + 1] if i + 1 < len(words) else None
            if w.isdigit() and nxt in (">", ">>", ">&"):
                fd = int(w)
                i += 1
                w, nxt = nxt, words[i + 1] if i + 1 < len(words) else None
            else:
                fd = 1
            if w == ">&" and nxt in ("1", "2"):
                fdmap[fd] = int(nxt)
                i += 2
                continue
            if w in (">", ">>") and nxt is not None:
                if nxt == "/dev/null":
                    fdmap[fd] = None
                else:
                    target = (fd, nxt, w == ">>")
                    fdmap[fd] = "file"
                i += 2
                continue
            argv.append(w)
            i += 1
        captured = bytearray()

        async def rout(fd, data):
            dest = fdmap.get(fd, fd)
            if dest is None:
                return
            if dest == "file":
                captured.extend(data)
                return
            await out(dest, data)

        code = await self._command(argv, rout, stdin)
        if target is not None:
            try:
                self.fs.write(self.fs.norm(target[1], self.cwd), bytes(captured), append=target[2])
            except FsError as e:
                await out(2, f"sh: {target[1]}: {e.code}\n".encode())
                return 1
        return code

    async def _command(self, argv, out, stdin):
        name, args = argv[0], argv[1:]
        if name in SHELLS and len(argv) >= 3:  # a script in a script (`bash -l -c '...'`)
            sub = Interpreter(self.fs, self.env, self.cwd)
            return await sub.run_argv(argv, out, stdin)
        fn = getattr(self, "_c_" + name, None) if re.fullmatch(r"[a-z]+", name) else None
        if fn is None:
            prog = self._program(name)
            if prog is not None:
                return await prog(self, args, out)
            await out(2, f"sh: {name}: command not found\n".encode())
            return 127
        return await fn(args, out, stdin)

    def _program(self, name):
        """The stand-in program an image file for `name` names, or None."""
        paths = [name] if "/" in name else [f"{d}/{name}" for d in PROGRAM_DIRS]
        for p in paths:
            try:
                head = self.fs.read(self.fs.norm(p, self.cwd)).split(b"\n", 1)[0].decode(errors="replace")
            except FsError:
                continue
            if head.startswith(PROGRAM_MAGIC):
                return PROGRAMS.get(head[len(PROGRAM_MAGIC):].strip())
        return None

    # each builtin: (args, out, stdin) -> exit code
    async def _c_echo(self, args, out, stdin):
        newline = True
        if args[:1] == ["-n"]:
            newline, args = False, args[1:]
        await out(1, (" ".join(args) + ("\n" if newline else "")).encode())
        return 0

    async def _c_printf(self, args, out, stdin):
        if not args:
            await out(2, b"printf: usage: printf format [arguments]\n")
            return 2
        fmt, vals = args[0], list(args[1:])
        res, i = [], 0
        while i < len(fmt):
            c = fmt[i]
            if c == "\\" and i + 1 < len(fmt):
                res.append({"n": "\n", "t": "\t", "\\": "\\", "r": "\r"}.get(fmt[i + 1], fmt[i:i + 2]))
                i += 2
            elif c == "%" and i + 1 < len(fmt):
                spec = fmt[i + 1]
                if spec == "%":
                    res.append("%")
                elif spec in "sd":
                    res.append(vals.pop(0) if vals else ("" if spec == "s" else "0"))
                else:
                    res.append(fmt[i:i + 2])
                i += 2
            else:
                res.append(c)
                i += 1
        await out(1, "".join(res).encode())
        return 0

    async def _c_cat(self, args, out, stdin):
        if not args:
            if stdin is not None:
                async for chunk in stdin:
                    await out(1, chunk)
            return 0
        code = 0
        for a in args:
            try:
                await out(1, self.fs.read(self.fs.norm(a, self.cwd)))
            except FsError as e:
                msg = "Is a directory" if e.code == "EISDIR" else "No such file or directory"
                await out(2, f"cat: {a}: {msg}\n".encode())
                code = 1
        return code

    async def _c_exit(self, args, out, stdin):
        try:
            self._exit_code = int(args[0]) & 0xFF if args else 0
        except ValueError:
            await out(2, f"sh: exit: {args[0]}: numeric argument required\n".encode())
            self._exit_code = 2
        return _EXIT

    async def _c_true(self, args, out, stdin):
        return 0

    async def _c_false(self, args, out, stdin):
        return 1

    async def _c_env(self, args, out, stdin):
        await out(1, "".join(f"{k}={v}\n" for k, v in sorted(self.env.items())).encode())
        return 0

    async def _c_printenv(self, args, out, stdin):
        if not args:
            return await self._c_env(args, out, stdin)
        if args[0] in self.env:
            await out(1, (self.env[args[0]] + "\n").encode())
            return 0
        return 1

    async def _c_export(self, args, out, stdin):
        for a in args:
            if "=" in a:
                k, v = a.split("=", 1)
                self.env[k] = v
        return 0

    async def _c_pwd(self, args, out, stdin):
        await out(1, (self.cwd + "\n").encode())
        return 0

    async def _c_cd(self, args, out, stdin):
        p = self.fs.norm(args[0] if args else "/root", self.cwd)
        if not self.fs.is_dir(p):
            await out(2, f"sh: cd: {args[0] if args else p}: No such file or directory\n".encode())
            return 1
        self.cwd = p
        return 0

    async def _c_ls(self, args, out, stdin):
        paths = [a for a in args if not a.startswith("-")] or ["."]
        code = 0
        for a in paths:
            try:
                p = self.fs.norm(a, self.cwd)
                if self.fs.is_dir(p):
                    await out(1, "".join(e["name"] + "\n" for e in self.fs.list(p)).encode())
                else:
                    self.fs.stat(p)
                    await out(1, (a + "\n").encode())
            except FsError:
                await out(2, f"ls: cannot access '{a}': No such file or directory\n".encode())
                code = 2
        return code

    async def _c_rm(self, args, out, stdin):
        flags = "".join(a[1:] for a in args if a.startswith("-"))
        code = 0
        for a in [a for a in args if not a.startswith("-")]:
            try:
                p = self.fs.norm(a, self.cwd)
                if self.fs.is_dir(p) and "r" not in flags:
                    await out(2, f"rm: cannot remove '{a}': Is a directory\n".encode())
                    code = 1
                    continue
                self.fs.remove(p, recursive=True)
            except FsError:
                if "f" not in flags:
                    await out(2, f"rm: cannot remove '{a}': No such file or directory\n".encode())
                    code = 1
        return code

    async def _c_mkdir(self, args, out, stdin):
        parents = "-p" in args
        code = 0
        for a in [a for a in args if not a.startswith("-")]:
            try:
                p = self.fs.norm(a, self.cwd)
                if self.fs.exists(p) and not parents:
                    raise FsError("EEXIST", p)
                self.fs.mkdir(p, parents=parents)
            except FsError as e:
                await out(2, f"mkdir: cannot create directory '{a}': {e.code}\n".encode())
                code = 1
        return code

    async def _c_chmod(self, args, out, stdin):
        if len(args) < 2 or not re.fullmatch(r"[0-7]{3,4}", args[0]):
            await out(2, b"chmod: usage: chmod OCTAL-MODE PATH... (the double's)\n")
            return 1
        code = 0
        for a in args[1:]:
            p = self.fs.norm(a, self.cwd)
            if not self.fs.exists(p):
                await out(2, f"chmod: cannot access '{a}': No such file or directory\n".encode())
                code = 1
                continue
            self.fs.meta.setdefault(p, {"mtime": time.time()})["mode"] = int(args[0], 8)
        return code

    async def _c_sleep(self, args, out, stdin):
        try:
            await asyncio.sleep(min(float(args[0]), 60.0))
        except (IndexError, ValueError):
            await out(2, b"sleep: invalid time interval\n")
            return 1
        return 0

    async def _c_test(self, args, out, stdin):
        if len(args) == 2 and args[0] in ("-e", "-f", "-d"):
            p = self.fs.norm(args[1], self.cwd)
            ok = {"-e": self.fs.exists(p), "-f": p in self.fs.files, "-d": self.fs.is_dir(p)}[args[0]]
            return 0 if ok else 1
        return 2


_EXIT = object()  # sentinel a builtin returns for `exit`

# ---------------------------------------------------------------- stand-in programs
#
# Programs an image may have that the double cannot run: an image file
# "#!double-program NAME" runs PROGRAMS[NAME](interpreter, args, out) ->
# exit code. Their state lives in the sandbox's file system, where tests
# read it.

PROGRAM_MAGIC = "#!double-program "
PROGRAM_DIRS = ("/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin")
TS_SOCK = "/var/run/tailscale/tailscaled.sock"  # tailscaled answers while it exists
TS_STARTS = "/var/lib/tailscale/double-starts"  # how many times tailscaled started
TS_CRASH = "/var/lib/tailscale/double-crash"  # a test writes it: tailscaled dies (exit 1)
TS_UPS = "/var/lib/tailscale/double-ups"  # one JSON line per `tailscale up`


async def fake_tailscaled(interp, args, out):
    """tailscaled: counts its starts, answers (TS_SOCK) until it is killed
    or TS_CRASH appears, which it takes as its crash (exit 1)."""
    fs = interp.fs
    n = int(fs.read(TS_STARTS)) + 1 if fs.exists(TS_STARTS) else 1
    fs.write(TS_STARTS, str(n).encode())
    await out(2, f"tailscaled (double) start {n}: {' '.join(args)}\n".encode())
    fs.write(TS_SOCK, b"")
    try:
        while not fs.exists(TS_CRASH):
            await asyncio.sleep(0.05)
        fs.remove(TS_CRASH)
        await out(2, b"tailscaled (double): crashed\n")
        return 1
    finally:
        if fs.exists(TS_SOCK):
            fs.remove(TS_SOCK)


async def fake_tailscale(interp, args, out):
    """tailscale: `version --daemon` and `up --auth-key=file:PATH ...`, which
    record the key's SHA-256 and the file's mode (never the key) in TS_UPS;
    both fail as the real one does while tailscaled does not answer."""
    import hashlib
    fs = interp.fs
    if not fs.exists(TS_SOCK):
        await out(2, b"failed to connect to local tailscaled; it doesn't appear to be running\n")
        return 1
    if args[:1] == ["version"]:
        await out(1, b"1.0.0-double\n  daemon: 1.0.0-double\n")
        return 0
    if args[:1] != ["up"]:
        await out(2, f"tailscale (double): no {args[:1]}\n".encode())
        return 2
    opts = dict(a[2:].split("=", 1) for a in args[1:] if a.startswith("--") and "=" in a)
    src = opts.get("auth-key", "")
    if not src.startswith("file:") or not fs.exists(src[5:]):
        await out(2, b"tailscale (double): --auth-key=file:PATH of an existing file only\n")
        return 2
    st = fs.stat(src[5:])
    fs.write(TS_UPS, (json.dumps({"key_sha256": hashlib.sha256(fs.read(src[5:])).hexdigest(),
                                  "mode": st["mode"], "hostname": opts.get("hostname")})
                      + "\n").encode(), append=True)
    return 0


PROGRAMS = {"tailscaled": fake_tailscaled, "tailscale": fake_tailscale}


class ByteQueue:
    """stdin of a running command: bytes pushed by the transport, None = EOF."""

    def __init__(self):
        self.q = asyncio.Queue()

    def push(self, data):
        self.q.put_nowait(data)

    def eof(self):
        self.q.put_nowait(None)

    def __aiter__(self):
        return self

    async def __anext__(self):
        data = await self.q.get()
        if data is None:
            self.q.put_nowait(None)  # later readers see EOF too
            raise StopAsyncIteration
        return data

    async def read_all(self):
        return b"".join([c async for c in self])


class PtyShell:
    """The double's interactive terminal: echoes what is typed (CR becomes
    CR LF, as a tty in cooked mode does), runs each line with `Interpreter`
    (output LF becomes CR LF), prints the prompt `$ `, and ends on `exit [N]`
    with that code. No line editing, no job control."""

    PROMPT = b"$ "

    def __init__(self, interp, send):
        self.interp = interp
        self.send = send  # async (bytes) -> None
        self.line = bytearray()
        self.exit_code = None
        self.cols, self.rows = 80, 24

    async def start(self):
        await self.send(self.PROMPT)

    async def feed(self, data):
        echo = bytearray()  # what one read of input echoes, sent as one piece

        async def flush():
            if echo:
                await self.send(bytes(echo))
                echo.clear()
        for b in data:
            ch = bytes([b])
            if ch in (b"\r", b"\n"):
                echo.extend(b"\r\n")
                await flush()
                line, self.line = self.line.decode(errors="replace"), bytearray()
                if line.strip():
                    await self._run(line)
                    if self.exit_code is not None:
                        return
                await self.send(self.PROMPT)
            elif ch == b"\x03":
                self.line.clear()
                echo.extend(b"^C\r\n" + self.PROMPT)
            elif ch == b"\x04" and not self.line:
                await flush()
                self.exit_code = 0
                return
            elif ch in (b"\x7f", b"\x08"):
                if self.line:
                    self.line.pop()
                    echo.extend(b"\b \b")
            else:
                self.line.extend(ch)
                echo.extend(ch)
        await flush()

    async def _run(self, line):
        async def out(fd, data):
            await self.send(data.replace(b"\n", b"\r\n"))
        code = await self.interp.run_script(line, out)
        if self.interp.exited:
            self.exit_code = code


# ---------------------------------------------------------------- server

class Answer(Exception):
    """Raised by a handler's helper to answer the request at once."""

    def __init__(self, response):
        super().__init__()
        self.response = response


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None


def jobj(s):
    """JSON text -> dict, or {} when it is not a JSON object."""
    try:
        v = json.loads(s)
        return v if isinstance(v, dict) else {}
    except ValueError:
        return {}


def new_id(prefix="", n=12):
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


class Double:
    """Base of every provider double. A subclass sets `name`, implements
    `routes(app)`, `authorized(request)` and `error(request, status, code,
    message)` (the provider's error shape), and names every route (the name
    is what faults match)."""

    name = "base"
    key_prefix = ""

    def __init__(self, key=None):
        self.key = key or self.key_prefix + secrets.token_hex(16)
        self.url = None
        self.sandboxes = {}
        self.snapshots = {}  # a provider's snapshots of sandboxes, by its id
        self.requests = []  # {"method","path","query","route","status","authorized"}
        self.faults = []
        self.lock = threading.Lock()
        self.loop = None
        self._thread = None
        self._runner = None
        self._ready = threading.Event()
        self._stopped = None
        self._start_error = None

    # -- to override
    def routes(self, app):
        raise NotImplementedError

    def authorized(self, request):
        return request.headers.get("Authorization") == f"Bearer {self.key}"

    def error(self, request, status, code, message):
        return web.json_response({"error": code, "message": message}, status=status)

    def unauthorized(self, request):
        return self.error(request, 401, "unauthorized", "invalid credentials")

    def open_route(self, route):
        # routes that need no API credential: previews decide for themselves
        # (preview_denied), a provider may add e.g. a health check
        return (route or "").split(":")[0] == "preview"

    # -- test API
    def fault(self, route, times=None, **kind):
        f = Fault(route, times=times, **kind)
        with self.lock:
            self.faults.append(f)
        return f

    def take_fault(self, route):
        """The fault that hits `route` now, counted (for calls that are not
        HTTP requests of their own, e.g. JSON-RPC methods over a WebSocket)."""
        with self.lock:
            hit = next((f for f in self.faults if f.matches(route)), None)
            if hit:
                hit.hits += 1
            return hit

    def log(self, method, path, route, status=None):
        entry = {"method": method, "path": path, "query": {}, "route": route, "status": status,
                 "time": time.time(), "authorized": True}
        with self.lock:
            self.requests.append(entry)
        return entry

    def clear_faults(self):
        with self.lock:
            self.faults.clear()

    def seen(self, route=None, method=None):
        with self.lock:
            return [r for r in self.requests
                    if (route is None or fnmatch.fnmatchcase(r["route"] or "", route)
                        or fnmatch.fnmatchcase((r["route"] or "").split(":")[0], route))
                    and (method is None or r["method"] == method)]

    def call(self, fn, *args):
        """Run fn(*args) on the double's loop and return its result (for
        tests that change a sandbox while it is served)."""
        async def wrap():
            res = fn(*args)
            if asyncio.iscoroutine(res):
                res = await res
            return res
        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(10)

    def state(self):
        return {"provider": self.name, "url": self.url,
                "sandboxes": {k: self.describe(v) for k, v in list(self.sandboxes.items())},
                "faults": [f.as_dict() for f in self.faults],
                "requests": list(self.requests)}

    def describe(self, sb):
        d = {k: v for k, v in vars(sb).items() if not k.startswith("_") and k not in ("fs", "interp")}
        d["files"] = {p: c.decode(errors="replace") for p, c in sb.fs.snapshot().items()}
        return d

    # -- fault plumbing for handlers
    def stream_fault(self, request):
        """The drop_after / chunk_delay of the fault that matched this request."""
        f = request.get("double.fault")
        return f.kind if f else {}

    # -- server
    def _app(self):
        @web.middleware
        async def mw(request, handler):
            route = request.match_info.route.name if request.match_info.route else None
            entry = {"method": request.method, "path": request.path,
                     "query": {k: request.query.getall(k) for k in request.query},
                     "route": route, "status": None, "time": time.time(),
                     "scheme": request.scheme}
            if request.path.startswith(CONTROL):
                return await handler(request)
            entry["authorized"] = self.authorized(request)
            with self.lock:
                self.requests.append(entry)
                hit = next((f for f in self.faults if f.matches(route)), None)
                if hit:
                    hit.hits += 1
            try:
                resp = await self._apply(request, handler, hit, entry, route)
            except web.HTTPException as e:
                entry["status"] = e.status
                raise
            entry["status"] = getattr(resp, "status", None)
            return resp

        app = web.Application(middlewares=[mw], client_max_size=64 * 1024 * 1024)
        app.router.add_get(CONTROL + "/state", self._ctl_state, name="ctl.state")
        app.router.add_post(CONTROL + "/faults", self._ctl_fault, name="ctl.fault")
        app.router.add_delete(CONTROL + "/faults", self._ctl_clear, name="ctl.clear")
        self.routes(app)
        app.router.add_route("*", "/__preview__/{sid}/{port:\\d+}/{tail:.*}", self._preview, name="preview")
        app.router.add_route("*", "/__preview__/{sid}/{port:\\d+}", self._preview, name="preview:root")
        app.router.add_route("*", "/{tail:.*}", self._unknown, name="unknown")
        return app

    async def _apply(self, request, handler, hit, entry, route):
        k = hit.kind if hit else {}
        if k.get("delay"):
            await asyncio.sleep(k["delay"])
        if k.get("hang"):
            await asyncio.sleep(3600)
        if k.get("reset"):
            request.transport.close()
            return web.Response(status=499)
        if k.get("unauthorized"):
            return self.unauthorized(request)
        if k.get("status"):
            request["double.retry_after"] = k.get("retry_after")
            resp = self.error(request, k["status"], k.get("code", "injected_fault"),
                              k.get("message", f"injected fault: {k['status']} on {route}"))
            if k.get("retry_after") is not None:
                resp.headers["Retry-After"] = str(k["retry_after"])
            return resp
        if k.get("garbage"):
            return web.Response(status=200, text="<html>upstream sent garbage", content_type="text/html")
        if not self.open_route(route) and not entry["authorized"]:
            return self.unauthorized(request)
        request["double.entry"] = entry
        if hit:
            request["double.fault"] = hit
        try:
            return await handler(request)
        except Answer as a:
            return a.response
        except (ValueError, TypeError, AttributeError) as e:
            # bad input (a body that is not JSON, a number that is not one):
            # the provider's 400, never a 500 from the double itself
            return self.error(request, 400, "invalid_request", f"bad request: {e}")

    async def _ctl_state(self, request):
        return web.json_response(self.state(), dumps=lambda o: json.dumps(o, default=str))

    async def _ctl_fault(self, request):
        body = await request.json()
        try:
            f = self.fault(body.pop("route"), times=body.pop("times", None), **body)
        except (KeyError, ValueError, TypeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(f.as_dict())

    async def _ctl_clear(self, request):
        self.clear_faults()
        return web.Response(status=204)

    async def _unknown(self, request):
        """A path or method this double does not serve: the provider's 404
        shape, and the request log says so (route "unknown")."""
        return self.error(request, 404, "not_found",
                          f"the {self.name} double serves no {request.method} {request.path}")

    async def _preview(self, request):
        """Stand-in for a sandbox's public preview URL: answers who it is.
        The provider decides whether the preview needs a credential."""
        sid, port = request.match_info["sid"], int(request.match_info["port"])
        sb = self.sandboxes.get(sid)
        if sb is None:
            return web.Response(status=404, text="no such sandbox\n")
        denied = self.preview_denied(request, sb, port)
        if denied is not None:
            return denied
        tail = request.match_info.get("tail", "")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            # the app's WebSocket: each text message comes back, signed
            ws = web.WebSocketResponse(heartbeat=None, compress=False)
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == web.WSMsgType.TEXT:
                    await ws.send_str(f"preview of {sid} port {port} echoes {msg.data}")
            return ws
        if request.query.get("bytes", "").isdigit():  # a big answer: 0123456789 repeated
            n = min(int(request.query["bytes"]), 64 * 1024 * 1024)
            return web.Response(body=(b"0123456789" * (n // 10 + 1))[:n])
        return web.Response(text=f"preview of {sid} port {port}: {request.method} /{tail}\n")

    def preview_denied(self, request, sb, port):
        return None

    def preview_url(self, sid, port):
        return f"{self.url}/__preview__/{sid}/{port}/"

    def serve_tls(self, context, host="localhost"):
        """Serve the same routes over TLS as well, on another port (a
        provider's https:// preview host); returns its base URL, named
        `host`. `context` is a server ssl.SSLContext."""
        async def go():
            site = web.TCPSite(self._runner, LOOPBACK, 0, shutdown_timeout=0.5, ssl_context=context)
            await site.start()
            return site._server.sockets[0].getsockname()[1]
        return f"https://{host}:{self.call(go)}"

    def start(self):
        self._thread = threading.Thread(target=self._serve, name=f"double-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._start_error:
            raise RuntimeError(f"{self.name} double did not start: {self._start_error}")
        return self

    def _serve(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self._runner = web.AppRunner(self._app(), handle_signals=False)
            self.loop.run_until_complete(self._runner.setup())
            tls = getattr(self, "ssl_context", None)  # a double that serves HTTPS sets it
            site = web.TCPSite(self._runner, LOOPBACK, 0, shutdown_timeout=0.5, ssl_context=tls)
            self.loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]
            self.url = f"{'https' if tls else 'http'}://{LOOPBACK}:{port}"
            self._stopped = asyncio.Event()
        except Exception as e:  # reported by start()
            self._start_error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_until_complete(self._stopped.wait())
        self.loop.run_until_complete(self._runner.cleanup())
        # what cleanup left (a hung request, a command still sleeping) ends here
        pending = asyncio.all_tasks(self.loop)
        for t in pending:
            t.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def stop(self):
        if self.loop and self._stopped and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- sandboxes and exec

class Sandbox:
    """State a double keeps for one sandbox; providers add their fields."""

    def __init__(self, sid, env=None, **fields):
        self.id = sid
        self.env = dict(env or {})
        self.fs = MemFS()
        self.created_at = time.time()
        self.execs = []  # {"argv"|"script", "env", "cwd", "exit_code", "stdout", "stderr"}
        self.pty = []  # {"id", "cols", "rows", "input", "exit_code"}
        self.ports = {}  # port -> preview url
        self.__dict__.update(fields)


class Dropped(Exception):
    """A drop_after fault cut the connection."""


class Output:
    """What a streaming handler writes output through: applies the
    slow-stream (chunk_delay) and drop (drop_after) faults of its request,
    and keeps a copy for the exec record."""

    def __init__(self, double, request, send):
        self.send = send  # async (fd, bytes)
        k = double.stream_fault(request)
        self.delay = k.get("chunk_delay")
        self.drop_after = k.get("drop_after")
        self.request = request
        self.sent = 0
        self.copy = {1: bytearray(), 2: bytearray()}
        # when each piece left, in the request's log entry (tests check pacing here,
        # not on the client, whose clock sees the pieces late when the host is busy)
        entry = request.get("double.entry") if request is not None else None
        self.stamps = entry.setdefault("sent", []) if entry is not None else []

    async def __call__(self, fd, data):
        if not data:
            return
        self.copy.setdefault(fd, bytearray()).extend(data)
        pieces = [data[i:i + 4] for i in range(0, len(data), 4)] if self.delay else [data]
        for piece in pieces:
            if self.drop_after is not None and self.sent >= self.drop_after:
                self.drop()
            if self.delay and self.sent:
                await asyncio.sleep(self.delay)
            await self.send(fd, piece)
            self.stamps.append(time.monotonic())
            self.sent += 1

    def gate(self):
        """Call before a message that is not output (an exit frame, the end
        of a stream): a drop fault whose count is reached cuts it off too."""
        if self.drop_after is not None and self.sent >= self.drop_after:
            self.drop()

    def drop(self):
        transport = self.request.transport
        if transport is not None:
            transport.abort()  # no close frame, no end of stream: the peer sees the connection die
        raise Dropped()


async def run_exec(sb, out, *, argv=None, script=None, env=None, cwd=None, stdin=None, record=None):
    """Run a command of sandbox sb through the interpreter, recording it."""
    full_env = {**sb.env, **(env or {})}
    cwd = cwd or getattr(sb, "cwd", "/")
    interp = Interpreter(sb.fs, full_env, cwd if sb.fs.is_dir(MemFS.norm(cwd)) else "/")
    rec = {"argv": argv, "script": script, "env": env or {}, "cwd": cwd, "exit_code": None,
           "stdout": "", "stderr": ""}
    if record is not None:
        rec.update(record)
    sb.execs.append(rec)
    copy = {1: bytearray(), 2: bytearray()}

    async def tee(fd, data):
        copy[fd].extend(data)
        await out(fd, data)
    try:
        if script is not None:
            code = await interp.run_script(script, tee, stdin)
        else:
            code = await interp.run_argv(argv, tee, stdin)
    finally:
        rec["stdout"] = copy[1].decode(errors="replace")
        rec["stderr"] = copy[2].decode(errors="replace")
    rec["exit_code"] = code
    return code
