"""Double of Cloudflare's sandbox bridge Worker (`bridge/worker` of
cloudflare/sandbox-sdk: an HTTP API over the Worker-side SDK, prefix
`/v1`), as the reference (providers.md section 7) describes it. There is
no official client SDK for it: the trust test speaks the reference's
contract itself.

Implements: create (`POST /v1/sandbox` mints an id; the container boots
lazily on first use: `running` answers false once, then true), delete
(204: container and files gone; the id may be used again and then names a
fresh container, as on the bridge, which makes any well-formed id valid),
exec (`POST /v1/sandbox/{id}/exec {argv, timeout_ms?, cwd?}` as SSE events
`stdout`/`stderr` with base64 data, then `exit {"exit_code"}`, or `error
{"error","code"}`; cwd must be under /workspace), sessions (`Session-Id`
header; `POST .../session`, `DELETE .../session/{sid}`: commands of one
session share cwd and exported variables), the PTY WebSocket (`/pty?cols=
&rows=&shell=&session=`: text {"type":"ready"}, binary bytes both ways,
text resize, {"type":"exit","code"} then close; a session's PTY survives
reconnects and replays its output), files (`GET`/`PUT .../file/<path>`,
only inside /workspace, 32 MiB at most), persist/hydrate (a tar of
/workspace), tunnels (`POST`/`DELETE .../tunnel/{port}`: a URL on the
double), `/health` (open), `/v1/openapi.json` (a summary, not the real
schema). `sleep(id)` does what the container's sleepAfter does: the
filesystem is lost.
Not implemented: bucket mount/unmount, named tunnels, the warm pool.
The bridge itself has no list, no stop/start, no file list or delete
(use exec: the toy interpreter's `ls` and `rm`).
"""
import asyncio
import base64
import io
import json
import re
import secrets
import tarfile
import time

from aiohttp import WSMsgType, web

from ._core import Answer, Double, Dropped, FsError, Interpreter, MemFS, Output, PtyShell, Sandbox, iso, jobj, \
    new_id, run_exec

WORKSPACE = "/workspace"
MAX_FILE = 32 * 1024 * 1024
ID_RE = re.compile(r"^[a-z2-7]{1,64}$")  # the bridge mints lowercase base32


class CloudflareDouble(Double):
    name = "cloudflare"
    key_prefix = "cfb_"

    def error(self, request, status, code, message):
        return web.json_response({"error": message, "code": code}, status=status)

    def unauthorized(self, request):
        return self.error(request, 401, "unauthorized", "Unauthorized")

    def open_route(self, route):
        return route == "health" or super().open_route(route)

    def routes(self, app):
        r = app.router
        r.add_get("/health", self.health, name="health")
        r.add_get("/v1/openapi.json", self.openapi, name="openapi")
        r.add_post("/v1/sandbox", self.create, name="create")
        r.add_get("/v1/sandbox/{sid}/running", self.running, name="get")
        r.add_delete("/v1/sandbox/{sid}", self.delete, name="delete")
        r.add_post("/v1/sandbox/{sid}/exec", self.exec, name="exec")
        r.add_post("/v1/sandbox/{sid}/session", self.session_create, name="session.create")
        r.add_delete("/v1/sandbox/{sid}/session/{ses}", self.session_delete, name="session.delete")
        r.add_get("/v1/sandbox/{sid}/pty", self.pty, name="pty")
        r.add_get("/v1/sandbox/{sid}/file/{path:.*}", self.fs_read, name="fs.read")
        r.add_put("/v1/sandbox/{sid}/file/{path:.*}", self.fs_write, name="fs.write")
        r.add_post("/v1/sandbox/{sid}/persist", self.persist, name="persist")
        r.add_post("/v1/sandbox/{sid}/hydrate", self.hydrate, name="hydrate")
        r.add_post("/v1/sandbox/{sid}/tunnel/{port:\\d+}", self.tunnel, name="tunnel")
        r.add_delete("/v1/sandbox/{sid}/tunnel/{port:\\d+}", self.tunnel_delete, name="tunnel.delete")

    # -- helpers
    def new_sandbox(self, sid):
        sb = Sandbox(sid, booted=False, running_polls=0, sessions={}, ptys={}, tunnels={}, cwd=WORKSPACE,
                     destroyed=False)
        sb.fs.mkdir(WORKSPACE, parents=True)
        self.sandboxes[sid] = sb
        return sb

    def find(self, request):
        """Any well-formed id names a sandbox: the bridge's Durable Object
        is created on first use."""
        sid = request.match_info["sid"]
        if not ID_RE.match(sid):
            raise Answer(self.error(request, 400, "invalid_request", "invalid sandbox id"))
        sb = self.sandboxes.get(sid) or self.new_sandbox(sid)
        sb.booted = True
        return sb

    def sleep(self, sid):
        """The container slept (sleepAfter): processes and files are gone."""
        sb = self.sandboxes[sid]
        sb.booted, sb.running_polls, sb.fs = False, 0, MemFS()
        sb.fs.mkdir(WORKSPACE, parents=True)
        sb.sessions.clear()
        sb.ptys.clear()

    def ws_path(self, request, sb, raw):
        path = sb.fs.norm("/" + raw)
        if path != WORKSPACE and not path.startswith(WORKSPACE + "/"):
            raise Answer(self.error(request, 400, "invalid_request",
                                    "path must resolve to a location within /workspace"))
        return path

    def session(self, sb, request):
        ses = request.headers.get("Session-Id")
        if ses is None:
            return None
        if ses not in sb.sessions:
            sb.sessions[ses] = Interpreter(sb.fs, dict(sb.env), WORKSPACE)
        return sb.sessions[ses]

    # -- routes
    async def health(self, request):
        return web.json_response({"status": "ok"})

    async def openapi(self, request):
        paths = sorted({r.resource.canonical for r in request.app.router.routes()
                        if r.resource is not None and r.resource.canonical.startswith("/v1/")})
        return web.json_response({"openapi": "3.1.0", "info": {"title": "sandbox bridge (double)", "version": "0"},
                                  "paths": {p: {} for p in paths}})

    async def create(self, request):
        sid = base64.b32encode(secrets.token_bytes(15)).decode().lower()
        self.new_sandbox(sid)
        return web.json_response({"id": sid})

    async def running(self, request):
        sid = request.match_info["sid"]
        if not ID_RE.match(sid):
            return self.error(request, 400, "invalid_request", "invalid sandbox id")
        sb = self.sandboxes.get(sid) or self.new_sandbox(sid)
        sb.running_polls += 1
        answer = sb.running_polls > 1  # booting on the first check
        sb.booted = True
        return web.json_response({"running": answer})

    async def delete(self, request):
        sid = request.match_info["sid"]
        if not ID_RE.match(sid):
            return self.error(request, 400, "invalid_request", "invalid sandbox id")
        sb = self.sandboxes.pop(sid, None)
        if sb is not None:
            sb.destroyed = True
            for p in sb.ptys.values():
                if p.get("ws") is not None and not p["ws"].closed:
                    await p["ws"].close(code=1001, message=b"sandbox destroyed")
        return web.Response(status=204)

    async def exec(self, request):
        sb = self.find(request)
        body = jobj(await request.text())
        argv = body.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            return self.error(request, 400, "invalid_request", "argv must be a non-empty array of strings")
        cwd = body.get("cwd")
        if cwd is not None:
            self.ws_path(request, sb, cwd.lstrip("/"))
        timeout = body.get("timeout_ms")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def event(name, data):
            await resp.write(f"event: {name}\ndata: {data}\n\n".encode())

        async def send(fd, data):
            await event("stdout" if fd == 1 else "stderr", base64.b64encode(data).decode())
        out = Output(self, request, send)
        interp = self.session(sb, request)
        try:
            if interp is not None:
                if cwd:
                    interp.cwd = cwd
                rec = {"argv": argv, "session": request.headers.get("Session-Id"), "cwd": interp.cwd,
                       "exit_code": None, "stdout": "", "stderr": "", "env": {}}
                sb.execs.append(rec)
                interp.exited = False
                run = interp.run_argv(argv, out)
            else:
                run = run_exec(sb, out, argv=argv, cwd=cwd or WORKSPACE)
            try:
                code = await asyncio.wait_for(run, timeout=timeout / 1000 if timeout else None)
            except asyncio.TimeoutError:
                sb.execs[-1]["exit_code"] = "timeout"
                await event("error", json.dumps({"error": f"command timed out after {timeout} ms",
                                                 "code": "exec_error"}))
                await resp.write_eof()
                return resp
            if interp is not None:
                rec.update(exit_code=code, stdout=out.copy[1].decode(errors="replace"),
                           stderr=out.copy[2].decode(errors="replace"))
            out.gate()
            await event("exit", json.dumps({"exit_code": code}))
            await resp.write_eof()
        except Dropped:
            pass
        return resp

    async def session_create(self, request):
        sb = self.find(request)
        ses = new_id("ses-")
        sb.sessions[ses] = Interpreter(sb.fs, dict(sb.env), WORKSPACE)
        return web.json_response({"id": ses})

    async def session_delete(self, request):
        sb = self.find(request)
        sb.sessions.pop(request.match_info["ses"], None)
        return web.Response(status=204)

    async def pty(self, request):
        sb = self.find(request)
        ws = web.WebSocketResponse(heartbeat=None, compress=False)
        if not ws.can_prepare(request).ok:
            return self.error(request, 400, "invalid_request", "the PTY endpoint needs a WebSocket upgrade")
        q = request.query
        ses = q.get("session") or "default"
        p = sb.ptys.get(ses)
        if p is None:
            p = {"id": ses, "cols": int(q.get("cols", 80)), "rows": int(q.get("rows", 24)),
                 "shell": q.get("shell", "/bin/bash"), "input": bytearray(), "output": bytearray(),
                 "resizes": [], "exit_code": None, "ws": None, "pty": None}
            sb.ptys[ses] = p
            sb.pty.append(p)
        await ws.prepare(request)
        p["ws"] = ws
        out = Output(self, request, lambda fd, d: ws.send_bytes(d))

        async def send(data):
            p["output"].extend(data)
            if not ws.closed:
                await out(1, data)
        try:
            await ws.send_str(json.dumps({"type": "ready"}))
            if p["pty"] is None:
                p["pty"] = PtyShell(Interpreter(sb.fs, dict(sb.env), WORKSPACE), send)
                await p["pty"].start()
            else:
                p["pty"].send = send
                if p["output"]:
                    await out(1, bytes(p["output"]))  # replay on attach
            shell = p["pty"]
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    p["input"].extend(msg.data)
                    await shell.feed(msg.data)
                    if shell.exit_code is not None:
                        p["exit_code"] = shell.exit_code
                        out.gate()
                        await ws.send_str(json.dumps({"type": "exit", "code": shell.exit_code}))
                        await ws.close(code=1000)
                        sb.ptys.pop(ses, None)
                        break
                elif msg.type == WSMsgType.TEXT:
                    m = jobj(msg.data)
                    if m.get("type") == "resize":
                        p["cols"], p["rows"] = m.get("cols"), m.get("rows")
                        p["resizes"].append((m.get("cols"), m.get("rows")))
        except Dropped:
            pass
        return ws

    async def fs_read(self, request):
        sb = self.find(request)
        path = self.ws_path(request, sb, request.match_info["path"])
        try:
            data = sb.fs.read(path)
        except FsError:
            return self.error(request, 404, "workspace_read_not_found", f"file not found: {path}")
        return web.Response(body=data, content_type="application/octet-stream")

    async def fs_write(self, request):
        sb = self.find(request)
        path = self.ws_path(request, sb, request.match_info["path"])
        if request.content_length is not None and request.content_length > MAX_FILE:
            return self.error(request, 413, "payload_too_large", "file writes are limited to 32 MiB")
        data = await request.read()
        if len(data) > MAX_FILE:
            return self.error(request, 413, "payload_too_large", "file writes are limited to 32 MiB")
        try:
            sb.fs.write(path, data)
        except FsError as e:
            return self.error(request, 400, "invalid_request", f"{e.code}: {e.path}")
        return web.json_response({"ok": True})

    async def persist(self, request):
        sb = self.find(request)
        excludes = [e for e in request.query.get("excludes", "").split(",") if e]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path, data in sorted(sb.fs.snapshot().items()):
                rel = path[len(WORKSPACE) + 1:]
                if not path.startswith(WORKSPACE + "/") or any(rel == e or rel.startswith(e + "/") for e in excludes):
                    continue
                info = tarfile.TarInfo(rel)
                info.size, info.mtime = len(data), int(time.time())
                tar.addfile(info, io.BytesIO(data))
        return web.Response(body=buf.getvalue(), content_type="application/x-tar")

    async def hydrate(self, request):
        sb = self.find(request)
        try:
            tar = tarfile.open(fileobj=io.BytesIO(await request.read()), mode="r:*")
            members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
        except (OSError, EOFError, tarfile.TarError):
            return self.error(request, 400, "invalid_request", "body must be a tar archive")
        for m, data in members:
            path = self.ws_path(request, sb, "workspace/" + m.name)
            if m.isdir():
                sb.fs.mkdir(path, parents=True)
            elif data is not None:
                sb.fs.write(path, data)
        return web.json_response({"ok": True})

    async def tunnel(self, request):
        sb = self.find(request)
        port = int(request.match_info["port"])
        url = self.preview_url(sb.id, port)
        t = {"id": new_id("tun-"), "port": port, "url": url, "hostname": url.split("://", 1)[1].split("/")[0],
             "name": jobj(await request.text()).get("name"), "createdAt": iso(time.time())}
        sb.tunnels[port] = t
        sb.ports[port] = url
        return web.json_response(t)

    async def tunnel_delete(self, request):
        sb = self.find(request)
        port = int(request.match_info["port"])
        sb.tunnels.pop(port, None)
        sb.ports.pop(port, None)
        return web.Response(status=204)

    def preview_denied(self, request, sb, port):
        if port not in sb.tunnels:
            return web.Response(status=404, text="no tunnel for this port\n")
        return None
