"""Double of Daytona's v0 API (control plane under `/api`, toolbox under
`/toolbox/{sandboxId}`), as @daytonaio/sdk 0.16x and the reference
(providers.md section 4) describe it.

Implements: sandbox create/get/list (paginated too)/start/stop/delete with
Daytona's state strings and one "not ready yet" poll on the way (creating
-> starting -> started, stopping -> stopped); the preview link of a port
(`/ports/{p}/preview-url`: a URL on the double and a token it checks in
`x-daytona-preview-token` unless the sandbox is public); toolbox exec
(`process/execute`: the command string runs through the toy interpreter,
stdout and stderr combined in `result`, `timeout` answered with 408);
sessions (`process/session`: exec, command status, logs; output is
multiplexed with Daytona's stream markers 01 01 01 (stdout) / 02 02 02
(stderr), in the exec answer's `output`, the logs' text body, or followed
over a WebSocket with `?follow=true`); PTY (`process/pty`: create, list, get, resize,
delete, and the `/connect` WebSocket: a control JSON, raw bytes both ways,
the exit code in the close reason); files (list, info, download, upload,
bulk-upload, bulk-download as multipart, folder, delete).
A sandbox's snapshot (`POST /sandbox/{id}/snapshot {name}`) keeps a copy of
its files, is listed under `/snapshots/{id or name}` ("pending" for one poll,
then "active"), can be deleted there, and a create naming it as `snapshot`
starts with those files.
Pause (`POST /sandbox/{id}/pause`: `pausing` for one poll, then `paused`;
its files, sessions and processes kept, as Daytona keeps memory) and start
of a paused sandbox (`starting`, then `started`: Daytona's start resumes).
Not implemented: image snapshots (`POST /snapshots`), volumes,
archive/resize/backup/fork,
labels/auto-stop endpoints, signed preview URLs, ssh-access, git, LSP,
computer-use, find/search/replace/move/permissions.
Toolbox calls on a sandbox that is not started answer 409 (the real
proxy's status for that case is not in the sources: the double's choice).
"""
import asyncio
import json
import secrets
import time
from http import HTTPStatus

from aiohttp import MultipartWriter, WSMsgType, web

from ._core import Answer, Double, Dropped, FsError, Interpreter, Output, PtyShell, Sandbox, \
    iso, jobj, new_id, run_exec

TOOLBOX = "/toolbox/{sid}"


class DaytonaDouble(Double):
    name = "daytona"
    key_prefix = "dtn_"

    def error(self, request, status, code, message):
        """NestJS's shape: {statusCode, message, error: reason phrase}."""
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        return web.json_response({"statusCode": status, "message": message, "error": reason,
                                  **({"code": code} if code not in (None, "") else {})}, status=status)

    def unauthorized(self, request):
        return web.json_response({"statusCode": 401, "message": "Invalid API key", "error": "Unauthorized"},
                                 status=401)

    def routes(self, app):
        r = app.router
        r.add_post("/api/sandbox", self.create, name="create")
        r.add_get("/api/sandbox", self.list, name="list")
        r.add_get("/api/sandbox/paginated", self.list_paginated, name="list:paginated")
        r.add_get("/api/sandbox/{sid}", self.get, name="get")
        r.add_post("/api/sandbox/{sid}/start", self.start_sb, name="start")
        r.add_post("/api/sandbox/{sid}/stop", self.stop_sb, name="stop")
        r.add_post("/api/sandbox/{sid}/pause", self.pause_sb, name="pause")
        r.add_delete("/api/sandbox/{sid}", self.delete, name="delete")
        r.add_get("/api/sandbox/{sid}/ports/{port:\\d+}/preview-url", self.preview_link, name="preview-url")
        r.add_post("/api/sandbox/{sid}/snapshot", self.snapshot_sb, name="snapshot")
        r.add_get("/api/snapshots/{snap}", self.snapshot_get, name="snapshot.get")
        r.add_delete("/api/snapshots/{snap}", self.snapshot_delete, name="snapshot.delete")
        t = TOOLBOX
        r.add_post(t + "/process/execute", self.execute, name="exec")
        r.add_post(t + "/process/session", self.session_create, name="session.create")
        r.add_get(t + "/process/session", self.session_list, name="session.list")
        r.add_get(t + "/process/session/{ses}", self.session_get, name="session.get")
        r.add_delete(t + "/process/session/{ses}", self.session_delete, name="session.delete")
        r.add_post(t + "/process/session/{ses}/exec", self.session_exec, name="exec.session")
        r.add_get(t + "/process/session/{ses}/command/{cmd}", self.command_get, name="exec.command")
        r.add_get(t + "/process/session/{ses}/command/{cmd}/logs", self.command_logs, name="exec.logs")
        r.add_post(t + "/process/pty", self.pty_create, name="pty.create")
        r.add_get(t + "/process/pty", self.pty_list, name="pty.list")
        r.add_get(t + "/process/pty/{pty}", self.pty_get, name="pty.get")
        r.add_delete(t + "/process/pty/{pty}", self.pty_delete, name="pty.delete")
        r.add_post(t + "/process/pty/{pty}/resize", self.pty_resize, name="pty.resize")
        r.add_get(t + "/process/pty/{pty}/connect", self.pty_connect, name="pty")
        r.add_get(t + "/files", self.fs_list, name="fs.list")
        r.add_delete(t + "/files", self.fs_delete, name="fs.delete")
        r.add_get(t + "/files/info", self.fs_info, name="fs.info")
        r.add_get(t + "/files/download", self.fs_download, name="fs.read")
        r.add_post(t + "/files/bulk-download", self.fs_bulk_download, name="fs.read:bulk")
        r.add_post(t + "/files/upload", self.fs_upload, name="fs.write")
        r.add_post(t + "/files/bulk-upload", self.fs_bulk_upload, name="fs.write:bulk")
        r.add_post(t + "/files/folder", self.fs_folder, name="fs.mkdir")

    # -- helpers
    def dto(self, sb):
        return {"id": sb.id, "organizationId": "double-org", "name": sb.name, "snapshot": sb.snapshot,
                "user": sb.user, "env": sb.env, "labels": sb.labels, "public": sb.public,
                "target": sb.target, "cpu": sb.cpu, "gpu": 0, "memory": sb.memory, "disk": sb.disk,
                "state": sb.state, "desiredState": sb.desired, "errorReason": None, "recoverable": False,
                "backupState": "None", "autoStopInterval": sb.auto_stop, "autoArchiveInterval": 10080,
                "autoDeleteInterval": -1, "volumes": [], "createdAt": iso(sb.created_at),
                "updatedAt": iso(sb.updated_at), "lastActivityAt": iso(sb.updated_at),
                "sandboxClass": "small", "daemonVersion": "double", "runnerId": "double-runner",
                "toolboxProxyUrl": f"{self.url}/toolbox"}

    def find(self, request, started=False):
        sid = request.match_info["sid"]
        sb = self.sandboxes.get(sid) or next((s for s in self.sandboxes.values() if s.name == sid), None)
        if sb is None:
            raise Answer(self.error(request, 404, None, f"Sandbox with ID or name {sid} not found"))
        if started and sb.state != "started":
            raise Answer(self.error(request, 409, None, f"Sandbox {sb.id} is not started (state: {sb.state})"))
        return sb

    def advance(self, sb):
        """One poll moves a transition one step: what a wait loop sees."""
        steps = {"creating": "starting", "starting": "started", "stopping": "stopped",
                 "pausing": "paused"}
        if sb.state in steps:
            sb.state = steps[sb.state]
            sb.updated_at = time.time()

    def preview_denied(self, request, sb, port):
        if sb.public or request.headers.get("x-daytona-preview-token") == sb.preview_token:
            return None
        return web.Response(status=401, text="preview needs x-daytona-preview-token\n")

    async def json_body(self, request):
        try:
            body = await request.json()
        except ValueError:
            raise Answer(self.error(request, 400, None, "body must be JSON"))
        if not isinstance(body, dict):
            raise Answer(self.error(request, 400, None, "body must be a JSON object"))
        return body

    # -- lifecycle
    async def create(self, request):
        body = await self.json_body(request)
        sid = new_id("", 8) + "-" + new_id("", 4) + "-" + new_id("", 12)
        env = body.get("env") or {}
        if not isinstance(env, dict):
            return self.error(request, 400, None, "env must be an object")
        name = body.get("name") or sid
        if any(s.name == name for s in self.sandboxes.values()):
            return self.error(request, 409, None, f"Sandbox with name {name} already exists")
        sb = Sandbox(sid, env=env, name=name, snapshot=body.get("snapshot") or "daytonaio/sandbox:double",
                     user=body.get("user") or "daytona", labels=body.get("labels") or {},
                     public=bool(body.get("public")), target=body.get("target") or "us",
                     cpu=body.get("cpu") or 1, memory=body.get("memory") or 1, disk=body.get("disk") or 3,
                     auto_stop=body.get("autoStopInterval", 15), state="creating", desired="started",
                     updated_at=time.time(), preview_token=secrets.token_hex(12), sessions={}, ptys={},
                     cwd="/home/daytona")
        snap = self.find_snapshot(sb.snapshot)
        if snap is not None:
            if snap["state"] != "active":
                return self.error(request, 400, None, f"Snapshot {snap['name']} is not active")
            sb.fs = snap["fs"].clone()
        sb.fs.mkdir("/home/daytona", parents=True)
        self.sandboxes[sid] = sb
        return web.json_response(self.dto(sb))

    async def get(self, request):
        sb = self.find(request)
        resp = web.json_response(self.dto(sb))
        self.advance(sb)
        return resp

    async def list(self, request):
        return web.json_response([self.dto(s) for s in self.sandboxes.values()])

    async def list_paginated(self, request):
        items = [self.dto(s) for s in self.sandboxes.values()]
        labels = jobj(request.query.get("labels", "{}"))
        items = [i for i in items if all(i["labels"].get(k) == v for k, v in labels.items())]
        return web.json_response({"items": items, "total": len(items), "page": 1, "totalPages": 1})

    async def start_sb(self, request):
        sb = self.find(request)
        if sb.state in ("stopped", "stopping", "paused", "pausing"):
            sb.state, sb.desired = "starting", "started"
            sb.preview_token = secrets.token_hex(12)  # rotates on restart
        return web.json_response(self.dto(sb))

    async def stop_sb(self, request):
        sb = self.find(request)
        if sb.state in ("started", "starting", "creating"):
            sb.state, sb.desired = "stopping", "stopped"
            for p in sb.ptys.values():
                p["active"] = False
        return web.json_response(self.dto(sb))

    async def pause_sb(self, request):
        sb = self.find(request)
        if sb.state in ("paused", "pausing"):
            return web.json_response(self.dto(sb))
        if sb.state != "started":
            return self.error(request, 400, None, f"Sandbox {sb.id} is not started (state: {sb.state})")
        sb.state, sb.desired = "pausing", "paused"
        return web.json_response(self.dto(sb))

    async def delete(self, request):
        sb = self.find(request)
        sb.state, sb.desired = "destroying", "destroyed"
        dto = self.dto(sb)
        del self.sandboxes[sb.id]
        return web.json_response(dto)

    async def preview_link(self, request):
        sb = self.find(request)
        port = int(request.match_info["port"])
        url = self.preview_url(sb.id, port)
        sb.ports[port] = url
        return web.json_response({"sandboxId": sb.id, "url": url, "token": sb.preview_token})

    # -- snapshots of sandboxes
    def find_snapshot(self, key):
        return self.snapshots.get(key) or next((v for v in self.snapshots.values() if v["name"] == key),
                                                None)

    def snapshot_dto(self, v):
        return {"id": v["id"], "organizationId": "double-org", "general": False, "name": v["name"],
                "imageName": v["name"], "state": v["state"], "size": 0.1, "entrypoint": None,
                "cpu": 1, "gpu": 0, "mem": 1, "disk": 3, "errorReason": None,
                "createdAt": iso(v["created_at"]), "updatedAt": iso(v["created_at"])}

    async def snapshot_sb(self, request):
        sb = self.find(request)
        body = await self.json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return self.error(request, 400, None, "name must be a non-empty string")
        if self.find_snapshot(name) is not None:
            return self.error(request, 409, None, f"Snapshot with name {name} already exists")
        sid = new_id("", 8) + "-" + new_id("", 4) + "-" + new_id("", 12)
        self.snapshots[sid] = {"id": sid, "name": name, "state": "pending", "fs": sb.fs.clone(),
                               "source": sb.id, "created_at": time.time()}
        return web.json_response(self.dto(sb))

    async def snapshot_get(self, request):
        v = self.find_snapshot(request.match_info["snap"])
        if v is None:
            return self.error(request, 404, None, f"Snapshot {request.match_info['snap']} not found")
        resp = web.json_response(self.snapshot_dto(v))
        v["state"] = "active"  # one poll sees it pending
        return resp

    async def snapshot_delete(self, request):
        v = self.find_snapshot(request.match_info["snap"])
        if v is None:
            return self.error(request, 404, None, f"Snapshot {request.match_info['snap']} not found")
        del self.snapshots[v["id"]]
        return web.Response(status=200)

    # -- exec
    async def execute(self, request):
        sb = self.find(request, started=True)
        body = await self.json_body(request)
        command = body.get("command")
        if not isinstance(command, str) or not command:
            return self.error(request, 400, None, "command is required")
        combined = bytearray()

        async def out(fd, data):
            combined.extend(data)
        timeout = body.get("timeout")
        try:
            code = await asyncio.wait_for(
                run_exec(sb, out, script=command, cwd=body.get("cwd"), env=body.get("envs")),
                timeout=timeout if timeout else None)
        except asyncio.TimeoutError:
            sb.execs[-1]["exit_code"] = "timeout"
            return self.error(request, 408, None, "command execution timeout")
        return web.json_response({"exitCode": code, "result": combined.decode(errors="replace")})

    async def session_create(self, request):
        sb = self.find(request, started=True)
        body = await self.json_body(request)
        ses = body.get("sessionId")
        if not ses:
            return self.error(request, 400, None, "sessionId is required")
        if ses in sb.sessions:
            return self.error(request, 409, None, f"session {ses} already exists")
        sb.sessions[ses] = {"sessionId": ses, "commands": {}, "interp": Interpreter(sb.fs, dict(sb.env), sb.cwd)}
        return web.Response(status=201)

    def session_view(self, s):
        return {"sessionId": s["sessionId"],
                "commands": [self.command_view(c) for c in s["commands"].values()]}

    def command_view(self, c):
        return {"id": c["id"], "command": c["command"], "exitCode": c["exitCode"]}

    def find_session(self, request, sb):
        s = sb.sessions.get(request.match_info["ses"])
        if s is None:
            raise Answer(self.error(request, 404, None, "session not found"))
        return s

    async def session_list(self, request):
        sb = self.find(request, started=True)
        return web.json_response([self.session_view(s) for s in sb.sessions.values()])

    async def session_get(self, request):
        sb = self.find(request, started=True)
        return web.json_response(self.session_view(self.find_session(request, sb)))

    async def session_delete(self, request):
        sb = self.find(request, started=True)
        s = self.find_session(request, sb)
        for c in s["commands"].values():
            if c["task"] and not c["task"].done():
                c["task"].cancel()
        del sb.sessions[s["sessionId"]]
        return web.Response(status=204)

    async def session_exec(self, request):
        """Commands of one session share its interpreter (cwd, exported
        variables), as Daytona's stateful shell does."""
        sb = self.find(request, started=True)
        s = self.find_session(request, sb)
        body = await self.json_body(request)
        command = body.get("command")
        if not isinstance(command, str) or not command:
            return self.error(request, 400, None, "command is required")
        cid = new_id("cmd-")
        c = {"id": cid, "command": command, "exitCode": None, "log": [], "done": asyncio.Event(), "task": None}
        s["commands"][cid] = c
        interp = s["interp"]
        rec = {"script": command, "session": s["sessionId"], "env": {}, "cwd": interp.cwd, "exit_code": None,
               "stdout": "", "stderr": ""}
        sb.execs.append(rec)

        async def out(fd, data):
            c["log"].append((fd, data))
            rec["stdout" if fd == 1 else "stderr"] += data.decode(errors="replace")

        async def run():
            try:
                interp.exited = False
                c["exitCode"] = await interp.run_script(command, out)
                rec["exit_code"] = c["exitCode"]
            finally:
                c["done"].set()
        c["task"] = asyncio.ensure_future(run())
        if body.get("runAsync") or body.get("async"):
            return web.json_response({"cmdId": cid}, status=202)
        await c["done"].wait()
        return web.json_response({"cmdId": cid, "exitCode": c["exitCode"],
                                  "output": _muxed(c["log"]).decode(errors="replace")})

    def find_command(self, request, s):
        c = s["commands"].get(request.match_info["cmd"])
        if c is None:
            raise Answer(self.error(request, 404, None, "command not found"))
        return c

    async def command_get(self, request):
        sb = self.find(request, started=True)
        c = self.find_command(request, self.find_session(request, sb))
        return web.json_response(self.command_view(c))

    async def command_logs(self, request):
        sb = self.find(request, started=True)
        c = self.find_command(request, self.find_session(request, sb))
        if request.query.get("follow") != "true":
            # what 0.16x reads: the output so far, each piece after its stream marker
            return web.Response(body=_muxed(c["log"]), content_type="text/plain")
        ws = web.WebSocketResponse(heartbeat=None, compress=False)
        if not ws.can_prepare(request).ok:
            return self.error(request, 400, None, "follow=true needs a WebSocket")
        await ws.prepare(request)
        async def send(fd, data):
            await ws.send_bytes(MARKER[fd] + data)
        out = Output(self, request, send)
        try:
            i = 0
            while True:
                while i < len(c["log"]):
                    fd, data = c["log"][i]
                    await out(fd, data)
                    i += 1
                if c["done"].is_set() and i >= len(c["log"]):
                    break
                await asyncio.sleep(0.02)
            out.gate()
            await ws.close(code=1000)
        except Dropped:
            pass
        return ws

    # -- PTY
    async def pty_create(self, request):
        sb = self.find(request, started=True)
        body = await self.json_body(request)
        pid = body.get("id") or new_id("pty-")
        if pid in sb.ptys:
            return self.error(request, 409, None, f"PTY session {pid} already exists")
        p = {"id": pid, "cols": body.get("cols") or 80, "rows": body.get("rows") or 24,
             "cwd": body.get("cwd") or sb.cwd, "envs": body.get("envs") or {},
             "lazyStart": bool(body.get("lazyStart")), "active": True, "createdAt": iso(time.time()),
             "input": bytearray(), "resizes": [], "exit_code": None, "shell": None}
        sb.ptys[pid] = p
        sb.pty.append(p)
        return web.json_response({"sessionId": pid}, status=201)

    def pty_view(self, p):
        return {k: p[k] for k in ("id", "cols", "rows", "cwd", "envs", "lazyStart", "active", "createdAt")}

    def find_pty(self, request, sb):
        p = sb.ptys.get(request.match_info["pty"])
        if p is None:
            raise Answer(self.error(request, 404, None, "PTY session not found"))
        return p

    async def pty_list(self, request):
        sb = self.find(request, started=True)
        return web.json_response({"sessions": [self.pty_view(p) for p in sb.ptys.values()]})

    async def pty_get(self, request):
        sb = self.find(request, started=True)
        return web.json_response(self.pty_view(self.find_pty(request, sb)))

    async def pty_delete(self, request):
        sb = self.find(request, started=True)
        p = self.find_pty(request, sb)
        p["active"] = False
        ws = p.get("ws")
        if ws is not None and not ws.closed:
            await ws.close(code=1000, message=json.dumps({"exitCode": 143, "exitReason": "killed"}).encode())
        del sb.ptys[p["id"]]
        return web.json_response({"message": f"PTY session {p['id']} deleted"})

    async def pty_resize(self, request):
        sb = self.find(request, started=True)
        p = self.find_pty(request, sb)
        body = await self.json_body(request)
        p["cols"], p["rows"] = body.get("cols", p["cols"]), body.get("rows", p["rows"])
        p["resizes"].append((p["cols"], p["rows"]))
        return web.json_response(self.pty_view(p))

    async def pty_connect(self, request):
        sb = self.find(request, started=True)
        p = self.find_pty(request, sb)
        ws = web.WebSocketResponse(heartbeat=None, compress=False)
        if not ws.can_prepare(request).ok:
            return self.error(request, 400, None, "connect needs a WebSocket")
        await ws.prepare(request)
        p["ws"] = ws
        await ws.send_str(json.dumps({"type": "control", "status": "connected"}))
        out = Output(self, request, lambda fd, d: ws.send_bytes(d))
        if p["shell"] is None:
            p["shell"] = PtyShell(Interpreter(sb.fs, {**sb.env, **p["envs"]}, p["cwd"]), lambda d: out(1, d))
            await p["shell"].start()
        else:
            p["shell"].send = lambda d: out(1, d)
        shell = p["shell"]
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                    data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                    p["input"].extend(data)
                    await shell.feed(data)
                    if shell.exit_code is not None:
                        p["exit_code"] = shell.exit_code
                        p["active"] = False
                        out.gate()
                        await ws.close(code=1000, message=json.dumps({"exitCode": shell.exit_code}).encode())
                        break
        except Dropped:
            pass
        return ws

    # -- files
    def path_arg(self, request, sb, name="path"):
        path = request.query.get(name)
        if not path:
            raise Answer(self.error(request, 400, None, f"{name} is required"))
        return sb.fs.norm(path, sb.cwd)

    def fs_error(self, request, e):
        status = {"ENOENT": 404, "EEXIST": 409}.get(e.code, 400)
        return self.error(request, status, None, f"{e.code}: {e.path}")

    def file_info(self, st):
        return {"name": st["name"], "isDir": st["is_dir"], "size": st["size"], "mode": _mode_str(st),
                "permissions": f"0{st['mode']:o}", "owner": "daytona", "group": "daytona",
                "modTime": iso(st["mtime"])}

    async def fs_list(self, request):
        sb = self.find(request, started=True)
        try:
            return web.json_response([self.file_info(e) for e in sb.fs.list(self.path_arg(request, sb))])
        except FsError as e:
            return self.fs_error(request, e)

    async def fs_info(self, request):
        sb = self.find(request, started=True)
        try:
            return web.json_response(self.file_info(sb.fs.stat(self.path_arg(request, sb))))
        except FsError as e:
            return self.fs_error(request, e)

    async def fs_delete(self, request):
        sb = self.find(request, started=True)
        try:
            sb.fs.remove(self.path_arg(request, sb), recursive=request.query.get("recursive") == "true")
        except FsError as e:
            return self.fs_error(request, e)
        return web.Response(status=204)

    async def fs_folder(self, request):
        sb = self.find(request, started=True)
        try:
            sb.fs.mkdir(self.path_arg(request, sb), parents=True, mode=int(request.query.get("mode", "755"), 8))
        except FsError as e:
            return self.fs_error(request, e)
        return web.Response(status=201)

    async def fs_download(self, request):
        sb = self.find(request, started=True)
        try:
            data = sb.fs.read(self.path_arg(request, sb))
        except FsError as e:
            return self.fs_error(request, e)
        return web.Response(body=data, content_type="application/octet-stream")

    async def fs_bulk_download(self, request):
        sb = self.find(request, started=True)
        body = await self.json_body(request)
        paths = body.get("paths")
        if not isinstance(paths, list) or not paths:
            return self.error(request, 400, None, "paths is required")
        mp = MultipartWriter("form-data")
        for path in paths:
            try:
                part = mp.append(sb.fs.read(sb.fs.norm(path, sb.cwd)), {"Content-Type": "application/octet-stream"})
                part.set_content_disposition("form-data", name="file", filename=path, quote_fields=False)
            except FsError as e:
                err = {"message": f"{e.code}: {path}", "statusCode": 404 if e.code == "ENOENT" else 400,
                       "code": "FILE_NOT_FOUND" if e.code == "ENOENT" else e.code}
                part = mp.append(json.dumps(err), {"Content-Type": "application/json"})
                part.set_content_disposition("form-data", name="error", filename=path, quote_fields=False)
        resp = web.StreamResponse(headers={"Content-Type": f"multipart/form-data; boundary={mp.boundary}"})
        await resp.prepare(request)
        await mp.write(resp)
        await resp.write_eof()
        return resp

    async def fs_upload(self, request):
        sb = self.find(request, started=True)
        path = self.path_arg(request, sb)
        reader = await request.multipart()
        async for part in reader:
            if part.name == "file":
                try:
                    sb.fs.write(path, await part.read(decode=False))
                except FsError as e:
                    return self.fs_error(request, e)
                return web.json_response({})
        return self.error(request, 400, None, "multipart field 'file' is required")

    async def fs_bulk_upload(self, request):
        sb = self.find(request, started=True)
        reader = await request.multipart()
        paths, files = {}, {}
        async for part in reader:
            name = part.name or ""
            if name.startswith("files[") and name.endswith("].path"):
                paths[name[6:-6]] = (await part.read(decode=False)).decode()
            elif name.startswith("files[") and name.endswith("].file"):
                files[name[6:-6]] = await part.read(decode=False)
        if not files or set(files) - set(paths):
            return self.error(request, 400, None, "every files[i].file needs its files[i].path")
        for i, data in files.items():
            try:
                sb.fs.write(sb.fs.norm(paths[i], sb.cwd), data)
            except FsError as e:
                return self.fs_error(request, e)
        return web.json_response({})


MARKER = {1: b"\x01\x01\x01", 2: b"\x02\x02\x02"}  # Daytona's stdout/stderr markers


def _muxed(log):
    return b"".join(MARKER[fd] + data for fd, data in log)


def _mode_str(st):
    bits = st["mode"]
    s = "d" if st["is_dir"] else "-"
    for shift in (6, 3, 0):
        b = (bits >> shift) & 7
        s += ("r" if b & 4 else "-") + ("w" if b & 2 else "-") + ("x" if b & 1 else "-")
    return s
