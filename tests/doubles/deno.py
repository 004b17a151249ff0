"""Double of Deno Sandbox (Deno Deploy): the sandbox API (JSON-RPC 2.0 over
one WebSocket, plus a few REST calls) and the console's sandbox list, on
one server, as @deno/sandbox 0.13 and the reference (providers.md
section 6) describe it. Point both DENO_SANDBOX_ENDPOINT and
DENO_DEPLOY_ENDPOINT at it.

Implements: create (`/api/v3/sandboxes/create` WebSocket upgrade: the
`x-deno-sandbox-config` header, the id in `x-deno-sandbox-id`; a bad token
is answered 401 {"code":"INVALID_TOKEN"} before the upgrade), reconnect
(`/api/v3/sandbox/{id}/connect`), lifetime (no `stop_at_ms` in the config =
"session": the sandbox stops when its creating WebSocket closes; with one,
it stops then; `PATCH /api/v3/sandbox/{id} {stop_at_ms}` moves it, a time
not in the future stops it now), kill (`DELETE /api/v3/sandbox/{id}` on the
sandbox host as the JS SDK does, `DELETE /api/v3/sandboxes/{id}` on the
console as the Python SDK does: both stop it and close its WebSockets),
lists (`/api/v2/sandboxes`, `/api/v3/sandboxes`), `expose/http` (a domain
on the double: `127.0.0.1:PORT/__preview__/{id}/{port}`; the SDK prefixes
https://, a test uses http://); RPC methods spawn (stdout/stderr as
`$sandbox.stream.start/enqueue/end` notifications with base64 data, stdin
from a client stream), processWait, processKill, readFile, readTextFile,
writeFile, writeTextFile (content inline or as a client stream), readDir,
mkdir, remove, rename, stat, envGet/envSet/envDelete/envToObject,
exposeHttp, abort; text "ping" is answered "pong"; unknown methods get
JSON-RPC -32601; invalid JSON closes with 4000, invalid JSON-RPC with 4001.
Each RPC call is logged as method "RPC", route "rpc.<method>"; faults on
"rpc.<method>" apply delay, hang, reset (the WebSocket dies) and status /
unauthorized (a JSON-RPC error -32000); drop_after / chunk_delay on
"create" or "connect" act on that connection's process output.
Not implemented: `expose/ssh` (answers 501: the double runs no SSH server,
and SSH is Deno's only interactive terminal), spawnDeno/REPL/fetch/vscode,
volumes and snapshots, deploy, apps. A stopped sandbox cannot be started
again (as on the service: connect answers 404).
"""
import asyncio
import base64
import binascii
import json
import secrets
import signal
import time

from aiohttp import WSMsgType, web

from ._core import Answer, ByteQueue, Double, Dropped, FsError, Output, Sandbox, iso, jobj, run_exec

ID_ALPHABET = "0123456789abcdefghjkmnpqrstuvwxyz"  # what the SDK's id pattern allows
FS_ERRORS = {"ENOENT": ("NotFound", "No such file or directory (os error 2)"),
             "EEXIST": ("AlreadyExists", "File exists (os error 17)"),
             "EISDIR": ("IsADirectory", "Is a directory (os error 21)"),
             "ENOTDIR": ("NotADirectory", "Not a directory (os error 20)"),
             "ENOTEMPTY": ("Error", "Directory not empty (os error 39)")}


class DenoDouble(Double):
    name = "deno"
    key_prefix = "ddo_"

    def error(self, request, status, code, message):
        return web.json_response({"code": code.upper(), "message": message}, status=status)

    def unauthorized(self, request):
        return web.json_response({"code": "INVALID_TOKEN", "message": "The provided token is invalid"}, status=401)

    def routes(self, app):
        r = app.router
        r.add_get("/api/v3/sandboxes/create", self.create, name="create")
        r.add_get("/api/v3/sandbox/{sid}/connect", self.connect, name="connect")
        r.add_patch("/api/v3/sandbox/{sid}", self.patch, name="stop")
        r.add_delete("/api/v3/sandbox/{sid}", self.kill, name="delete")
        r.add_delete("/api/v3/sandboxes/{sid}", self.kill, name="delete:console")
        r.add_get("/api/v3/sandboxes", self.list_v3, name="list")
        r.add_get("/api/v2/sandboxes", self.list_v2, name="list:v2")
        r.add_post("/api/v3/sandbox/{sid}/expose/http", self.expose_http, name="expose")
        r.add_post("/api/v3/sandbox/{sid}/expose/ssh", self.expose_ssh, name="expose:ssh")

    # -- lifecycle
    def alive(self, sb):
        if sb.status == "running" and sb.stop_at_ms is not None and sb.stop_at_ms <= time.time() * 1000:
            self.stop_now(sb, "timeout")
        return sb.status == "running"

    def stop_now(self, sb, why):
        if sb.status != "running":
            return
        sb.status, sb.stopped_at, sb.stop_reason = "stopped", time.time(), why
        for p in sb.procs.values():
            if not p["task"].done():
                p["task"].cancel()
        for ws in list(sb.conns):
            asyncio.ensure_future(ws.close(code=1001, message=f"sandbox stopped: {why}".encode()))
        if sb.timer:
            sb.timer.cancel()

    def arm(self, sb):
        if sb.timer:
            sb.timer.cancel()
            sb.timer = None
        if sb.stop_at_ms is not None:
            delay = max(0.0, sb.stop_at_ms / 1000 - time.time())
            sb.timer = asyncio.get_running_loop().call_later(delay, self.stop_now, sb, "timeout")

    def find(self, request, alive=True):
        sb = self.sandboxes.get(request.match_info["sid"])
        if sb is None or (alive and not self.alive(sb)):
            raise Answer(self.error(request, 404, "SANDBOX_NOT_FOUND", "sandbox not found or not running"))
        return sb

    async def create(self, request):
        raw = request.headers.get("x-deno-sandbox-config")
        config = {}
        if raw:
            try:
                config = json.loads(base64.b64decode(raw, validate=True))
            except (binascii.Error, ValueError):
                return self.error(request, 400, "INVALID_CONFIG", "x-deno-sandbox-config is not base64 JSON")
        if not isinstance(config, dict):
            return self.error(request, 400, "INVALID_CONFIG", "config must be a JSON object")
        ws = web.WebSocketResponse(heartbeat=None, compress=False)
        if not ws.can_prepare(request).ok:
            return self.error(request, 400, "UPGRADE_REQUIRED", "create is a WebSocket upgrade")
        region = config.get("region") or "ord"
        sid = f"sbx_{region[:3]}_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(20))
        sb = Sandbox(sid, env=config.get("env") or {}, config=config, region=region, status="running",
                     stop_at_ms=config.get("stop_at_ms"), session_bound=config.get("stop_at_ms") is None,
                     stopped_at=None, stop_reason=None, labels=config.get("labels") or {}, procs={},
                     conns=set(), timer=None, next_pid=7, cwd="/home/app")
        sb.fs.mkdir("/home/app", parents=True)
        self.sandboxes[sid] = sb
        self.arm(sb)
        ws.headers["x-deno-sandbox-id"] = sid
        ws.headers["x-deno-trace-id"] = secrets.token_hex(8)
        await ws.prepare(request)
        await self.serve_rpc(request, ws, sb)
        if sb.session_bound:
            self.stop_now(sb, "session closed")
        return ws

    async def connect(self, request):
        sb = self.find(request)
        ws = web.WebSocketResponse(heartbeat=None, compress=False)
        if not ws.can_prepare(request).ok:
            return self.error(request, 400, "UPGRADE_REQUIRED", "connect is a WebSocket upgrade")
        ws.headers["x-deno-sandbox-id"] = sb.id
        await ws.prepare(request)
        await self.serve_rpc(request, ws, sb)
        return ws

    async def patch(self, request):
        sb = self.find(request)
        body = jobj(await request.text())
        stop_at = body.get("stop_at_ms")
        if not isinstance(stop_at, (int, float)):
            return self.error(request, 400, "INVALID_REQUEST", "stop_at_ms (number) is required")
        sb.stop_at_ms, sb.session_bound = int(stop_at), False
        if stop_at <= time.time() * 1000:
            self.stop_now(sb, "stopped")
        else:
            self.arm(sb)
        return web.json_response({"stop_at_ms": sb.stop_at_ms})

    async def kill(self, request):
        sb = self.find(request, alive=False)
        self.stop_now(sb, "killed")
        return web.Response(status=204)

    def item(self, sb):
        self.alive(sb)
        return {"id": sb.id, "created_at": iso(sb.created_at), "region": sb.region, "status": sb.status,
                "stopped_at": iso(sb.stopped_at) if sb.stopped_at else None, "labels": sb.labels}

    async def list_v3(self, request):
        return web.json_response([self.item(s) for s in self.sandboxes.values()])

    async def list_v2(self, request):
        labels = {k[7:-1]: v for k, v in request.query.items() if k.startswith("labels[") and k.endswith("]")}
        items = [self.item(s) for s in self.sandboxes.values()
                 if all(s.labels.get(k) == v for k, v in labels.items())]
        return web.json_response([{"id": i["id"], "createdAt": i["created_at"], "region": i["region"],
                                   "status": i["status"], "stoppedAt": i["stopped_at"], "labels": i["labels"]}
                                  for i in items])

    async def expose_http(self, request):
        sb = self.find(request)
        body = jobj(await request.text())
        port = body.get("port") or 8000
        domain = f"{self.url.split('://', 1)[1]}/__preview__/{sb.id}/{port}"
        sb.ports[port] = "http://" + domain + "/"
        return web.json_response({"domain": domain})

    async def expose_ssh(self, request):
        self.find(request)
        return self.error(request, 501, "NOT_IMPLEMENTED", "the Deno double runs no SSH server")

    # -- JSON-RPC over the WebSocket
    async def serve_rpc(self, request, ws, sb):
        conn = {"streams": {}, "tasks": set()}
        sb.conns.add(ws)
        out_lock = asyncio.Lock()

        async def send(obj):
            async with out_lock:
                await ws.send_str(json.dumps(obj))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if msg.data == "ping":
                    await ws.send_str("pong")
                    continue
                try:
                    m = json.loads(msg.data)
                except ValueError:
                    await ws.close(code=4000, message=b"Invalid JSON")
                    break
                if not isinstance(m, dict) or m.get("jsonrpc") != "2.0" or not isinstance(m.get("method"), str):
                    await ws.close(code=4001, message=b"Invalid JSON-RPC")
                    break
                if "id" not in m:
                    self.client_stream(conn, m)
                    continue
                t = asyncio.ensure_future(self.answer(request, sb, conn, m, send))
                conn["tasks"].add(t)
                t.add_done_callback(conn["tasks"].discard)
        except Dropped:
            pass
        finally:
            sb.conns.discard(ws)
            for t in list(conn["tasks"]):
                t.cancel()
        return ws

    def client_stream(self, conn, m):
        p = m.get("params") or {}
        sid = p.get("streamId")
        q = conn["streams"].setdefault(sid, ByteQueue())
        if m["method"] == "$sandbox.stream.enqueue":
            try:
                q.push(base64.b64decode(p.get("data") or ""))
            except binascii.Error:
                q.eof()
        elif m["method"] in ("$sandbox.stream.end", "$sandbox.stream.error", "$sandbox.stream.cancel"):
            q.eof()

    async def answer(self, request, sb, conn, m, send):
        method, params = m["method"], m.get("params") or {}
        fn = getattr(self, "rpc_" + method, None) if method.isidentifier() else None
        entry = self.log("RPC", method, "rpc." + method)
        hit = self.take_fault("rpc." + method)
        k = hit.kind if hit else {}
        try:
            if k.get("delay"):
                await asyncio.sleep(k["delay"])
            if k.get("hang"):
                await asyncio.sleep(3600)
            if k.get("reset"):
                request.transport.abort()
                return
            if k.get("status") or k.get("unauthorized"):
                reply = {"error": {"code": -32000, "message": k.get("message", f"injected fault on {method}")}}
            elif fn is None:
                reply = {"error": {"code": -32601, "message": "Method not found"}}
            elif not self.alive(sb):
                reply = {"result": {"error": _err("Error", "sandbox is stopped", None)}}
            else:
                try:
                    reply = {"result": {"ok": await fn(sb, conn, params, send, request)}}
                except FsError as e:
                    name, text = FS_ERRORS.get(e.code, ("Error", e.code))
                    reply = {"result": {"error": _err(name, f"{text}: '{e.path}'", e.code)}}
                except _RpcInvalid as e:
                    reply = {"error": {"code": -32602, "message": str(e)}}
            entry["status"] = "error" if "error" in reply or "error" in reply.get("result", {}) else "ok"
            await send({"jsonrpc": "2.0", "id": m["id"], **reply})
        except Dropped:
            pass

    def path(self, sb, params, key="path"):
        p = params.get(key)
        if not isinstance(p, str) or not p:
            raise _RpcInvalid(f"{key} must be a non-empty string")
        return sb.fs.norm(p, sb.cwd)

    async def content(self, conn, params):
        if params.get("contentStreamId") is not None:
            q = conn["streams"].setdefault(params["contentStreamId"], ByteQueue())
            return await q.read_all()
        c = params.get("content")
        if c is None:
            raise _RpcInvalid("content or contentStreamId is required")
        return c

    async def rpc_spawn(self, sb, conn, params, send, request):
        command = params.get("command")
        if not isinstance(command, str) or not command:
            raise _RpcInvalid("command must be a non-empty string")
        argv = [command, *(params.get("args") or [])]
        pid = sb.next_pid
        sb.next_pid += 1
        ids = {1: 1_000_000 + pid * 2 if params.get("stdout") == "piped" else None,
               2: 1_000_001 + pid * 2 if params.get("stderr") == "piped" else None}
        stdin = None
        if params.get("stdinStreamId") is not None:
            stdin = conn["streams"].setdefault(params["stdinStreamId"], ByteQueue())
        else:
            stdin = ByteQueue()
            stdin.eof()
        env = {} if params.get("clearEnv") else dict(sb.env)
        env.update(params.get("env") or {})
        proc = {"pid": pid, "argv": argv, "code": None, "signal": None, "done": asyncio.Event(), "task": None}
        sb.procs[pid] = proc

        async def emit(fd, data):
            if ids.get(fd) is not None:
                await send({"jsonrpc": "2.0", "method": "$sandbox.stream.enqueue",
                            "params": {"streamId": ids[fd], "data": base64.b64encode(data).decode()}})

        async def run():
            for fd in (1, 2):
                if ids[fd] is not None:
                    await send({"jsonrpc": "2.0", "method": "$sandbox.stream.start", "params": {"streamId": ids[fd]}})
            try:
                out = Output(self, request, emit)
                proc["code"] = await run_exec(sb, out, argv=argv, env=env, cwd=params.get("cwd"), stdin=stdin,
                                              record={"env": params.get("env") or {}})
            except asyncio.CancelledError:
                proc["code"], proc["signal"] = 128 + proc.get("signum", signal.SIGTERM), proc.get("signame", "SIGTERM")
                sb.execs[-1]["exit_code"] = proc["code"]
            finally:
                proc["done"].set()
            out.gate()
            for fd in (1, 2):
                if ids[fd] is not None:
                    await send({"jsonrpc": "2.0", "method": "$sandbox.stream.end", "params": {"streamId": ids[fd]}})

        async def later():
            await asyncio.sleep(0)  # the spawn answer goes first
            try:
                await run()
            except Dropped:
                pass
        proc["task"] = asyncio.ensure_future(later())
        conn["tasks"].add(proc["task"])
        return {"pid": pid, "stdoutStreamId": ids[1], "stderrStreamId": ids[2]}

    def proc(self, sb, params):
        p = sb.procs.get(params.get("pid"))
        if p is None:
            raise FsError("ENOENT", f"pid {params.get('pid')}")
        return p

    async def rpc_processWait(self, sb, conn, params, send, request):
        p = self.proc(sb, params)
        await p["done"].wait()
        return {"success": p["code"] == 0, "code": p["code"], "signal": p["signal"], "oom": None}

    async def rpc_processKill(self, sb, conn, params, send, request):
        p = self.proc(sb, params)
        name = params.get("signal") or "SIGTERM"
        p["signame"], p["signum"] = name, getattr(signal, name, signal.SIGTERM)
        if not p["task"].done():
            p["task"].cancel()
        return None

    async def rpc_readFile(self, sb, conn, params, send, request):
        return base64.b64encode(sb.fs.read(self.path(sb, params))).decode()

    async def rpc_readTextFile(self, sb, conn, params, send, request):
        return sb.fs.read(self.path(sb, params)).decode(errors="replace")

    async def write(self, sb, conn, params, text):
        path = self.path(sb, params)
        opts = params.get("options") or {}
        data = await self.content(conn, params)
        if isinstance(data, str):
            data = data.encode() if text else base64.b64decode(data)
        if opts.get("createNew") and sb.fs.exists(path):
            raise FsError("EEXIST", path)
        if opts.get("create") is False and not sb.fs.exists(path):
            raise FsError("ENOENT", path)
        sb.fs.write(path, data, parents=False, mode=opts.get("mode") or 0o644, append=bool(opts.get("append")))
        return None

    async def rpc_writeFile(self, sb, conn, params, send, request):
        return await self.write(sb, conn, params, text=False)

    async def rpc_writeTextFile(self, sb, conn, params, send, request):
        return await self.write(sb, conn, params, text=True)

    async def rpc_readDir(self, sb, conn, params, send, request):
        return [{"name": e["name"], "isFile": not e["is_dir"], "isDirectory": e["is_dir"], "isSymlink": False}
                for e in sb.fs.list(self.path(sb, params))]

    async def rpc_mkdir(self, sb, conn, params, send, request):
        path = self.path(sb, params)
        opts = params.get("options") or {}
        if sb.fs.exists(path) and not opts.get("recursive"):
            raise FsError("EEXIST", path)
        sb.fs.mkdir(path, parents=bool(opts.get("recursive")), mode=opts.get("mode") or 0o755)
        return None

    async def rpc_remove(self, sb, conn, params, send, request):
        sb.fs.remove(self.path(sb, params), recursive=bool((params.get("options") or {}).get("recursive")))
        return None

    async def rpc_rename(self, sb, conn, params, send, request):
        old, new = self.path(sb, params, "oldPath"), self.path(sb, params, "newPath")
        sb.fs.write(new, sb.fs.read(old))
        sb.fs.remove(old)
        return None

    async def rpc_stat(self, sb, conn, params, send, request):
        st = sb.fs.stat(self.path(sb, params))
        t = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(st["mtime"]))
        return {"isFile": not st["is_dir"], "isDirectory": st["is_dir"], "isSymlink": False, "size": st["size"],
                "mtime": t, "atime": t, "birthtime": t, "ctime": t,
                "mode": st["mode"] | (0o040000 if st["is_dir"] else 0o100000), "dev": 1, "ino": 1, "nlink": 1,
                "uid": 1000, "gid": 1000, "rdev": 0, "blksize": 4096, "blocks": (st["size"] + 511) // 512,
                "isBlockDevice": False, "isCharDevice": False, "isFifo": False, "isSocket": False}

    async def rpc_envGet(self, sb, conn, params, send, request):
        return sb.env.get(params.get("key"))

    async def rpc_envSet(self, sb, conn, params, send, request):
        if not isinstance(params.get("key"), str) or not isinstance(params.get("value"), str):
            raise _RpcInvalid("key and value must be strings")
        sb.env[params["key"]] = params["value"]
        return None

    async def rpc_envDelete(self, sb, conn, params, send, request):
        sb.env.pop(params.get("key"), None)
        return None

    async def rpc_envToObject(self, sb, conn, params, send, request):
        return dict(sb.env)

    async def rpc_exposeHttp(self, sb, conn, params, send, request):
        if not params.get("domain"):
            raise _RpcInvalid("domain is required")
        return None

    async def rpc_abort(self, sb, conn, params, send, request):
        return None


class _RpcInvalid(Exception):
    """Bad params: JSON-RPC -32602."""


def _err(constructor, message, code):
    return {"constructorName": constructor, "message": message, "code": code, "stack": None, "cause": None,
            "errors": None, "name": None, "suppressed": None, "error": None}
