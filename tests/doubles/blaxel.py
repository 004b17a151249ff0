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
Snapshots (workspace objects, as @blaxel/core 0.3 drives them): taken with
`POST /v0/sandboxes/{name}/snapshots` (a name made up when none is given)
or `POST /v0/snapshots {name?, source: {name, kind}}`; each keeps a copy of
the sandbox's files, its environment and spec, and is "pending" for one
look (`GET /v0/snapshots/{id or name}`), then "ready"; listed at
`GET /v0/snapshots` ({data, meta}) and `GET /v0/sandboxes/{name}/snapshots`
(an array); deleted by `DELETE /v0/snapshots/{id or name}` (204) or
`DELETE /v0/sandboxes/{name}/snapshots/{id}`; forked into a new sandbox by
`POST /v0/snapshots/{id}/fork {targetName, targetType: "sandbox", envs}`
(also after its source is gone: `source.deleted`) and
`POST /v0/sandboxes/{name}/fork` (from `snapshotId`, else a fresh
snapshot); restored onto its own sandbox by
`POST /v0/sandboxes/{name}/snapshots/{id}/restore` (the files replaced;
DEPLOYING for one look). A fork or a snapshot not ready yet is 409.
Not implemented: private previews and their tokens, volumes, drives, the terminal
WebSocket, multipart uploads, watch, find/search, forks into applications.
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
        r.add_get("/v0/sandboxes/{name}/snapshots", self.snapshot_list_sb, name="snapshot.list.sandbox")
        r.add_post("/v0/sandboxes/{name}/snapshots", self.snapshot_sb, name="snapshot")
        r.add_delete("/v0/sandboxes/{name}/snapshots/{snap}", self.snapshot_delete, name="snapshot.delete.sandbox")
        r.add_post("/v0/sandboxes/{name}/snapshots/{snap}/restore", self.snapshot_restore,
                   name="snapshot.restore")
        r.add_post("/v0/sandboxes/{name}/fork", self.fork_sb, name="fork")
        r.add_get("/v0/snapshots", self.snapshot_list, name="snapshot.list")
        r.add_post("/v0/snapshots", self.snapshot_root, name="snapshot.root")
        r.add_get("/v0/snapshots/{snap}", self.snapshot_get, name="snapshot.get")
        r.add_delete("/v0/snapshots/{snap}", self.snapshot_delete, name="snapshot.delete")
        r.add_post("/v0/snapshots/{snap}/fork", self.snapshot_fork, name="snapshot.fork")
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

    # -- snapshots: workspace objects that outlive their sandbox
    def snapshot_view(self, v):
        return {"id": v["id"], "name": v["name"], "status": v["status"], "workspace": self.workspace,
                "createdAt": iso(v["created_at"]), "sandboxName": v["source"],
                "source": {"name": v["source"], "kind": "sandbox", "deleted": v["source"] not in self.sandboxes},
                "spec": {"image": (v["spec"].get("runtime") or {}).get("image"),
                         "memory": (v["spec"].get("runtime") or {}).get("memory"), "generation": "mk3"}}

    def find_snapshot(self, request, key=None):
        key = key or request.match_info["snap"]
        v = self.snapshots.get(key) or next((x for x in self.snapshots.values() if x["name"] == key), None)
        if v is None:
            raise Answer(self.error(request, 404, "not_found", f"snapshot {key} not found"))
        return v

    def take(self, request, sb, name):
        if name is not None and (not isinstance(name, str) or not name):
            raise Answer(self.error(request, 400, "invalid_request", "name must be a non-empty string"))
        name = name or f"{sb.id}-{new_id('', 6)}"
        if any(x["name"] == name for x in self.snapshots.values()):
            raise Answer(self.error(request, 409, "conflict", f"snapshot {name} already exists"))
        sid = new_id("snap-", 12)
        self.snapshots[sid] = {"id": sid, "name": name, "status": "pending", "fs": sb.fs.clone(),
                               "env": dict(sb.env), "spec": sb.spec, "source": sb.id,
                               "created_at": time.time()}
        return self.snapshots[sid]

    async def snapshot_sb(self, request):
        sb = self.find(request)
        body = await request.json() if request.can_read_body else {}
        return web.json_response(self.snapshot_view(self.take(request, sb, (body or {}).get("name"))))

    async def snapshot_root(self, request):
        body = await request.json()
        src = (body or {}).get("source") if isinstance(body, dict) else None
        if not isinstance(src, dict) or not isinstance(src.get("name"), str):
            return self.error(request, 400, "invalid_request", "source.name is required")
        sb = self.sandboxes.get(src["name"])
        if sb is None:
            return self.error(request, 404, "not_found", f"sandbox {src['name']} not found")
        return web.json_response(self.snapshot_view(self.take(request, sb, body.get("name"))))

    async def snapshot_get(self, request):
        v = self.find_snapshot(request)
        view = self.snapshot_view(v)
        if v["status"] == "pending":
            v["status"] = "ready"  # the next look sees it ready
        return web.json_response(view)

    async def snapshot_list(self, request):
        return web.json_response({"data": [self.snapshot_view(v) for v in self.snapshots.values()],
                                  "meta": {"nextCursor": None}})

    async def snapshot_list_sb(self, request):
        sb = self.find(request)
        return web.json_response([self.snapshot_view(v) for v in self.snapshots.values() if v["source"] == sb.id])

    async def snapshot_delete(self, request):
        if "name" in request.match_info:
            self.find(request)
        v = self.find_snapshot(request)
        del self.snapshots[v["id"]]
        return web.Response(status=204)

    def fork_into(self, request, v, target, envs):
        if v["status"] != "ready":
            raise Answer(self.error(request, 409, "conflict", f"snapshot {v['name']} is {v['status']}"))
        if not isinstance(target, str) or not target:
            raise Answer(self.error(request, 400, "invalid_request", "targetName is required"))
        if target in self.sandboxes:
            raise Answer(self.error(request, 409, "conflict", f"sandbox {target} already exists"))
        env = dict(v["env"])
        env.update({e["name"]: e.get("value", "") for e in envs or [] if isinstance(e, dict) and "name" in e})
        sb = Sandbox(target, env=env, spec=v["spec"], status="DEPLOYING", labels=None, procs={}, previews={})
        sb.fs = v["fs"].clone()
        sb.forked_from = v["id"]
        self.sandboxes[target] = sb
        return web.json_response({"name": target, "snapshotId": v["id"], "type": "sandbox"})

    async def snapshot_fork(self, request):
        v = self.find_snapshot(request)
        body = await request.json()
        if body.get("targetType", "sandbox") != "sandbox":
            return self.error(request, 400, "invalid_request", "the double forks into sandboxes only")
        return self.fork_into(request, v, body.get("targetName"), body.get("envs"))

    async def fork_sb(self, request):
        sb = self.find(request)
        body = await request.json()
        if body.get("snapshotId"):
            v = self.find_snapshot(request, body["snapshotId"])
        else:
            v = self.take(request, sb, None)
            v["status"] = "ready"
        return self.fork_into(request, v, body.get("targetName"), body.get("envs"))

    async def snapshot_restore(self, request):
        sb = self.find(request)
        v = self.find_snapshot(request)
        if v["source"] != sb.id:
            return self.error(request, 400, "invalid_request",
                              f"snapshot {v['name']} was not captured from sandbox {sb.id}")
        if v["status"] != "ready":
            return self.error(request, 409, "conflict", f"snapshot {v['name']} is {v['status']}")
        for p in sb.procs.values():  # the instance is rebuilt: its processes end
            if p.task and not p.task.done():
                p.task.cancel()
        sb.fs = v["fs"].clone()
        sb.status = "DEPLOYING"  # the next look sees it deployed again
        return web.json_response({"name": sb.id, "snapshotId": v["id"]})

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
