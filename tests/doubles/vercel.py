"""Double of Vercel Sandbox's v1 API (`/v1/sandboxes`), the generation
@vercel/sandbox 1.x drives (upstream pins 1.9.3), as the reference
(providers.md section 5) describes it.

Implements: create (projectId required, at most 4 ports, one route per
port pointing at a preview on the double, open to anyone like
`*.vercel.run`), get (status pending once, then running), list, stop
(stopping once, then stopped; a stopped sandbox answers 410
sandbox_stopped to commands and files, and stays listed: v1 has no
delete), extend-timeout; commands (`cmd` with `wait:true` as NDJSON: the
command record, then the finished one; without wait as JSON; `cmd/{id}`
with `?wait=true`; `cmd/{id}/logs` as NDJSON lines streamed while it runs;
kill); files (read, write as a gzip'd tar extracted under `x-cwd`, mkdir).
Every request's `teamId` is recorded (`d.seen(...)[i]["query"]`).
Snapshots (`POST /v1/sandboxes/{id}/snapshot` -> {snapshot, sandbox}) keep a
copy of the sandbox's files and stop it, as Vercel's do ("snapshotting" for
one poll, then "stopped"); `GET|DELETE /v1/sandboxes/snapshots/{id}`; a
create with `source: {type: "snapshot", snapshotId}` starts with its files.
Not implemented: network policy, git/tarball sources, the v2/v3
API (named sandboxes, sessions, the interactive PTY WebSocket): v1 has no
PTY at all. The status and body of a rejected token are not in the
sources: the double answers 403 {"error":{"code":"forbidden",
"invalidToken":true}} as Vercel's REST API does elsewhere (verify live).
"""
import asyncio
import gzip
import io
import json
import signal
import tarfile
import time

from aiohttp import web

from ._core import Answer, Double, Dropped, FsError, Output, Sandbox, new_id, run_exec

CWD = "/vercel/sandbox"


def _ms(t=None):
    return int((t if t is not None else time.time()) * 1000)


class VercelDouble(Double):
    name = "vercel"
    key_prefix = "vcp_"

    def error(self, request, status, code, message):
        return web.json_response({"error": {"code": code, "message": message}}, status=status)

    def unauthorized(self, request):
        return web.json_response({"error": {"code": "forbidden", "message": "Not authorized",
                                            "invalidToken": True}}, status=403)

    def routes(self, app):
        r = app.router
        r.add_post("/v1/sandboxes", self.create, name="create")
        r.add_get("/v1/sandboxes", self.list, name="list")
        r.add_get("/v1/sandboxes/{sid}", self.get, name="get")
        r.add_post("/v1/sandboxes/{sid}/stop", self.stop_sb, name="stop")
        r.add_post("/v1/sandboxes/{sid}/snapshot", self.snapshot_sb, name="snapshot")
        r.add_get("/v1/sandboxes/snapshots/{snap}", self.snapshot_get, name="snapshot.get")
        r.add_delete("/v1/sandboxes/snapshots/{snap}", self.snapshot_delete, name="snapshot.delete")
        r.add_post("/v1/sandboxes/{sid}/extend-timeout", self.extend, name="extend")
        r.add_post("/v1/sandboxes/{sid}/cmd", self.cmd, name="exec")
        r.add_get("/v1/sandboxes/{sid}/cmd/{cid}", self.cmd_get, name="exec.command")
        r.add_get("/v1/sandboxes/{sid}/cmd/{cid}/logs", self.cmd_logs, name="exec.logs")
        r.add_post("/v1/sandboxes/{sid}/{cid}/kill", self.cmd_kill, name="exec.kill")
        r.add_post("/v1/sandboxes/{sid}/fs/read", self.fs_read, name="fs.read")
        r.add_post("/v1/sandboxes/{sid}/fs/write", self.fs_write, name="fs.write")
        r.add_post("/v1/sandboxes/{sid}/fs/mkdir", self.fs_mkdir, name="fs.mkdir")

    # -- helpers
    def view(self, sb):
        v = {"id": sb.id, "memory": sb.vcpus * 2048, "vcpus": sb.vcpus, "region": "iad1", "runtime": sb.runtime,
             "timeout": sb.timeout, "status": sb.status, "requestedAt": _ms(sb.created_at),
             "createdAt": _ms(sb.created_at), "cwd": CWD, "updatedAt": _ms(sb.updated_at)}
        if sb.started_at:
            v["startedAt"] = _ms(sb.started_at)
        if sb.stopped_at:
            v["stoppedAt"] = _ms(sb.stopped_at)
        if getattr(sb, "sourceSnapshotId", None):
            v["sourceSnapshotId"] = sb.sourceSnapshotId
        return v

    def routes_of(self, sb):
        return [{"url": self.preview_url(sb.id, p), "subdomain": f"sb-{sb.id[4:16]}-{p}", "port": p}
                for p in sb.port_list]

    def both(self, sb):
        return {"sandbox": self.view(sb), "routes": self.routes_of(sb)}

    def find(self, request, live=False):
        sb = self.sandboxes.get(request.match_info["sid"])
        if sb is None:
            raise Answer(self.error(request, 404, "not_found", "Sandbox not found"))
        if live:
            if sb.status in ("stopping", "stopped", "failed", "aborted"):
                raise Answer(self.error(request, 410, "sandbox_stopped", "Sandbox is stopped"))
            if sb.status == "pending":
                self.run(sb)
        return sb

    def run(self, sb):
        sb.status, sb.started_at, sb.updated_at = "running", time.time(), time.time()

    async def body(self, request):
        try:
            b = await request.json()
        except ValueError:
            raise Answer(self.error(request, 400, "bad_request", "body must be JSON"))
        if not isinstance(b, dict):
            raise Answer(self.error(request, 400, "bad_request", "body must be a JSON object"))
        return b

    # -- lifecycle
    async def create(self, request):
        b = await self.body(request)
        if not b.get("projectId"):
            return self.error(request, 400, "bad_request", "projectId is required")
        ports = b.get("ports") or []
        if not isinstance(ports, list) or len(ports) > 4 or not all(isinstance(p, int) for p in ports):
            return self.error(request, 400, "bad_request", "ports: at most 4 integers")
        env = b.get("env") or {}
        src = b.get("source")
        snap = None
        if isinstance(src, dict) and src.get("type") == "snapshot":
            snap = self.snapshots.get(src.get("snapshotId"))
            if snap is None or snap["status"] != "created":
                return self.error(request, 404, "not_found", "Snapshot not found")
        sid = new_id("sbx_", 24)
        sb = Sandbox(sid, env=env, project=b["projectId"], team=request.query.get("teamId"),
                     port_list=ports, timeout=b.get("timeout") or 300000,
                     vcpus=(b.get("resources") or {}).get("vcpus") or 2, runtime=b.get("runtime") or "node24",
                     source=b.get("source"), status="pending", started_at=None, stopped_at=None,
                     updated_at=time.time(), commands={}, cwd=CWD)
        if snap is not None:
            sb.fs = snap["fs"].clone()
            sb.sourceSnapshotId = snap["id"]
        sb.fs.mkdir(CWD, parents=True)
        for p in ports:
            sb.ports[p] = self.preview_url(sid, p)
        self.sandboxes[sid] = sb
        return web.json_response(self.both(sb))

    async def get(self, request):
        sb = self.find(request)
        resp = web.json_response(self.both(sb))
        if sb.status == "pending":
            self.run(sb)
        elif sb.status in ("stopping", "snapshotting"):
            sb.status, sb.stopped_at = "stopped", time.time()
        return resp

    async def list(self, request):
        project = request.query.get("project")
        items = [self.view(s) for s in self.sandboxes.values() if project in (None, s.project)]
        return web.json_response({"sandboxes": items, "pagination": {"count": len(items), "next": None, "prev": None}})

    async def stop_sb(self, request):
        sb = self.find(request)
        if sb.status in ("pending", "running"):
            sb.status, sb.updated_at = "stopping", time.time()
            for c in sb.commands.values():
                if c["task"] and not c["task"].done():
                    c["task"].cancel()
        return web.json_response({"sandbox": self.view(sb)})

    def snapshot_view(self, v):
        # the SDK's schema: expiresAt is a number or absent, never null
        return {k: v[k] for k in ("id", "sourceSandboxId", "region", "status", "sizeBytes", "expiresAt",
                                  "createdAt", "updatedAt") if v[k] is not None}

    async def snapshot_sb(self, request):
        sb = self.find(request, live=True)
        now = _ms(time.time())
        snap = {"id": new_id("snap_", 24), "sourceSandboxId": sb.id, "region": "iad1", "status": "created",
                "sizeBytes": sum(len(v) for v in sb.fs.files.values()), "expiresAt": None,
                "createdAt": now, "updatedAt": now, "fs": sb.fs.clone()}
        self.snapshots[snap["id"]] = snap
        sb.status, sb.updated_at = "snapshotting", time.time()  # it stops, as Vercel's does
        for c in sb.commands.values():
            if c["task"] and not c["task"].done():
                c["task"].cancel()
        return web.json_response({"snapshot": self.snapshot_view(snap), "sandbox": self.view(sb)})

    async def snapshot_get(self, request):
        snap = self.snapshots.get(request.match_info["snap"])
        if snap is None:
            return self.error(request, 404, "not_found", "Snapshot not found")
        return web.json_response({"snapshot": self.snapshot_view(snap)})

    async def snapshot_delete(self, request):
        snap = self.snapshots.pop(request.match_info["snap"], None)
        if snap is None:
            return self.error(request, 404, "not_found", "Snapshot not found")
        snap["status"] = "deleted"
        return web.json_response({"snapshot": self.snapshot_view(snap)})

    async def extend(self, request):
        sb = self.find(request, live=True)
        b = await self.body(request)
        sb.timeout += int(b.get("duration") or 0)
        return web.json_response({"sandbox": self.view(sb)})

    # -- commands
    def cmd_view(self, c):
        return {"id": c["id"], "name": c["name"], "args": c["args"], "cwd": c["cwd"], "sandboxId": c["sandboxId"],
                "exitCode": c["exitCode"], "startedAt": c["startedAt"]}

    async def cmd(self, request):
        sb = self.find(request, live=True)
        b = await self.body(request)
        command, args = b.get("command"), b.get("args") or []
        if not isinstance(command, str) or not command or not isinstance(args, list):
            return self.error(request, 400, "bad_request", "command (string) and args (array) are required")
        cid = new_id("cmd_", 20)
        c = {"id": cid, "name": command, "args": args, "cwd": b.get("cwd") or CWD, "sandboxId": sb.id,
             "exitCode": None, "startedAt": _ms(), "log": [], "done": asyncio.Event(), "task": None}
        sb.commands[cid] = c

        async def out(fd, data):
            c["log"].append((fd, data))

        async def run():
            try:
                c["exitCode"] = await run_exec(sb, out, argv=[command, *args], env=b.get("env"), cwd=c["cwd"],
                                               record={"sudo": bool(b.get("sudo"))})
            except asyncio.CancelledError:
                c["exitCode"] = c.get("killed", 143)
                sb.execs[-1]["exit_code"] = c["exitCode"]
            finally:
                c["done"].set()
        c["task"] = asyncio.ensure_future(run())
        if not b.get("wait"):
            return web.json_response({"command": self.cmd_view(c)})
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write((json.dumps({"command": self.cmd_view(c)}) + "\n").encode())
        await c["done"].wait()
        await resp.write((json.dumps({"command": self.cmd_view(c)}) + "\n").encode())
        await resp.write_eof()
        return resp

    def find_cmd(self, request, sb):
        c = sb.commands.get(request.match_info["cid"])
        if c is None:
            raise Answer(self.error(request, 404, "not_found", "Command not found"))
        return c

    async def cmd_get(self, request):
        sb = self.find(request)
        c = self.find_cmd(request, sb)
        if request.query.get("wait") == "true":
            await c["done"].wait()
        return web.json_response({"command": self.cmd_view(c)})

    async def cmd_logs(self, request):
        sb = self.find(request)
        c = self.find_cmd(request, sb)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)

        async def send(fd, data):
            line = {"stream": "stdout" if fd == 1 else "stderr", "data": data.decode(errors="replace")}
            await resp.write((json.dumps(line) + "\n").encode())
        out = Output(self, request, send)
        try:
            i = 0
            while True:
                while i < len(c["log"]):
                    await out(*c["log"][i])
                    i += 1
                if c["done"].is_set() and i >= len(c["log"]):
                    break
                if sb.status in ("stopping", "stopped"):
                    await resp.write((json.dumps({"stream": "error", "data": {
                        "code": "sandbox_stopped", "message": "Sandbox stopped"}}) + "\n").encode())
                    break
                await asyncio.sleep(0.02)
            out.gate()
            await resp.write_eof()
        except Dropped:
            pass
        return resp

    async def cmd_kill(self, request):
        sb = self.find(request, live=True)
        c = self.find_cmd(request, sb)
        b = await self.body(request)
        if c["task"] and not c["task"].done():
            c["killed"] = 128 + int(b.get("signal") or signal.SIGTERM)
            c["task"].cancel()
            await c["done"].wait()
        return web.json_response({"command": self.cmd_view(c)})

    # -- files
    async def fs_read(self, request):
        sb = self.find(request, live=True)
        b = await self.body(request)
        if not b.get("path"):
            return self.error(request, 400, "bad_request", "path is required")
        try:
            data = sb.fs.read(sb.fs.norm(b["path"], b.get("cwd") or CWD))
        except FsError:
            return self.error(request, 404, "file_not_found", "File not found")
        return web.Response(body=data, content_type="application/octet-stream")

    async def fs_write(self, request):
        sb = self.find(request, live=True)
        root = request.headers.get("x-cwd") or CWD
        raw = await request.read()
        try:
            tar = tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw)), mode="r:")
            entries = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
        except (OSError, EOFError, tarfile.TarError):
            return self.error(request, 400, "bad_request", "body must be a gzip-compressed tar")
        try:
            for m, data in entries:
                path = sb.fs.norm(m.name, root)
                if m.isdir():
                    sb.fs.mkdir(path, parents=True)
                elif data is not None:
                    sb.fs.write(path, data, mode=m.mode or 0o644)
        except FsError as e:
            return self.error(request, 400, "bad_request", f"{e.code}: {e.path}")
        return web.json_response({})

    async def fs_mkdir(self, request):
        sb = self.find(request, live=True)
        b = await self.body(request)
        if not b.get("path"):
            return self.error(request, 400, "bad_request", "path is required")
        path = sb.fs.norm(b["path"], b.get("cwd") or CWD)
        if sb.fs.exists(path):
            return self.error(request, 400, "bad_request", f"{path} already exists")
        try:
            sb.fs.mkdir(path, parents=False)
        except FsError as e:
            return self.error(request, 400, "bad_request", f"{e.code}: {e.path}")
        return web.json_response({})
