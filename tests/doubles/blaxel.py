"""Double of Blaxel (reference section 12), as @blaxel/core drives it: the
control plane under `/v0` (`X-Blaxel-Authorization: Bearer KEY`,
`X-Blaxel-Workspace`) and each sandbox's API at the sandbox's
`metadata.url`, which the double points at itself (`/sbx/{name}`), with
the same headers.

Implements: `POST /v0/sandboxes` (`createIfNotExist`; status `DEPLOYING`,
the next look says `DEPLOYED` with state `RUNNING`), get, list, `DELETE`
(answers `DELETING`, then 404). Sandbox API: `POST /process`
(`waitForCompletion` answers the finished process as JSON; else the
running one), `GET /process/{id}`, `GET /process/{id}/logs`,
`GET /process/{id}/logs/stream` (plain text, one line per output line
prefixed `stdout:` or `stderr:`; a last line without a newline is sent
as a line), `DELETE /process/{id}/kill` (exit 143); `/filesystem/{path}`
GET (`Accept: application/octet-stream` or `?download=true`: the bytes;
else JSON: a file with `content`, a directory with `files` and
`subdirectories`), PUT (JSON `content` text or `isDirectory`; multipart
`file` for bytes), DELETE
(`recursive`). A path in the URL is absolute when it is sent encoded
(`%2Ftmp%2Fa.txt`), else relative to `/` (the process's cwd), as the
reference says. Errors are `{"error": "..."}`.
Not implemented: private previews and their tokens, snapshots, volumes, drives, the terminal
WebSocket, multipart uploads, watch, find/search, fork.
"""
import asyncio
import json
import time
import urllib.parse

from aiohttp import web

from ._core import Answer, ByteQueue, Double, Dropped, FsError, Output, Sandbox, iso, new_id, run_exec


class Proc:
    def __init__(self, sb, command, name):
        self.pid = new_id("", 8)
        self.name = name or self.pid
        self.command = command
        self.status = "running"
        self.exit_code = None
        self.out = {1: bytearray(), 2: bytearray()}
        self.lines = []  # (fd, text) lines as the log stream sends them
        self.partial = {1: bytearray(), 2: bytearray()}
        self.changed = asyncio.Event()
        self.task = None
        self.started = time.time()
        self.completed = None

    def poke(self):
        self.changed.set()
        self.changed = asyncio.Event()

    def view(self, workdir):
        return {"pid": self.pid, "name": self.name, "command": self.command, "status": self.status,
                "exitCode": self.exit_code, "stdout": self.out[1].decode(errors="replace"),
                "stderr": self.out[2].decode(errors="replace"),
                "logs": (self.out[1] + self.out[2]).decode(errors="replace"), "workingDir": workdir,
                "startedAt": iso(self.started), "completedAt": iso(self.completed)}


class BlaxelDouble(Double):
    name = "blaxel"
    key_prefix = "bl_"
    workspace = "ws-double"

    def authorized(self, request):
        return request.headers.get("X-Blaxel-Authorization") == f"Bearer {self.key}" and \
            request.headers.get("X-Blaxel-Workspace") == self.workspace

    def error(self, request, status, code, message):
        return web.json_response({"error": message, "code": code}, status=status)

    def routes(self, app):
        r = app.router
        r.add_post("/v0/sandboxes", self.create, name="create")
        r.add_get("/v0/sandboxes", self.list, name="list")
        r.add_get("/v0/sandboxes/{name}", self.get, name="get")
        r.add_delete("/v0/sandboxes/{name}", self.delete, name="delete")
        r.add_post("/v0/sandboxes/{name}/previews", self.preview_create, name="preview.create")
        r.add_get("/v0/sandboxes/{name}/previews/{preview}", self.preview_get, name="preview.get")
        s = "/sbx/{name}"
        r.add_post(s + "/process", self.process, name="exec")
        r.add_get(s + "/process/{pid}", self.process_get, name="process.get")
        r.add_get(s + "/process/{pid}/logs", self.process_logs, name="process.logs")
        r.add_get(s + "/process/{pid}/logs/stream", self.process_stream, name="exec.stream")
        r.add_delete(s + "/process/{pid}/kill", self.process_kill, name="process.kill")
        r.add_route("*", s + "/filesystem/{path:.*}", self.filesystem, name="fs")

    # -- control plane
    def view(self, sb):
        return {"metadata": {"name": sb.id, "url": f"{self.url}/sbx/{sb.id}", "workspace": self.workspace,
                             "createdAt": iso(sb.created_at), "labels": sb.labels},
                "spec": sb.spec, "status": sb.status, "state": "RUNNING" if sb.status == "DEPLOYED" else None}

    def find(self, request):
        sb = self.sandboxes.get(request.match_info["name"])
        if sb is None:
            raise Answer(self.error(request, 404, "not_found", f"sandbox {request.match_info['name']} not found"))
        return sb

    async def create(self, request):
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            return self.error(request, 400, "invalid_request", "spec is required")
        name = (body.get("metadata") or {}).get("name") or new_id("sbx-", 8)
        if name in self.sandboxes:
            if request.query.get("createIfNotExist") == "true":
                return web.json_response(self.view(self.sandboxes[name]))
            return self.error(request, 409, "conflict", f"sandbox {name} already exists")
        runtime = body["spec"].get("runtime") or {}
        env = {e["name"]: e.get("value", "") for e in runtime.get("envs") or [] if isinstance(e, dict)}
        sb = Sandbox(name, env=env, spec=body["spec"], status="DEPLOYING",
                     labels=(body.get("metadata") or {}).get("labels"), procs={}, previews={})
        sb.fs.mkdir("/blaxel")
        self.sandboxes[name] = sb
        return web.json_response(self.view(sb))

    # -- previews: objects of their own, their URL the stand-in's
    def preview_view(self, sb, p):
        return {"metadata": {"name": p["name"], "workspace": self.workspace},
                "spec": {"port": p["port"], "public": p["public"], "url": self.preview_url(sb.id, p["port"])}}

    async def preview_create(self, request):
        sb = self.find(request)
        body = await request.json()
        name = ((body or {}).get("metadata") or {}).get("name")
        port = ((body or {}).get("spec") or {}).get("port")
        if not isinstance(name, str) or not name or not isinstance(port, int) or not 0 < port < 65536:
            return self.error(request, 400, "invalid_request", "metadata.name and spec.port are required")
        if name in sb.previews:
            return self.error(request, 409, "conflict", f"preview {name} already exists")
        sb.previews[name] = {"name": name, "port": port, "public": bool(body["spec"].get("public"))}
        return web.json_response(self.preview_view(sb, sb.previews[name]))

    async def preview_get(self, request):
        sb = self.find(request)
        p = sb.previews.get(request.match_info["preview"])
        if p is None:
            return self.error(request, 404, "not_found", f"preview {request.match_info['preview']} not found")
        return web.json_response(self.preview_view(sb, p))

    def preview_denied(self, request, sb, port):
        if not any(p["port"] == port and p["public"] for p in sb.previews.values()):
            return web.Response(status=404, text="no preview of this port\n")
        return None

    async def list(self, request):
        return web.json_response([self.view(s) for s in self.sandboxes.values()])

    async def get(self, request):
        sb = self.find(request)
        view = self.view(sb)
        if sb.status == "DEPLOYING":
            sb.status = "DEPLOYED"  # the next look sees it deployed
        return web.json_response(view)

    async def delete(self, request):
        sb = self.find(request)
        for p in sb.procs.values():
            if p.task and not p.task.done():
                p.task.cancel()
        del self.sandboxes[sb.id]
        sb.status = "DELETING"
        return web.json_response(self.view(sb))

    # -- processes
    def running(self, request):
        sb = self.find(request)
        if sb.status != "DEPLOYED":
            raise Answer(self.error(request, 503, "unavailable", f"sandbox {sb.id} is {sb.status}"))
        return sb

    def spawn(self, sb, body):
        p = Proc(sb, body["command"], body.get("name"))
        sb.procs[p.pid] = p
        if p.name != p.pid:
            sb.procs[p.name] = p
        stdin = ByteQueue()
        stdin.eof()

        async def out(fd, data):
            p.out[fd].extend(data)
            p.partial[fd].extend(data)
            while b"\n" in p.partial[fd]:
                line, _, rest = bytes(p.partial[fd]).partition(b"\n")
                p.lines.append((fd, line))
                p.partial[fd] = bytearray(rest)
            p.poke()

        async def run():
            try:
                p.exit_code = await run_exec(sb, out, script=body["command"], env=body.get("env"),
                                             cwd=body.get("workingDir"), stdin=stdin)
                p.status = "completed" if p.exit_code == 0 else "failed"
            except asyncio.CancelledError:
                p.exit_code = 143
                p.status = "killed"
                if sb.execs and sb.execs[-1]["exit_code"] is None:
                    sb.execs[-1]["exit_code"] = 143
            for fd in (1, 2):
                if p.partial[fd]:
                    p.lines.append((fd, bytes(p.partial[fd])))
                    p.partial[fd] = bytearray()
            p.completed = time.time()
            p.poke()
        p.task = asyncio.ensure_future(run())
        return p

    async def process(self, request):
        sb = self.running(request)
        body = await request.json()
        if not isinstance(body.get("command"), str):
            return self.error(request, 400, "invalid_request", "command is required")
        p = self.spawn(sb, body)
        if body.get("waitForCompletion"):
            try:
                await asyncio.wait_for(asyncio.shield(p.task), float(body.get("timeout") or 60))
            except asyncio.TimeoutError:
                pass
        return web.json_response(p.view(body.get("workingDir") or "/"))

    def proc(self, request):
        sb = self.running(request)
        p = sb.procs.get(request.match_info["pid"])
        if p is None:
            raise Answer(self.error(request, 404, "not_found", f"process {request.match_info['pid']} not found"))
        return p

    async def process_get(self, request):
        return web.json_response(self.proc(request).view("/"))

    async def process_logs(self, request):
        p = self.proc(request)
        v = p.view("/")
        return web.json_response({"stdout": v["stdout"], "stderr": v["stderr"], "logs": v["logs"]})

    async def process_kill(self, request):
        p = self.proc(request)
        if p.task and not p.task.done():
            p.task.cancel()
            await asyncio.gather(p.task, return_exceptions=True)
        return web.json_response({"message": "process killed"})

    async def process_stream(self, request):
        p = self.proc(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)

        async def send(fd, data):
            await resp.write(data)
        out = Output(self, request, send)
        sent = 0
        try:
            while True:
                changed = p.changed
                if sent < len(p.lines):
                    fd, line = p.lines[sent]
                    sent += 1
                    await out(fd, (b"stdout:" if fd == 1 else b"stderr:") + line + b"\n")
                    continue
                if p.completed is not None:
                    break
                await changed.wait()
            out.gate()
            await resp.write_eof()
        except Dropped:
            pass
        return resp

    # -- files
    def fs_path(self, request, sb):
        raw = request.raw_path.split("?", 1)[0]
        enc = raw.split("/filesystem/", 1)[1] if "/filesystem/" in raw else ""
        path = urllib.parse.unquote(enc)
        if not path:
            raise Answer(self.error(request, 400, "invalid_request", "path is required"))
        # encoded (%2F...) is absolute; a bare path is relative to the cwd, /
        return sb.fs.norm(path, "/")

    async def filesystem(self, request):
        sb = self.running(request)
        path = self.fs_path(request, sb)
        try:
            if request.method == "GET":
                if sb.fs.is_dir(path):
                    entries = sb.fs.list(path)
                    return web.json_response({
                        "path": path, "name": path.rsplit("/", 1)[-1],
                        "files": [{"path": e["path"], "name": e["name"], "size": e["size"],
                                   "permissions": oct(e["mode"])[2:], "lastModified": iso(e["mtime"])}
                                  for e in entries if not e["is_dir"]],
                        "subdirectories": [{"path": e["path"], "name": e["name"]} for e in entries if e["is_dir"]]})
                data = sb.fs.read(path)
                if "application/octet-stream" in request.headers.get("Accept", "") or \
                        request.query.get("download") == "true":
                    return web.Response(body=data, content_type="application/octet-stream")
                st = sb.fs.stat(path)
                return web.json_response({"path": path, "name": st["name"], "size": st["size"],
                                          "permissions": oct(st["mode"])[2:], "owner": "root", "group": "root",
                                          "lastModified": iso(st["mtime"]),
                                          "content": data.decode(errors="replace")})
            if request.method == "PUT" and request.content_type.startswith("multipart/"):
                # binary files: multipart `file` (and `permissions`, `path`)
                data, perm = None, None
                async for part in await request.multipart():
                    if part.name == "file":
                        data = await part.read()
                    elif part.name == "permissions":
                        perm = (await part.read()).decode()
                if data is None:
                    return self.error(request, 400, "invalid_request", "file is required")
                sb.fs.write(path, data, mode=int(perm, 8) if perm else 0o644)
                return web.json_response({"message": "File created", "path": path})
            if request.method == "PUT":
                body = await request.json()
                if body.get("isDirectory"):
                    sb.fs.mkdir(path, parents=True)
                    return web.json_response({"message": "Directory created", "path": path})
                data = str(body.get("content", "")).encode()
                perm = body.get("permissions")
                sb.fs.write(path, data, mode=int(str(perm), 8) if perm else 0o644)
                return web.json_response({"message": "File created", "path": path})
            if request.method == "DELETE":
                sb.fs.remove(path, recursive=request.query.get("recursive") == "true")
                return web.json_response({"message": "File deleted", "path": path})
        except FsError as e:
            status = 404 if e.code == "ENOENT" else 400
            return self.error(request, status, e.code, f"{e.code}: {e.path}")
        return self.error(request, 405, "method_not_allowed", request.method)
