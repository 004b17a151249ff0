"""Double of Hopx (api.hopx.dev, reference section 11), as @hopx-ai/sdk
drives it: a control plane (`X-API-Key`) and, per sandbox, an agent at
the sandbox's `public_host` reached with `Authorization: Bearer JWT`
(the `auth_token` of create or of `token/refresh`).

The agent is served on the double's own port, at the root: the SDK keeps
only the host of `public_host` for its WebSockets, so an agent cannot
live under a path prefix; which sandbox a call is for comes from its JWT.

Implements: `POST /v1/sandboxes` (201, status `creating`; the first look
moves it to `running`), get, list, `pause`/`resume`, `PUT …/timeout`,
`token/refresh` (a new JWT; earlier ones stay valid until delete),
`DELETE` (204, then 404). Agent: `/commands/run` (`command` + `args`,
`workdir`, `env`, `timeout` in seconds: past it the command ends with
exit 124), `/env` (GET, PUT, PATCH with `merge`), `/files/read`,
`/files/download`, `/files/write` (text, or `encoding: "base64"`),
`/files/list`, `/files/exists`, `/files/remove`, `/files/mkdir`; the
`/execute/stream` WebSocket (`{type:"execute", code, language:"bash"}`
answered with `stdout`/`stderr`/`result`/`complete` messages) and the
`/terminal` WebSocket (`input`/`resize` in, `output`/`exit` out). A
paused sandbox's agent answers 502. The agent health check `/health`.
Not implemented: templates, code execution in other languages,
`/commands/background`, `/execute/*` besides the stream, file watch,
upload, desktop, metrics.
"""
import asyncio
import base64
import json
import time

from aiohttp import WSMsgType, web

from ._core import Answer, Double, Dropped, FsError, Interpreter, Output, PtyShell, Sandbox, iso, jobj, \
    new_id, run_exec

AGENT_ROUTES = ("cmd", "exec", "env", "fs.", "terminal")


class HopxDouble(Double):
    name = "hopx"
    key_prefix = "hopx_live_"

    def __init__(self, key=None):
        super().__init__(key)
        self.tokens = {}  # JWT -> sandbox id
        self.key_in_sandbox = []  # agent requests that carried the API key

    def agent_route(self, request):
        r = request.match_info.route.name if request.match_info.route else ""
        return (r or "").startswith(AGENT_ROUTES)

    def authorized(self, request):
        if self.agent_route(request):
            # the API key belongs to the control plane: the agent runs in the sandbox
            if any(self.key in v for v in request.headers.values()):
                self.key_in_sandbox.append(request.path)
            auth = request.headers.get("Authorization", "")
            return auth.startswith("Bearer ") and auth[7:] in self.tokens
        return request.headers.get("X-API-Key") == self.key

    def open_route(self, route):
        return super().open_route(route) or route == "health"

    def error(self, request, status, code, message):
        return web.json_response({"error": {"code": code, "message": message}, "code": code,
                                  "message": message}, status=status,
                                 headers={"x-request-id": new_id("req_")})

    def routes(self, app):
        r = app.router
        r.add_get("/health", self.health, name="health")
        r.add_post("/v1/sandboxes", self.create, name="create")
        r.add_get("/v1/sandboxes", self.list, name="list")
        r.add_get("/v1/sandboxes/{id}", self.get, name="get")
        r.add_delete("/v1/sandboxes/{id}", self.delete, name="delete")
        r.add_post("/v1/sandboxes/{id}/pause", self.pause, name="pause")
        r.add_post("/v1/sandboxes/{id}/resume", self.resume, name="resume")
        r.add_put("/v1/sandboxes/{id}/timeout", self.set_timeout, name="timeout")
        r.add_post("/v1/sandboxes/{id}/token/refresh", self.refresh, name="token")
        r.add_post("/commands/run", self.run, name="cmd.run")
        r.add_get("/execute/stream", self.stream, name="exec")
        r.add_get("/terminal", self.terminal, name="terminal")
        r.add_route("*", "/env", self.env, name="env")
        r.add_get("/files/read", self.fs_read_text, name="fs.read:text")
        r.add_get("/files/download", self.fs_read, name="fs.read")
        r.add_post("/files/write", self.fs_write, name="fs.write")
        r.add_get("/files/list", self.fs_list, name="fs.list")
        r.add_get("/files/exists", self.fs_exists, name="fs.exists")
        r.add_delete("/files/remove", self.fs_remove, name="fs.remove")
        r.add_post("/files/mkdir", self.fs_mkdir, name="fs.mkdir")

    # -- control plane
    def info(self, sb):
        return {"id": sb.id, "sandbox_id": sb.id, "template_name": sb.template, "template_id": "tpl_double",
                "organization_id": "org_double", "node_id": "node-1", "region": "double-1",
                "status": sb.status, "public_host": self.url, "direct_url": self.url,
                "resources": {"vcpu": 2, "memory_mb": 2048, "disk_mb": 10240}, "internet_access": sb.internet,
                "timeout_seconds": sb.timeout, "created_at": iso(sb.created_at)}

    def token(self, sb):
        t = "eyJ" + new_id("", 40)
        self.tokens[t] = sb.id
        return {"auth_token": t, "token_expires_at": iso(time.time() + 3600)}

    def find(self, request):
        sb = self.sandboxes.get(request.match_info["id"])
        if sb is None:
            raise Answer(self.error(request, 404, "SANDBOX_NOT_FOUND", "sandbox not found"))
        return sb

    async def health(self, request):
        return web.json_response({"status": "ok"})

    async def create(self, request):
        body = await request.json()
        if not isinstance(body, dict) or not (body.get("template_name") or body.get("template_id")):
            return self.error(request, 400, "VALIDATION_ERROR", "template_name or template_id is required")
        sb = Sandbox(new_id("hx"), env=body.get("env_vars") or {},
                     template=body.get("template_name") or "custom", status="creating",
                     timeout=body.get("timeout_seconds"), internet=body.get("internet_access", True))
        sb.fs.mkdir("/workspace")
        sb.cwd = "/workspace"
        self.sandboxes[sb.id] = sb
        return web.json_response({**self.info(sb), **self.token(sb)}, status=201)

    async def list(self, request):
        return web.json_response({"data": [self.info(s) for s in self.sandboxes.values()],
                                  "has_more": False, "next_cursor": None})

    async def get(self, request):
        sb = self.find(request)
        info = self.info(sb)
        if sb.status == "creating":
            sb.status = "running"  # the next look sees it running
        return web.json_response(info)

    async def delete(self, request):
        sb = self.find(request)
        del self.sandboxes[sb.id]
        for t in [t for t, s in self.tokens.items() if s == sb.id]:
            del self.tokens[t]
        return web.Response(status=204)

    async def pause(self, request):
        sb = self.find(request)
        sb.status = "paused"
        return web.json_response(self.info(sb))

    async def resume(self, request):
        sb = self.find(request)
        sb.status = "running"
        return web.json_response(self.info(sb))

    async def set_timeout(self, request):
        sb = self.find(request)
        sb.timeout = (await request.json()).get("timeout_seconds")
        return web.json_response(self.info(sb))

    async def refresh(self, request):
        return web.json_response(self.token(self.find(request)))

    # -- agent
    def agent(self, request):
        auth = request.headers.get("Authorization", "")
        sb = self.sandboxes.get(self.tokens.get(auth[7:], ""))
        if sb is None:
            raise Answer(self.error(request, 401, "UNAUTHORIZED", "invalid or expired token"))
        if sb.status != "running":
            raise Answer(self.error(request, 502, "SANDBOX_NOT_RUNNING", f"sandbox {sb.id} is {sb.status}"))
        return sb

    async def run(self, request):
        sb = self.agent(request)
        body = await request.json()
        argv = [body.get("command")] + list(body.get("args") or [])
        if not isinstance(argv[0], str):
            return self.error(request, 400, "VALIDATION_ERROR", "command is required")
        out = {1: bytearray(), 2: bytearray()}

        async def collect(fd, data):
            out[fd].extend(data)
        t = time.monotonic()
        try:
            code = await asyncio.wait_for(
                run_exec(sb, collect, argv=argv, env=body.get("env"), cwd=body.get("workdir")),
                float(body.get("timeout") or 30))
        except asyncio.TimeoutError:
            code = 124
            sb.execs[-1]["exit_code"] = code
        return web.json_response({"success": code == 0, "stdout": out[1].decode(errors="replace"),
                                  "stderr": out[2].decode(errors="replace"), "exit_code": code,
                                  "execution_time": round(time.monotonic() - t, 3)})

    async def stream(self, request):
        sb = self.agent(request)
        ws = web.WebSocketResponse(heartbeat=None, compress=False)
        await ws.prepare(request)

        async def send(fd, data):
            await ws.send_str(json.dumps({"type": "stdout" if fd == 1 else "stderr",
                                          "data": data.decode(errors="replace"), "timestamp": iso(time.time())}))
        out = Output(self, request, send)
        msg = await ws.receive()
        m = jobj(msg.data) if msg.type == WSMsgType.TEXT else {}
        if m.get("type") != "execute" or not isinstance(m.get("code"), str):
            await ws.send_str(json.dumps({"type": "error", "error": "expected an execute message",
                                          "code": "VALIDATION_ERROR", "timestamp": iso(time.time())}))
            await ws.close()
            return ws
        t = time.monotonic()
        task = asyncio.ensure_future(run_exec(sb, out, script=m["code"], env=m.get("env"), cwd=m.get("workdir")))
        # a client that goes away ends the command
        closer = asyncio.ensure_future(ws.receive())
        try:
            done, _ = await asyncio.wait({task, closer}, timeout=float(m.get("timeout") or 60),
                                         return_when=asyncio.FIRST_COMPLETED)
            if task not in done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                code = 124 if closer not in done else 143
                sb.execs[-1]["exit_code"] = code
                if closer in done:
                    return ws
            else:
                code = task.result()
            out.gate()
            await ws.send_str(json.dumps({"type": "result", "exit_code": code,
                                          "execution_time": round(time.monotonic() - t, 3),
                                          "timestamp": iso(time.time())}))
            await ws.send_str(json.dumps({"type": "complete", "success": code == 0}))
            # the client closes after `complete` (the SDK stops reading once the
            # socket is closing, so closing first would lose what was sent)
            await asyncio.wait({closer}, timeout=10)
            await ws.close()
        except Dropped:
            task.cancel()
        finally:
            closer.cancel()
        return ws

    async def terminal(self, request):
        sb = self.agent(request)
        ws = web.WebSocketResponse(heartbeat=None, compress=False)
        await ws.prepare(request)
        rec = {"id": new_id("pty"), "cols": 80, "rows": 24, "resizes": [], "input": bytearray(), "exit_code": None}
        sb.pty.append(rec)

        async def send(fd, data):
            await ws.send_str(json.dumps({"type": "output", "data": data.decode(errors="replace")}))
        out = Output(self, request, send)
        shell = PtyShell(Interpreter(sb.fs, dict(sb.env), "/workspace"), lambda d: out(1, d))
        try:
            await shell.start()
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                m = jobj(msg.data)
                if m.get("type") == "resize":
                    rec["cols"], rec["rows"] = m.get("cols"), m.get("rows")
                    rec["resizes"].append((m.get("cols"), m.get("rows")))
                elif m.get("type") == "input" and isinstance(m.get("data"), str):
                    data = m["data"].encode()
                    rec["input"].extend(data)
                    await shell.feed(data)
                    if shell.exit_code is not None:
                        rec["exit_code"] = shell.exit_code
                        out.gate()
                        await ws.send_str(json.dumps({"type": "exit", "code": shell.exit_code}))
                        await ws.close()
                        break
        except Dropped:
            pass
        return ws

    async def env(self, request):
        sb = self.agent(request)
        if request.method in ("PUT", "PATCH"):
            body = await request.json()
            if request.method == "PUT" or not body.get("merge"):
                sb.env = {}
            sb.env.update(body.get("env_vars") or {})
        elif request.method == "DELETE":
            sb.env = {}
        return web.json_response({"env_vars": sb.env})

    def path(self, request, sb, p=None):
        p = p if p is not None else request.query.get("path")
        if not p:
            raise Answer(self.error(request, 400, "VALIDATION_ERROR", "path is required"))
        return sb.fs.norm(p, "/workspace")

    def fs_error(self, request, e):
        status = 404 if e.code == "ENOENT" else 400
        return self.error(request, status, "FILE_NOT_FOUND" if status == 404 else "FILE_OPERATION_FAILED",
                          f"{e.code}: {e.path}")

    async def fs_read_text(self, request):
        sb = self.agent(request)
        try:
            p = self.path(request, sb)
            return web.json_response({"content": sb.fs.read(p).decode(errors="replace"), "path": p})
        except FsError as e:
            return self.fs_error(request, e)

    async def fs_read(self, request):
        sb = self.agent(request)
        try:
            return web.Response(body=sb.fs.read(self.path(request, sb)), content_type="application/octet-stream")
        except FsError as e:
            return self.fs_error(request, e)

    async def fs_write(self, request):
        sb = self.agent(request)
        body = await request.json()
        content = body.get("content", "")
        data = base64.b64decode(content) if body.get("encoding") == "base64" else str(content).encode()
        try:
            p = self.path(request, sb, body.get("path"))
            sb.fs.write(p, data, mode=int(str(body.get("mode") or "0644"), 8))
        except FsError as e:
            return self.fs_error(request, e)
        return web.json_response({"success": True, "path": p, "size": len(data)})

    async def fs_list(self, request):
        sb = self.agent(request)
        try:
            p = self.path(request, sb)
            files = [{"name": e["name"], "path": e["path"], "size": e["size"], "is_directory": e["is_dir"],
                      "permissions": oct(e["mode"])[2:], "modified_time": iso(e["mtime"])} for e in sb.fs.list(p)]
        except FsError as e:
            return self.fs_error(request, e)
        return web.json_response({"files": files, "path": p, "count": len(files)})

    async def fs_exists(self, request):
        sb = self.agent(request)
        return web.json_response({"exists": sb.fs.exists(self.path(request, sb))})

    async def fs_remove(self, request):
        sb = self.agent(request)
        try:
            sb.fs.remove(self.path(request, sb), recursive=True)
        except FsError as e:
            return self.fs_error(request, e)
        return web.json_response({"success": True})

    async def fs_mkdir(self, request):
        sb = self.agent(request)
        body = await request.json()
        try:
            sb.fs.mkdir(self.path(request, sb, body.get("path")), parents=True)
        except FsError as e:
            return self.fs_error(request, e)
        return web.json_response({"success": True})
