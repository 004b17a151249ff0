"""Double of E2B (reference section 9): the REST control plane (`X-API-Key`)
and, on the same port, each sandbox's envd, told apart the way E2B's
shared sandbox host does it: by the `E2b-Sandbox-Id` / `E2b-Sandbox-Port`
headers the SDK always sends (point the SDK's E2B_SANDBOX_URL here).
An independent small server: it shares nothing with daemon/e2b*.c.

Implements: create (201, `envdAccessToken` when secure), get, list (v2),
pause (204, 409 when already paused), connect/resume, timeout, delete;
envd `/health`; Connect-RPC with the JSON codec: `process.Process/Start`
as a server stream of 5-byte envelopes (start, data as base64, end; the
end-of-stream envelope with flag 0x02), with a PTY (`pty.size`, output as
`data.pty`), `SendInput`, `CloseStdin`, `SendSignal`, `Update` (resize),
`List`; `filesystem.Filesystem/ListDir|Stat|MakeDir|Remove`; the HTTP
`/files` download and upload (raw octet-stream or multipart `file`).
envd calls need `X-Access-Token` of the sandbox; a paused sandbox's envd
answers 502 as E2B's proxy does. proto3 JSON omits zero values, so an
exit code 0 is absent from `end`, as on the wire.
Snapshots (`POST /sandboxes/{id}/snapshots` -> {snapshotID, names}) keep a
copy of the sandbox's files; a create whose templateID is one starts with
them; `DELETE /templates/{id}` deletes one (404 for an unknown id).
Not implemented: templates (but snapshots), volumes, fork, metrics, logs,
watchers, `Process/Connect`, `StreamInput`, signed file URLs, previews on
`{port}-{id}` hosts (previews are served on the shared host: another
`E2b-Sandbox-Port` than envd's).
"""
import asyncio
import base64
import json
import signal as _signal
import struct
import time

from aiohttp import web

from ._core import Answer, ByteQueue, Double, Dropped, FsError, Interpreter, Output, PtyShell, Sandbox, \
    iso, new_id, run_exec

ENVD_PORT = "49983"
ENVD_VERSION = "0.5.7"
HOME = "/home/user"
CONNECT_CODES = {400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied", 404: "not_found",
                 409: "already_exists", 429: "resource_exhausted", 500: "internal", 501: "unimplemented",
                 502: "unavailable", 503: "unavailable", 504: "deadline_exceeded"}
SIGNALS = {"SIGNAL_SIGKILL": _signal.SIGKILL, "SIGNAL_SIGTERM": _signal.SIGTERM}


def envelope(obj, flags=0):
    data = json.dumps(obj).encode()
    return struct.pack(">BI", flags, len(data)) + data


def b64(data):
    return base64.b64encode(data).decode()


class Proc:
    """A process envd runs: what SendInput, SendSignal and Update reach."""

    def __init__(self, pid, tag, argv, pty):
        self.pid, self.tag, self.argv, self.pty = pid, tag, argv, pty
        self.stdin = ByteQueue()
        self.shell = None
        self.task = None
        self.signal = None
        self.rec = None


class E2BDouble(Double):
    name = "e2b"
    key_prefix = "e2b_"

    def __init__(self, key=None):
        super().__init__(key)
        self.next_pid = 100
        self.key_in_sandbox = []  # envd requests that carried the API key

    # -- shapes
    def envd_route(self, request):
        r = request.match_info.route.name if request.match_info.route else ""
        return (r or "").startswith(("envd", "exec", "process.", "fs."))

    def authorized(self, request):
        if self.envd_route(request):
            # the API key belongs to the control plane: a sandbox never sees it
            if any(self.key in v for v in request.headers.values()):
                self.key_in_sandbox.append(request.path)
            sb = self.sandboxes.get(request.headers.get("E2b-Sandbox-Id", ""))
            return sb is not None and (not sb.secure or request.headers.get("X-Access-Token") == sb.access_token)
        return request.headers.get("X-API-Key") == self.key

    @web.middleware
    async def shared_host_preview(self, request, handler):
        """Another port than envd's on the shared sandbox host (headers
        E2b-Sandbox-Id / E2b-Sandbox-Port): a preview of that port, public
        as E2B's are, answered by the stand-in server of every double."""
        port = request.headers.get("E2b-Sandbox-Port")
        if port is None or port == ENVD_PORT or not port.isdigit():
            return await handler(request)
        sid = request.headers.get("E2b-Sandbox-Id", "")
        entry = {"method": request.method, "path": request.path, "query": {}, "route": "preview",
                 "status": None, "time": time.time(), "authorized": True}
        with self.lock:
            self.requests.append(entry)
        sb = self.sandboxes.get(sid)
        if sb is None or sb.state != "running":
            resp = web.json_response({"code": 502, "message": "The sandbox was not found"}, status=502)
        else:
            resp = web.Response(text=f"preview of {sid} port {port}: {request.method} {request.path}\n")
        entry["status"] = resp.status
        return resp

    def error(self, request, status, code, message):
        if "." in request.path.split("/")[1]:
            # Connect-RPC: {code: "not_found", message}
            return web.json_response({"code": CONNECT_CODES.get(status, "unknown"), "message": message},
                                     status=status)
        return web.json_response({"code": status, "message": message}, status=status)

    def unauthorized(self, request):
        if self.envd_route(request):
            return self.error(request, 401, "unauthenticated", "missing or wrong X-Access-Token")
        return self.error(request, 401, "unauthorized", "Invalid API key, it must start with 'e2b_'")

    def routes(self, app):
        app.middlewares.insert(0, self.shared_host_preview)
        r = app.router
        r.add_post("/sandboxes", self.create, name="create")
        r.add_get("/v2/sandboxes", self.list, name="list")
        r.add_get("/sandboxes/{id}", self.get, name="get")
        r.add_delete("/sandboxes/{id}", self.delete, name="delete")
        r.add_post("/sandboxes/{id}/pause", self.pause, name="pause")
        r.add_post("/sandboxes/{id}/connect", self.connect, name="connect")
        r.add_post("/sandboxes/{id}/resume", self.connect, name="resume")
        r.add_post("/sandboxes/{id}/timeout", self.set_timeout, name="timeout")
        r.add_post("/sandboxes/{id}/snapshots", self.snapshot_sb, name="snapshot")
        r.add_delete("/templates/{tid}", self.template_delete, name="snapshot.delete")
        r.add_get("/health", self.health, name="envd.health")
        r.add_post("/process.Process/Start", self.start_process, name="exec")
        for m in ("SendInput", "CloseStdin", "SendSignal", "Update", "List"):
            r.add_post(f"/process.Process/{m}", getattr(self, "p_" + m), name=f"process.{m}")
        for m in ("ListDir", "Stat", "MakeDir", "Remove"):
            r.add_post(f"/filesystem.Filesystem/{m}", getattr(self, "fs_" + m), name=f"fs.{m}")
        r.add_get("/files", self.files_read, name="fs.read")
        r.add_post("/files", self.files_write, name="fs.write")

    # -- control plane
    def find(self, request):
        sb = self.sandboxes.get(request.match_info["id"])
        if sb is None:
            raise Answer(self.error(request, 404, "not_found", f"sandbox \"{request.match_info['id']}\" doesn't exist"))
        return sb

    def info(self, sb):
        return {"sandboxID": sb.id, "templateID": sb.template, "alias": sb.template, "clientID": "double",
                "envdVersion": ENVD_VERSION, "envdAccessToken": sb.access_token, "domain": None}

    def detail(self, sb):
        return {**self.info(sb), "state": sb.state, "startedAt": iso(sb.created_at),
                "endAt": iso(sb.created_at + sb.timeout), "cpuCount": 2, "memoryMB": 512, "diskSizeMB": 1024,
                "metadata": sb.metadata}

    async def create(self, request):
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("templateID"), str):
            return self.error(request, 400, "bad_request", "templateID is required")
        secure = body.get("secure", False) is True
        sb = Sandbox(new_id("i"), env=body.get("envVars") or {}, template=body["templateID"],
                     timeout=int(body.get("timeout", 15)), metadata=body.get("metadata") or {},
                     secure=secure, access_token=new_id("ea_", 24) if secure else None, state="running",
                     procs={}, pauses=0)
        if body["templateID"] in self.snapshots:
            sb.fs = self.snapshots[body["templateID"]]["fs"].clone()
        sb.fs.mkdir(HOME, parents=True)
        self.sandboxes[sb.id] = sb
        return web.json_response(self.info(sb), status=201)

    async def list(self, request):
        states = request.query.get("state", "running,paused").split(",")
        return web.json_response([self.detail(s) for s in self.sandboxes.values() if s.state in states])

    async def get(self, request):
        return web.json_response(self.detail(self.find(request)))

    async def delete(self, request):
        sb = self.find(request)
        for p in sb.procs.values():
            if p.task:
                p.task.cancel()
        del self.sandboxes[sb.id]
        return web.Response(status=204)

    async def pause(self, request):
        sb = self.find(request)
        if sb.state == "paused":
            return self.error(request, 409, "conflict", f"sandbox {sb.id} is already paused")
        sb.state = "paused"
        sb.pauses += 1
        return web.Response(status=204)

    async def connect(self, request):
        sb = self.find(request)
        resumed = sb.state == "paused"
        sb.state = "running"
        return web.json_response(self.info(sb), status=201 if resumed else 200)

    async def snapshot_sb(self, request):
        sb = self.find(request)
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return self.error(request, 400, "bad_request", "body must be JSON")
        sid = new_id("snap")
        name = body.get("name") if isinstance(body, dict) else None
        self.snapshots[sid] = {"id": sid, "names": [name or sid], "fs": sb.fs.clone(), "source": sb.id}
        return web.json_response({"snapshotID": sid, "names": [name or sid]}, status=201)

    async def template_delete(self, request):
        tid = request.match_info["tid"]
        if tid not in self.snapshots:
            return self.error(request, 404, "not_found", f"template \"{tid}\" doesn't exist")
        del self.snapshots[tid]
        return web.Response(status=204)

    async def set_timeout(self, request):
        sb = self.find(request)
        sb.timeout = int((await request.json()).get("timeout", sb.timeout))
        return web.Response(status=204)

    # -- envd
    def envd_sandbox(self, request):
        sb = self.sandboxes.get(request.headers.get("E2b-Sandbox-Id", ""))
        if sb is None or request.headers.get("E2b-Sandbox-Port") != ENVD_PORT:
            raise Answer(web.json_response({"code": 502, "message": "The sandbox was not found"}, status=502))
        if sb.state != "running":
            raise Answer(web.json_response({"code": 502, "message": f"The sandbox {sb.id} is paused"}, status=502))
        return sb

    async def health(self, request):
        self.envd_sandbox(request)
        return web.Response(status=204)

    async def start_process(self, request):
        sb = self.envd_sandbox(request)
        raw = await request.read()
        if not request.content_type == "application/connect+json" or len(raw) < 5:
            return self.error(request, 415, "invalid_argument", "a Connect stream wants one application/connect+json envelope")
        flags, n = struct.unpack(">BI", raw[:5])
        if len(raw) < 5 + n:
            return self.error(request, 400, "invalid_argument", "truncated envelope")
        msg = json.loads(raw[5:5 + n])
        proc_in = msg.get("process") or {}
        cmd = proc_in.get("cmd")
        if not isinstance(cmd, str) or not cmd:
            return self.error(request, 400, "invalid_argument", "process.cmd is required")
        args = [a for a in proc_in.get("args") or []]
        # bash -l -c SCRIPT: the login flag means nothing to the interpreter
        if cmd in ("/bin/bash", "bash", "/bin/sh", "sh") and "-c" in args:
            args = args[args.index("-c"):]
        argv = [cmd, *args]
        pty = msg.get("pty")
        self.next_pid += 1
        proc = Proc(self.next_pid, msg.get("tag"), argv, pty)
        sb.procs[proc.pid] = proc
        resp = web.StreamResponse(headers={"Content-Type": "application/connect+json"})
        await resp.prepare(request)
        stream = "pty" if pty else None

        async def send(fd, data):
            key = stream or ("stdout" if fd == 1 else "stderr")
            await resp.write(envelope({"event": {"data": {key: b64(data)}}}))
        out = Output(self, request, send)
        env = proc_in.get("envs") or {}
        cwd = proc_in.get("cwd") or HOME
        try:
            await resp.write(envelope({"event": {"start": {"pid": proc.pid}}}))
            if pty:
                size = pty.get("size") or {}
                proc.rec = {"id": proc.pid, "argv": argv, "cols": size.get("cols"), "rows": size.get("rows"),
                            "resizes": [], "input": bytearray(), "exit_code": None}
                sb.pty.append(proc.rec)
                proc.shell = PtyShell(Interpreter(sb.fs, {**sb.env, **env}, cwd), lambda d: out(1, d))
                proc.task = asyncio.ensure_future(self._pty(proc))
            else:
                if not msg.get("stdin"):
                    proc.stdin.eof()
                proc.task = asyncio.ensure_future(run_exec(sb, out, argv=argv, env=env, cwd=cwd, stdin=proc.stdin))
            try:
                code = await asyncio.shield(proc.task)
                end = {"exited": True, "status": f"exit status {code}"}
                if code:
                    end["exitCode"] = code
            except asyncio.CancelledError:
                if not proc.task.cancelled():
                    raise
                sig = proc.signal or _signal.SIGKILL
                if sb.execs and sb.execs[-1].get("exit_code") is None:
                    sb.execs[-1]["exit_code"] = 128 + sig
                end = {"exitCode": -1, "exited": False, "status": f"signal: {_signal.Signals(sig).name[3:].lower()}"}
            if proc.rec is not None:
                proc.rec["exit_code"] = end.get("exitCode", 0)
            out.gate()
            await resp.write(envelope({"event": {"end": end}}))
            await resp.write(envelope({}, flags=0x02))
            await resp.write_eof()
        except Dropped:
            pass
        finally:
            sb.procs.pop(proc.pid, None)
        return resp

    async def _pty(self, proc):
        await proc.shell.start()
        async for data in proc.stdin:
            await proc.shell.feed(data)
            if proc.shell.exit_code is not None:
                return proc.shell.exit_code
        return 0

    def select(self, request, sb, body):
        sel = body.get("process") or {}
        for p in sb.procs.values():
            if ("pid" in sel and p.pid == sel["pid"]) or ("tag" in sel and p.tag is not None and p.tag == sel["tag"]):
                return p
        raise Answer(self.error(request, 404, "not_found", f"process {sel} not found"))

    async def p_SendInput(self, request):
        sb = self.envd_sandbox(request)
        body = await request.json()
        p = self.select(request, sb, body)
        inp = body.get("input") or {}
        data = base64.b64decode(inp.get("pty") or inp.get("stdin") or "")
        if p.rec is not None:
            p.rec["input"].extend(data)
        p.stdin.push(data)
        return web.json_response({})

    async def p_CloseStdin(self, request):
        sb = self.envd_sandbox(request)
        self.select(request, sb, await request.json()).stdin.eof()
        return web.json_response({})

    async def p_SendSignal(self, request):
        sb = self.envd_sandbox(request)
        body = await request.json()
        p = self.select(request, sb, body)
        p.signal = SIGNALS.get(body.get("signal"), _signal.SIGKILL)
        if p.task:
            p.task.cancel()
        return web.json_response({})

    async def p_Update(self, request):
        sb = self.envd_sandbox(request)
        body = await request.json()
        p = self.select(request, sb, body)
        size = (body.get("pty") or {}).get("size") or {}
        if p.rec is not None and size:
            p.rec["cols"], p.rec["rows"] = size.get("cols"), size.get("rows")
            p.rec["resizes"].append((size.get("cols"), size.get("rows")))
        return web.json_response({})

    async def p_List(self, request):
        sb = self.envd_sandbox(request)
        return web.json_response({"processes": [
            {"pid": p.pid, "tag": p.tag, "config": {"cmd": p.argv[0], "args": p.argv[1:]}}
            for p in sb.procs.values()]})

    # -- files
    def fs_error(self, request, e):
        status = {"ENOENT": 404, "EEXIST": 409}.get(e.code, 400)
        if request.path == "/files":
            msg = f"path '{e.path}' does not exist" if e.code == "ENOENT" else f"{e.code}: {e.path}"
            return web.json_response({"code": status, "message": msg}, status=status)
        return self.error(request, status, e.code, f"{e.code}: {e.path}")

    def entry(self, st):
        return {"name": st["name"], "type": "FILE_TYPE_DIRECTORY" if st["is_dir"] else "FILE_TYPE_FILE",
                "path": st["path"], "size": str(st["size"]), "mode": st["mode"], "permissions": oct(st["mode"]),
                "owner": "user", "group": "user", "modifiedTime": iso(st["mtime"])}

    def fs_path(self, sb, p):
        if not isinstance(p, str) or not p:
            raise FsError("EINVAL", p or "", "path is required")
        return sb.fs.norm(p, HOME)

    async def fs_call(self, request, fn):
        sb = self.envd_sandbox(request)
        body = await request.json()
        try:
            return web.json_response(fn(sb, body))
        except FsError as e:
            return self.fs_error(request, e)

    async def fs_ListDir(self, request):
        return await self.fs_call(request, lambda sb, b: {
            "entries": [self.entry(e) for e in sb.fs.list(self.fs_path(sb, b.get("path")))]})

    async def fs_Stat(self, request):
        return await self.fs_call(request, lambda sb, b: {"entry": self.entry(sb.fs.stat(self.fs_path(sb, b.get("path"))))})

    async def fs_MakeDir(self, request):
        def mk(sb, b):
            p = self.fs_path(sb, b.get("path"))
            if sb.fs.exists(p):
                raise FsError("EEXIST", p)
            sb.fs.mkdir(p, parents=True)
            return {"entry": self.entry(sb.fs.stat(p))}
        return await self.fs_call(request, mk)

    async def fs_Remove(self, request):
        def rm(sb, b):
            sb.fs.remove(self.fs_path(sb, b.get("path")), recursive=True)
            return {}
        return await self.fs_call(request, rm)

    async def files_read(self, request):
        sb = self.envd_sandbox(request)
        try:
            data = sb.fs.read(self.fs_path(sb, request.query.get("path")))
        except FsError as e:
            return self.fs_error(request, e)
        return web.Response(body=data, content_type="application/octet-stream")

    async def files_write(self, request):
        sb = self.envd_sandbox(request)
        written = []
        try:
            if request.content_type.startswith("multipart/"):
                reader = await request.multipart()
                async for part in reader:
                    if part.name != "file":
                        continue
                    path = self.fs_path(sb, request.query.get("path") or part.filename)
                    sb.fs.write(path, await part.read())
                    written.append(path)
            else:
                path = self.fs_path(sb, request.query.get("path"))
                sb.fs.write(path, await request.read())
                written.append(path)
        except FsError as e:
            return self.fs_error(request, e)
        return web.json_response([{"path": p, "name": p.rsplit("/", 1)[-1], "type": "file"} for p in written])
