"""Double of Modal's gRPC API (reference §8): HTTP/2 without TLS (h2c),
gRPC framing, protobuf messages, in memory.

Modal has no REST surface: its clients speak gRPC to a control plane
(`/modal.client.ModalClient/<Rpc>`) and, for exec and stdio, to a per-task
command router (`/modal.task_command_router.TaskCommandRouter/<Rpc>`) whose
URL and JWT the control plane hands out. This double serves both on one
port. Python's standard library has no HTTP/2, so the connection is
Debian's python3-h2 (sans-I/O) on asyncio streams; protobuf is a small
codec here (varints, fixed32, length-delimited: all these messages use).
Field numbers follow the wire format Modal's JS SDK speaks (the `modal`
npm package), which tests/integration/test_provider_doubles.py points at
this double.

Implemented (route names in brackets): AuthTokenGet [auth.token],
EnvironmentGetOrCreate [environment],
AppGetOrCreate [app], ImageGetOrCreate [image] (every image builds at
once), ImageJoinStreaming [image.join], SandboxCreate [create],
SandboxGetTaskId [task], SandboxWait [wait], SandboxTerminate [delete],
SandboxGetTunnels [tunnels] (each port of the create's open_ports is a
plain HTTP listener on loopback answering "preview of SID port P"; its
requests are logged as tunnel.http), TaskGetCommandRouterAccess [router]; on the router TaskExecStart [exec],
TaskExecStdioRead [exec.stdio] (a server stream), TaskExecStdinWrite
[exec.stdin] and its client stream TaskExecStdinWriteStream [exec.stdin:stream], TaskExecWait [exec.wait], TaskExecPoll [exec.poll]. Files go
through exec of Modal's in-sandbox tool `/__modal/.bin/modal-sandbox-fs-tools`
with a JSON command (ReadFile, WriteFile, Remove, MakeDirectory, Stat,
ListFiles), as the SDK does. A TaskExecStart with pty_info runs a terminal
(PtyShell: input through the stdin writes, output on stdout; its record in
sb.pty keeps the size asked at start: the router has no resize call). Anything else answers UNIMPLEMENTED (route "unknown").
Not implemented: secrets, volumes, TLS or unencrypted (TCP) tunnels, snapshots, SandboxList,
the legacy ContainerExec calls, the control endpoints over HTTP (use the
Python API: d.fault, d.seen, d.sandboxes).

Credentials: metadata x-modal-token-id / x-modal-token-secret on the
control plane (d.token_id, d.token_secret; d.key is "ID:SECRET", what the
C adapter takes); router calls carry `authorization: Bearer JWT` of their
task. A wrong one is grpc-status 16 UNAUTHENTICATED.

Faults: status=N is an HTTP-like number turned into its gRPC code (401 ->
16, 403 -> 7, 404 -> 5, 429 -> 8, 503 -> 14, other 5xx -> 13, other 4xx
-> 3) unless code= names the gRPC code itself; garbage answers HTTP 200
text/html; reset closes the connection; drop_after/chunk_delay act on
exec.stdio."""
import asyncio
import base64
import json
import secrets
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from ._core import LOOPBACK, ByteQueue, Double, Dropped, FsError, Interpreter, PtyShell, Sandbox, new_id, \
    run_exec

FS_TOOLS = "/__modal/.bin/modal-sandbox-fs-tools"
CP = "/modal.client.ModalClient/"
ROUTER = "/modal.task_command_router.TaskCommandRouter/"

ROUTES = {
    CP + "AuthTokenGet": "auth.token",
    CP + "AppGetOrCreate": "app",
    CP + "EnvironmentGetOrCreate": "environment",
    CP + "ImageGetOrCreate": "image",
    CP + "ImageJoinStreaming": "image.join",
    CP + "SandboxCreate": "create",
    CP + "SandboxGetTaskId": "task",
    CP + "SandboxWait": "wait",
    CP + "SandboxTerminate": "delete",
    CP + "SandboxGetTunnels": "tunnels",
    CP + "TaskGetCommandRouterAccess": "router",
    ROUTER + "TaskExecStart": "exec",
    ROUTER + "TaskExecStdioRead": "exec.stdio",
    ROUTER + "TaskExecStdinWrite": "exec.stdin",
    ROUTER + "TaskExecStdinWriteStream": "exec.stdin:stream",
    ROUTER + "TaskExecWait": "exec.wait",
    ROUTER + "TaskExecPoll": "exec.poll",
}

# gRPC status codes
OK, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED = 0, 3, 5, 7, 8
FAILED_PRECONDITION, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 9, 12, 13, 14, 16
GENERIC_SUCCESS, GENERIC_TERMINATED = 1, 3


class GrpcError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def http_to_grpc(status):
    return {401: UNAUTHENTICATED, 403: PERMISSION_DENIED, 404: NOT_FOUND, 429: RESOURCE_EXHAUSTED,
            503: UNAVAILABLE, 400: INVALID_ARGUMENT}.get(status, INTERNAL if status >= 500 else INVALID_ARGUMENT)


# ---------------------------------------------------------------- protobuf

def _varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_decode(data):
    """Field number -> list of values (int for varints, bytes for
    length-delimited, raw 4/8 bytes for fixed)."""
    fields, i = {}, 0
    while i < len(data):
        key, i = _read_varint(data, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(data, i)
        elif wt == 2:
            n, i = _read_varint(data, i)
            if i + n > len(data):
                raise ValueError("truncated field")
            v, i = bytes(data[i:i + n]), i + n
        elif wt == 5:
            v, i = bytes(data[i:i + 4]), i + 4
        elif wt == 1:
            v, i = bytes(data[i:i + 8]), i + 8
        else:
            raise ValueError(f"wire type {wt}")
        fields.setdefault(num, []).append(v)
    return fields


def _read_varint(data, i):
    n = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7


def pb_str(fields, num, default=""):
    v = fields.get(num)
    return v[-1].decode() if v else default


def pb_int(fields, num, default=0):
    v = fields.get(num)
    return v[-1] if v else default


def pb_encode(*items):
    """(num, value) pairs: int -> varint, str/bytes -> length-delimited;
    None skipped; a list repeats the field."""
    out = bytearray()
    for num, v in items:
        for x in (v if isinstance(v, list) else [v]):
            if x is None:
                continue
            if isinstance(x, bool) or isinstance(x, int):
                out += _varint(num << 3) + _varint(int(x))
            else:
                b = x.encode() if isinstance(x, str) else bytes(x)
                out += _varint(num << 3 | 2) + _varint(len(b)) + b
    return bytes(out)


def fake_jwt(sub, ttl=3600):
    def b64(o):
        return base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'none'})}.{b64({'sub': sub, 'exp': int(time.time()) + ttl})}.{secrets.token_hex(8)}"


# ---------------------------------------------------------------- state

class Exec:
    def __init__(self, eid, argv):
        self.id = eid
        self.argv = argv
        self.stdin = ByteQueue()
        self.stdin_offset = 0
        self.stdin_eof = False
        self.out = {1: bytearray(), 2: bytearray()}
        self.code = None
        self.changed = asyncio.Condition()
        self.task = None
        self.pty = None  # the terminal's record (sb.pty) when started with pty_info


class ModalDouble(Double):
    name = "modal"

    def __init__(self, key=None):
        self.token_id = "ak-" + secrets.token_hex(8)
        self.token_secret = "as-" + secrets.token_hex(16)
        if key and ":" in key:
            self.token_id, self.token_secret = key.split(":", 1)
        super().__init__(key=f"{self.token_id}:{self.token_secret}")
        self.apps = {}  # name -> app id
        self.images = {}  # id -> dockerfile commands
        self.tasks = {}  # task id -> sandbox id
        self.jwts = {}  # jwt -> task id
        self._server = None

    # -- auth
    def cp_authorized(self, md):
        return md.get("x-modal-token-id") == self.token_id and \
            md.get("x-modal-token-secret") == self.token_secret

    def router_task(self, md):
        auth = md.get("authorization", "")
        return self.jwts.get(auth[7:]) if auth.startswith("Bearer ") else None

    def sandbox(self, sid):
        sb = self.sandboxes.get(sid)
        if sb is None:
            raise GrpcError(NOT_FOUND, f"Sandbox {sid} not found")
        return sb

    def task_sandbox(self, tid, md):
        if self.router_task(md) != tid:
            raise GrpcError(UNAUTHENTICATED, "invalid or expired command router token")
        sb = self.sandboxes.get(self.tasks.get(tid))
        if sb is None:
            raise GrpcError(NOT_FOUND, f"task {tid} not found")
        if sb.status != "running":
            raise GrpcError(FAILED_PRECONDITION, f"task {tid} has finished")
        return sb

    def describe(self, sb):
        d = super().describe(sb)
        d.pop("execs_by_id", None)
        d["tunnels"] = {p: f"{h}:{lp}" for p, (h, lp, _) in getattr(sb, "tunnels", {}).items()}
        return d

    # -- control plane
    async def rpc_auth_token(self, req, md, send):
        return pb_encode((1, fake_jwt("auth")))

    async def rpc_environment(self, req, md, send):
        # the SDK reads the image builder version from its environment
        name = pb_str(req, 1) or "main"
        return pb_encode((1, "en-" + name), (2, pb_encode((1, name), (2, pb_encode((1, "2025.06"))))))

    async def rpc_app(self, req, md, send):
        name = pb_str(req, 1)
        if not name:
            raise GrpcError(INVALID_ARGUMENT, "app_name is required")
        app = self.apps.setdefault(name, new_id("ap-"))
        return pb_encode((1, app))

    async def rpc_image(self, req, md, send):
        image = pb_decode(req.get(2, [b""])[-1])
        cmds = [c.decode() for c in image.get(6, [])]
        if not pb_str(req, 4):
            raise GrpcError(INVALID_ARGUMENT, "app_id is required")
        iid = new_id("im-")
        self.images[iid] = cmds
        return pb_encode((1, iid), (2, pb_encode((1, GENERIC_SUCCESS))))

    async def rpc_image_join(self, req, md, send):
        if pb_str(req, 1) not in self.images:
            raise GrpcError(NOT_FOUND, "image not found")
        await send(pb_encode((1, pb_encode((1, GENERIC_SUCCESS))), (4, True)))
        return None

    async def rpc_create(self, req, md, send):
        if pb_str(req, 1) not in self.apps.values():
            raise GrpcError(NOT_FOUND, "app not found")
        d = pb_decode(req.get(2, [b""])[-1])
        image = pb_str(d, 3)
        if image not in self.images:
            raise GrpcError(NOT_FOUND, f"image {image!r} not found")
        env = {}
        for raw in d.get(40, []):
            for entry in pb_decode(raw).get(1, []):
                kv = pb_decode(entry)
                env[pb_str(kv, 1)] = pb_str(kv, 2)
        res = pb_decode(d.get(5, [b""])[-1])
        open_ports = [pb_int(pb_decode(ps), 1) for raw in d.get(20, []) for ps in pb_decode(raw).get(1, [])]
        if any(not 0 < port < 65536 for port in open_ports):
            raise GrpcError(INVALID_ARGUMENT, "open_ports: a port is 1..65535")
        # Modal ids: a prefix and 22 alphanumerics (the SDK tells V1 sandboxes by that shape)
        sid, tid = new_id("sb-", 22), new_id("ta-", 22)
        self.sandboxes[sid] = Sandbox(sid, env=env, image=self.images[image], task_id=tid,
                                      status="running", timeout_secs=pb_int(d, 7),
                                      milli_cpu=pb_int(res, 3), memory_mb=pb_int(res, 2),
                                      name=pb_str(d, 30), execs_by_id={}, ended=None)
        self.tasks[tid] = sid
        sb = self.sandboxes[sid]
        sb.tunnels = {}  # container port -> (host, port, its listener)
        for port in open_ports:
            srv = await asyncio.start_server(self._tunnel_conn(sid, port), LOOPBACK, 0)
            sb.tunnels[port] = (LOOPBACK, srv.sockets[0].getsockname()[1], srv)
        return pb_encode((1, sid))

    def _tunnel_conn(self, sid, port):
        """A tunnel: what a server on that port of the sandbox would answer
        (no processes here), over plain HTTP/1.1 on loopback (Modal's edge
        speaks TLS; a plain control plane gets plain tunnels)."""
        async def conn(reader, writer):
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                line = head.split(b"\r\n", 1)[0].decode(errors="replace").split(" ")
                self.log(line[0], line[1] if len(line) > 1 else "", "tunnel.http")
                sb = self.sandboxes.get(sid)
                if sb is None or sb.status != "running":
                    body, status = b"sandbox ended\n", "502 Bad Gateway"
                else:
                    body, status = f"preview of {sid} port {port}: {' '.join(line[:2])}\n".encode(), "200 OK"
                writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                             f"Connection: close\r\n\r\n".encode() + body)
                await writer.drain()
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
        return conn

    async def rpc_tunnels(self, req, md, send):
        sb = self.sandbox(pb_str(req, 1))
        if sb.status != "running":
            return pb_encode((1, pb_encode((1, GENERIC_TERMINATED))))
        return pb_encode(*[(2, pb_encode((1, host), (2, lport), (5, port)))
                           for port, (host, lport, _) in sorted(sb.tunnels.items())])

    async def rpc_task(self, req, md, send):
        sb = self.sandbox(pb_str(req, 1))
        if sb.status != "running":
            return pb_encode((2, pb_encode((1, GENERIC_TERMINATED))))
        return pb_encode((1, sb.task_id))

    async def rpc_wait(self, req, md, send):
        sb = self.sandbox(pb_str(req, 1))
        raw = req.get(2, [b"\0\0\0\0"])[-1]
        timeout = min(struct.unpack("<f", raw)[0], 55.0)
        deadline = time.monotonic() + timeout
        while sb.status == "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if sb.status == "running":
            return b""
        return pb_encode((1, pb_encode((1, GENERIC_TERMINATED))))

    async def rpc_delete(self, req, md, send):
        sb = self.sandbox(pb_str(req, 1))
        sb.status = "terminated"
        sb.destroyed = True
        sb.ended = time.time()
        for _, _, srv in getattr(sb, "tunnels", {}).values():
            srv.close()
        for x in sb.execs_by_id.values():
            if x.task and not x.task.done():
                x.task.cancel()
        return b""

    async def rpc_router(self, req, md, send):
        tid = pb_str(req, 1)
        sb = self.sandboxes.get(self.tasks.get(tid))
        if sb is None:
            raise GrpcError(NOT_FOUND, f"task {tid} not found")
        jwt = fake_jwt(tid)
        self.jwts[jwt] = tid
        # the SDK wants https; on loopback it dials without TLS (this port)
        return pb_encode((1, jwt), (2, self.url.replace("http://", "https://")))

    # -- command router
    async def rpc_exec(self, req, md, send):
        sb = self.task_sandbox(pb_str(req, 1), md)
        eid = pb_str(req, 2)
        argv = [a.decode() for a in req.get(3, [])]
        if not eid or not argv:
            raise GrpcError(INVALID_ARGUMENT, "exec_id and command_args are required")
        if eid in sb.execs_by_id:
            return b""  # the exec id is the idempotency key
        env = {}
        for raw in req.get(12, []):
            kv = pb_decode(raw)
            env[pb_str(kv, 1)] = pb_str(kv, 2)
        x = Exec(eid, argv)
        sb.execs_by_id[eid] = x
        pty = pb_decode(req[9][-1]) if 9 in req else {}
        if pb_int(pty, 1):  # pty_info.enabled: a terminal, its size fixed at start
            x.pty = {"id": eid, "argv": argv, "rows": pb_int(pty, 2), "cols": pb_int(pty, 3),
                     "term": pb_str(pty, 4), "resizes": [], "input": bytearray(), "exit_code": None}
            sb.pty.append(x.pty)
            x.task = asyncio.ensure_future(self._pty(sb, x, env, pb_str(req, 7) or None))
        else:
            x.task = asyncio.ensure_future(self._run(sb, x, env, pb_str(req, 7) or None))
        return b""

    async def _pty(self, sb, x, env, cwd):
        """A terminal: one output stream (stdout), input through stdin
        writes; the router has no resize call."""
        async def out(data):
            x.out[1].extend(data)
            async with x.changed:
                x.changed.notify_all()
        shell = PtyShell(Interpreter(sb.fs, {**sb.env, **env}, cwd or "/"), out)
        code = 0
        try:
            await shell.start()
            async for data in x.stdin:
                x.pty["input"].extend(data)
                await shell.feed(data)
                if shell.exit_code is not None:
                    code = shell.exit_code
                    break
        except asyncio.CancelledError:
            code = 137
        x.code = x.pty["exit_code"] = code
        async with x.changed:
            x.changed.notify_all()

    async def _run(self, sb, x, env, cwd):
        async def out(fd, data):
            x.out[fd].extend(data)
            async with x.changed:
                x.changed.notify_all()
        try:
            if x.argv[0] == FS_TOOLS:
                code = await self._fs_tool(sb, x, out)
            else:
                code = await run_exec(sb, out, argv=x.argv, env=env, cwd=cwd, stdin=x.stdin,
                                      record={"exec_id": x.id})
        except asyncio.CancelledError:
            code = 137
        x.code = code
        async with x.changed:
            x.changed.notify_all()

    async def _fs_tool(self, sb, x, out):
        sb.execs.append({"argv": x.argv, "exec_id": x.id})
        try:
            cmd = json.loads(x.argv[1]) if len(x.argv) == 2 else None
            (op, arg), = cmd.items()
            path = arg["path"]
            if op == "ReadFile":
                await out(1, bytes(sb.fs.read(path)))
            elif op == "WriteFile":
                data = await x.stdin.read_all()
                sb.fs.write(path, data, parents=True)
            elif op == "Remove":
                sb.fs.remove(path, recursive=bool(arg.get("recursive")))
            elif op == "MakeDirectory":
                sb.fs.mkdir(path, parents=bool(arg.get("parents")))
            elif op == "Stat":
                await out(1, json.dumps(sb.fs.stat(path), default=str).encode())
            elif op == "ListFiles":
                # the entries' shape the SDK parses (parseFileEntry)
                await out(1, json.dumps([
                    {"name": e["name"], "path": e["path"], "type": "directory" if e["is_dir"] else "file",
                     "size": e["size"], "mode": e.get("mode", 0o644), "permissions": "",
                     "owner": "root", "group": "root", "modified_time": e.get("mtime", 0),
                     "symlink_target": None} for e in sb.fs.list(path)]).encode())
            else:
                raise ValueError(op)
            return 0
        except FsError as e:
            kinds = {"ENOENT": "NotFound", "EISDIR": "IsDirectory", "ENOTDIR": "NotDirectory",
                     "ENOTEMPTY": "DirectoryNotEmpty", "EEXIST": "AlreadyExists"}
            await out(2, json.dumps({"error_kind": kinds.get(e.code, "Other"),
                                     "message": str(e)}).encode())
            return 1
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            await out(2, json.dumps({"error_kind": "InvalidInput", "message": f"bad command: {e}"}).encode())
            return 2

    def _exec_of(self, req, md):
        sb = self.sandboxes.get(self.tasks.get(pb_str(req, 1)))
        if self.router_task(md) != pb_str(req, 1) or sb is None:
            raise GrpcError(UNAUTHENTICATED, "invalid or expired command router token")
        x = sb.execs_by_id.get(pb_str(req, 2))
        if x is None:
            raise GrpcError(NOT_FOUND, f"exec {pb_str(req, 2)} not found")
        return x

    async def rpc_stdio(self, req, md, send, fault=None):
        x = self._exec_of(req, md)
        # the router's own enum: STDOUT 0, STDERR 1
        fd = {0: 1, 1: 2}.get(pb_int(req, 4))
        if fd is None:
            raise GrpcError(INVALID_ARGUMENT, "file_descriptor must be STDOUT or STDERR")
        pos = pb_int(req, 3)
        k = fault.kind if fault else {}
        sent = 0
        while True:
            async with x.changed:
                while len(x.out[fd]) <= pos and x.code is None:
                    await x.changed.wait()
            data = bytes(x.out[fd][pos:])
            if data:
                pieces = [data[i:i + 4] for i in range(0, len(data), 4)] if k.get("chunk_delay") else [data]
                for piece in pieces:
                    if k.get("drop_after") is not None and sent >= k["drop_after"]:
                        raise Dropped()
                    if k.get("chunk_delay") and sent:
                        await asyncio.sleep(k["chunk_delay"])
                    await send(pb_encode((1, piece)))
                    sent += 1
                pos += len(data)
            elif x.code is not None:
                if k.get("drop_after") is not None and sent >= k["drop_after"]:
                    raise Dropped()
                return None

    async def rpc_stdin(self, req, md, send):
        x = self._exec_of(req, md)
        offset, data = pb_int(req, 3), req.get(4, [b""])[-1]
        if x.stdin_eof:
            if data or not pb_int(req, 5):
                raise GrpcError(FAILED_PRECONDITION, "stdin is closed")
            return b""
        # a retried write sends bytes it sent before: keep each once
        skip = x.stdin_offset - offset
        if skip < 0:
            raise GrpcError(INVALID_ARGUMENT, f"stdin offset {offset} past {x.stdin_offset}")
        if skip < len(data):
            x.stdin.push(data[skip:])
            x.stdin_offset += len(data) - skip
        if pb_int(req, 5):
            x.stdin_eof = True
            x.stdin.eof()
        return b""

    async def rpc_stdin_stream(self, msgs, md, send):
        """Client stream: a start {task_id, exec_id, offset}, data pieces, an
        end (stdin's EOF)."""
        if not msgs or 1 not in msgs[0]:
            raise GrpcError(INVALID_ARGUMENT, "the first message must be start")
        start = pb_decode(msgs[0][1][-1])
        offset = pb_int(start, 3)
        for m in msgs[1:]:
            if 2 in m:
                data = m[2][-1]
                await self.rpc_stdin({1: start.get(1, []), 2: start.get(2, []), 3: [offset], 4: [data]}, md, send)
                offset += len(data)
            if 3 in m:
                await self.rpc_stdin({1: start.get(1, []), 2: start.get(2, []), 3: [offset], 5: [1]}, md, send)
        return b""

    async def rpc_exec_wait(self, req, md, send):
        x = self._exec_of(req, md)
        async with x.changed:
            while x.code is None:
                await x.changed.wait()
        return pb_encode((1, x.code))

    async def rpc_exec_poll(self, req, md, send):
        x = self._exec_of(req, md)
        return b"" if x.code is None else pb_encode((1, x.code))

    HANDLERS = {"auth.token": "rpc_auth_token", "app": "rpc_app", "environment": "rpc_environment", "image": "rpc_image",
                "image.join": "rpc_image_join", "create": "rpc_create", "task": "rpc_task",
                "wait": "rpc_wait", "delete": "rpc_delete", "router": "rpc_router", "tunnels": "rpc_tunnels",
                "exec": "rpc_exec", "exec.stdio": "rpc_stdio", "exec.stdin": "rpc_stdin", "exec.stdin:stream": "rpc_stdin_stream",
                "exec.wait": "rpc_exec_wait", "exec.poll": "rpc_exec_poll"}

    # -- HTTP/2 server
    def _serve(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self._server = self.loop.run_until_complete(
                asyncio.start_server(self._conn, LOOPBACK, 0))
            port = self._server.sockets[0].getsockname()[1]
            self.url = f"http://{LOOPBACK}:{port}"
            self._stopped = asyncio.Event()
        except Exception as e:  # reported by start()
            self._start_error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_until_complete(self._stopped.wait())
        self._server.close()
        pending = asyncio.all_tasks(self.loop)
        for t in pending:
            t.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    async def _conn(self, reader, writer):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=False))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16 << 20})
        conn.increment_flow_control_window(64 << 20)
        writer.write(conn.data_to_send())
        streams, tasks = {}, {}
        window = asyncio.Event()
        c = {"conn": conn, "writer": writer, "window": window, "lock": asyncio.Lock()}
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = (dict(ev.headers), bytearray())
                    elif isinstance(ev, h2.events.DataReceived):
                        if ev.stream_id in streams:
                            streams[ev.stream_id][1].extend(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in streams:
                        hdrs, body = streams.pop(ev.stream_id)
                        tasks[ev.stream_id] = asyncio.ensure_future(
                            self._request(c, ev.stream_id, hdrs, bytes(body)))
                    elif isinstance(ev, h2.events.StreamReset):
                        t = tasks.pop(ev.stream_id, None)
                        if t:
                            t.cancel()
                    elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                        window.set()
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        break
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for t in tasks.values():
                t.cancel()
            writer.close()

    async def _flush(self, c):
        c["writer"].write(c["conn"].data_to_send())
        await c["writer"].drain()

    async def _send_data(self, c, sid, data):
        conn = c["conn"]
        while data:
            n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(data))
            if n <= 0:
                c["window"].clear()
                await c["window"].wait()
                continue
            conn.send_data(sid, data[:n])
            data = data[n:]
            await self._flush(c)

    async def _request(self, c, sid, hdrs, body):
        conn = c["conn"]
        path = hdrs.get(":path", "")
        route = ROUTES.get(path, "unknown")
        entry = self.log(hdrs.get(":method", ""), path, route)
        entry["authorized"] = route.startswith("exec") or self.cp_authorized(hdrs)
        with self.lock:
            hit = next((f for f in self.faults if f.matches(route)), None)
            if hit:
                hit.hits += 1
        k = hit.kind if hit else {}
        started = False

        async def send(msg):
            nonlocal started
            if not started:
                conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
                started = True
            await self._send_data(c, sid, b"\0" + len(msg).to_bytes(4, "big") + msg)
            entry.setdefault("sent", []).append(time.monotonic())

        async def finish(code, message=""):
            entry["status"] = code
            trailers = [("grpc-status", str(code))]
            if message:
                trailers.append(("grpc-message", message.replace("%", "%25").replace("\r", " ").replace("\n", " ")))
            if started:
                conn.send_headers(sid, trailers, end_stream=True)
            else:
                conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")] + trailers,
                                  end_stream=True)
            await self._flush(c)

        try:
            if k.get("delay"):
                await asyncio.sleep(k["delay"])
            if k.get("hang"):
                await asyncio.sleep(3600)
            if k.get("reset"):
                c["writer"].transport.abort()
                return
            if k.get("garbage"):
                entry["status"] = 200
                conn.send_headers(sid, [(":status", "200"), ("content-type", "text/html")])
                conn.send_data(sid, b"<html>upstream sent garbage", end_stream=True)
                await self._flush(c)
                return
            if k.get("unauthorized"):
                return await finish(UNAUTHENTICATED, "invalid token")
            if k.get("status"):
                code = k.get("code")
                code = code if isinstance(code, int) else http_to_grpc(k["status"])
                return await finish(code, k.get("message", f"injected fault: {k['status']} on {route}"))
            if route == "unknown":
                return await finish(UNIMPLEMENTED, f"the modal double serves no {path}")
            if not route.startswith("exec") and route != "router" and not self.cp_authorized(hdrs):
                return await finish(UNAUTHENTICATED, "Invalid token id or secret")
            if route == "router" and not self.cp_authorized(hdrs):
                return await finish(UNAUTHENTICATED, "Invalid token id or secret")
            msgs, i = [], 0
            while i < len(body):
                n = int.from_bytes(body[i + 1:i + 5], "big")
                if len(body) - i < 5 or body[i] != 0 or i + 5 + n > len(body):
                    return await finish(INVALID_ARGUMENT, "uncompressed gRPC messages expected")
                msgs.append(pb_decode(body[i + 5:i + 5 + n]))
                i += 5 + n
            if route == "exec.stdin:stream":
                req = msgs
            elif len(msgs) != 1:
                return await finish(INVALID_ARGUMENT, "one gRPC message expected")
            else:
                req = msgs[0]
            fn = getattr(self, self.HANDLERS[route])
            res = await (fn(req, hdrs, send, hit) if route == "exec.stdio" else fn(req, hdrs, send))
            if res is not None:
                await send(res)
            await finish(OK)
        except GrpcError as e:
            await finish(e.code, str(e))
        except Dropped:
            entry["status"] = "dropped"
            c["writer"].transport.abort()
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
            await finish(INVALID_ARGUMENT, f"bad request: {e}")
        except (ConnectionError, h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass

    def stop(self):
        if self.loop and self._stopped and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)

