"""Double of Fly.io Sprites (api.sprites.dev, `/v1`), as @fly/sprites and
the reference (providers.md section 3) describe it.

Implements: create/get/list/update/delete sprites; exec over WebSocket
(non-TTY stream-id frames 0x00 stdin, 0x01 stdout, 0x02 stderr, 0x03 exit,
0x04 stdin EOF; TTY raw frames with resize/signal JSON and a final
{"type":"exit"}), the plain-HTTP exec variant and the session list; files
(read, write, list, delete); the sprite URL (a preview on the double,
auth "sprite" needs the token, "public" does not). Status: "cold" after
create, "running" once an exec or file call touches it; `idle(name, state)`
sets warm/cold from a test (the real service does that on its own clock).
Checkpoints: `POST /v1/sprites/{name}/checkpoint {comment?}` keeps a copy of
the sprite's files as `v1`, `v2`… and answers NDJSON progress (`info`
lines, then `complete`); `GET …/checkpoints` (an array of `{id,
create_time, comment, is_auto}`), `GET …/checkpoints/{id}`, and
`POST …/checkpoints/{id}/restore` (NDJSON; the files replaced). A
checkpoint belongs to its sprite and goes with it: `snapshots` holds them
as `SPRITE/ID` for the tests. There is no call to delete one, nor to make
a sprite from one (as on the service).
Not implemented: services, TCP proxy, network policy, the
control connection (`/control`; the SDK falls back to plain exec), exec
session attach and kill, rename/copy/chmod.
"""
import asyncio
import json
import signal
import time

from aiohttp import WSMsgType, web

from ._core import Answer as _Answer, ByteQueue, Double, Dropped, FsError, Interpreter, Output, PtyShell, \
    Sandbox, iso as _iso, jobj as _json, new_id, run_exec

SHELLS_INTERACTIVE = {"bash", "sh", "/bin/bash", "/bin/sh", "zsh"}


class SpritesDouble(Double):
    name = "sprites"
    key_prefix = "sprites-test-"

    def error(self, request, status, code, message):
        if request.path.startswith("/v1/sprites/") and "/fs/" in request.path:
            return web.json_response({"error": message, "code": code}, status=status)
        body = {"error": code, "message": message}
        if status == 429 and request.get("double.retry_after") is not None:
            body["retry_after_seconds"] = request["double.retry_after"]  # what the SDK prefers to the header
        return web.json_response(body, status=status)

    def unauthorized(self, request):
        return self.error(request, 401, "unauthorized", "invalid or missing token")

    def routes(self, app):
        r = app.router
        r.add_post("/v1/sprites", self.create, name="create")
        r.add_get("/v1/sprites", self.list, name="list")
        r.add_get("/v1/sprites/{name}", self.get, name="get")
        r.add_put("/v1/sprites/{name}", self.update, name="update")
        r.add_delete("/v1/sprites/{name}", self.delete, name="delete")
        r.add_get("/v1/sprites/{name}/exec", self.exec_ws, name="exec")
        r.add_post("/v1/sprites/{name}/exec", self.exec_http, name="exec.http")
        r.add_get("/v1/sprites/{name}/fs/read", self.fs_read, name="fs.read")
        r.add_put("/v1/sprites/{name}/fs/write", self.fs_write, name="fs.write")
        r.add_get("/v1/sprites/{name}/fs/list", self.fs_list, name="fs.list")
        r.add_delete("/v1/sprites/{name}/fs/delete", self.fs_delete, name="fs.delete")
        r.add_post("/v1/sprites/{name}/checkpoint", self.checkpoint, name="checkpoint")
        r.add_get("/v1/sprites/{name}/checkpoints", self.checkpoint_list, name="checkpoint.list")
        r.add_get("/v1/sprites/{name}/checkpoints/{cid}", self.checkpoint_get, name="checkpoint.get")
        r.add_post("/v1/sprites/{name}/checkpoints/{cid}/restore", self.checkpoint_restore,
                   name="checkpoint.restore")

    # -- helpers
    def info(self, sb):
        return {"id": sb.sprite_id, "name": sb.id, "organization": "double-org", "status": sb.status,
                "url": self.preview_url(sb.id, 8080), "url_settings": sb.url_settings,
                "labels": sb.labels, "environment": sb.env, "config": sb.config,
                "created_at": _iso(sb.created_at), "updated_at": _iso(sb.updated_at)}

    def find(self, request):
        sb = self.sandboxes.get(request.match_info["name"])
        if sb is None:
            raise _Answer(self.error(request, 404, "not_found", "sprite not found"))
        return sb

    def touch(self, sb):
        sb.status = "running"  # any call that needs the VM wakes it
        sb.last_running_at = time.time()

    def idle(self, name, state="cold"):
        """What the service does after ~30 s (warm) and longer (cold) idle."""
        assert state in ("warm", "cold")
        self.sandboxes[name].status = state

    def preview_denied(self, request, sb, port):
        if port != 8080:
            return web.Response(status=404, text="sprites route only port 8080\n")
        if sb.url_settings.get("auth") == "public":
            return None
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.Response(status=401, text="sprite URL needs a sprite token\n")
        return None

    # -- lifecycle
    async def create(self, request):
        try:
            body = await request.json()
        except ValueError:
            return self.error(request, 400, "invalid_request", "body must be JSON")
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return self.error(request, 400, "invalid_request", "name is required")
        if name in self.sandboxes:
            return self.error(request, 400, "sprite_already_exists", f"sprite {name} already exists")
        now = time.time()
        sb = Sandbox(name, env=body.get("environment") or {}, sprite_id=new_id("sprite-"),
                     status="cold", url_settings=body.get("url_settings") or {"auth": "sprite"},
                     labels=body.get("labels") or [], config=body.get("config") or {},
                     updated_at=now, last_running_at=None)
        self.sandboxes[name] = sb
        return web.json_response(self.info(sb), status=201)

    async def list(self, request):
        prefix = request.query.get("prefix", "")
        sprites = [self.info(s) for n, s in sorted(self.sandboxes.items()) if n.startswith(prefix)]
        count = {st: sum(1 for s in self.sandboxes.values() if s.status == st) for st in ("running", "warm", "cold")}
        return web.json_response({"sprites": sprites, "has_more": False, "next_continuation_token": None,
                                  "name": "double-org", **count})

    async def get(self, request):
        return web.json_response(self.info(self.find(request)))

    async def update(self, request):
        sb = self.find(request)
        body = await request.json()
        if "url_settings" in body:
            sb.url_settings = body["url_settings"]
        if body.get("clear_labels"):
            sb.labels = []
        if "labels" in body:
            sb.labels = body["labels"]
        sb.updated_at = time.time()
        return web.json_response(self.info(sb))

    async def delete(self, request):
        sb = self.find(request)
        del self.sandboxes[sb.id]
        for k in [k for k in self.snapshots if k.startswith(sb.id + "/")]:
            del self.snapshots[k]  # its checkpoints go with it
        return web.Response(status=204)

    # -- checkpoints: copies of one sprite's disk, restored onto it only
    def checkpoint_view(self, c):
        return {"id": c["id"], "create_time": _iso(c["created_at"]), "comment": c["comment"],
                "is_auto": False}

    async def ndjson(self, request, events):
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for type_, key, text in events:  # one write per event: a client sees pieces
            await resp.write((json.dumps({"type": type_, key: text, "time": _iso(time.time())}) + "\n").encode())
        await resp.write_eof()
        return resp

    async def checkpoint(self, request):
        sb = self.find(request)
        body = await request.json() if request.can_read_body else {}
        comment = (body or {}).get("comment") if isinstance(body, dict) else None
        self.touch(sb)
        n = sum(1 for k in self.snapshots if k.startswith(sb.id + "/")) + 1
        c = {"id": f"v{n}", "comment": comment, "fs": sb.fs.clone(), "created_at": time.time(), "source": sb.id}
        self.snapshots[f"{sb.id}/{c['id']}"] = c
        return await self.ndjson(request, [("info", "data", "Creating checkpoint..."),
                                           ("info", "data", "Saving filesystem state..."),
                                           ("complete", "data", f"Checkpoint {c['id']} created successfully")])

    def find_checkpoint(self, request, sb):
        c = self.snapshots.get(f"{sb.id}/{request.match_info['cid']}")
        if c is None:
            raise _Answer(self.error(request, 404, "not_found", "checkpoint not found"))
        return c

    async def checkpoint_list(self, request):
        sb = self.find(request)
        return web.json_response([self.checkpoint_view(c) for k, c in self.snapshots.items()
                                  if k.startswith(sb.id + "/")])

    async def checkpoint_get(self, request):
        sb = self.find(request)
        return web.json_response(self.checkpoint_view(self.find_checkpoint(request, sb)))

    async def checkpoint_restore(self, request):
        sb = self.find(request)
        c = self.find_checkpoint(request, sb)
        self.touch(sb)
        sb.fs = c["fs"].clone()
        return await self.ndjson(request, [("info", "data", f"Restoring to {c['id']}..."),
                                           ("complete", "data", f"Restored to {c['id']}")])

    # -- exec
    def exec_params(self, request):
        q = request.query
        argv = q.getall("cmd", [])
        env = dict(e.split("=", 1) for e in q.getall("env", []) if "=" in e)
        return argv, env, q.get("dir")

    async def exec_ws(self, request):
        sb = self.find(request)
        ws = web.WebSocketResponse(heartbeat=None, autoping=True, compress=False)
        if not ws.can_prepare(request).ok:
            return web.json_response({"sessions": []})  # plain GET: the session list
        argv, env, cwd = self.exec_params(request)
        if not argv:
            return self.error(request, 400, "invalid_request", "cmd is required")
        tty = request.query.get("tty") == "true"
        ws.headers["X-Sprite-Capabilities"] = "exec"
        await ws.prepare(request)
        self.touch(sb)
        session = new_id("s")
        await ws.send_str(json.dumps({"type": "session_info", "session_id": session, "tty": tty}))
        if tty:
            return await self._exec_tty(request, ws, sb, argv, env, cwd)
        stdin = ByteQueue()
        if request.query.get("stdin") != "true":
            stdin.eof()

        async def send(fd, data):
            await ws.send_bytes(bytes([fd]) + data)
        out = Output(self, request, send)
        task = asyncio.ensure_future(run_exec(sb, out, argv=argv, env=env, cwd=cwd, stdin=stdin))
        killed = {}
        reader = asyncio.ensure_future(self._read_stdin(ws, stdin, task, killed))
        try:
            try:
                code = await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise  # the handler itself is being cancelled
                code = 128 + getattr(signal, killed.get("signal", "SIGTERM"), signal.SIGTERM)
                sb.execs[-1]["exit_code"] = code
            out.gate()
            await ws.send_bytes(bytes([3, code & 0xFF]))
            await ws.close(code=1000)
        except Dropped:
            pass
        finally:
            reader.cancel()
        return ws

    async def _read_stdin(self, ws, stdin, task, killed):
        async for msg in ws:
            if msg.type == WSMsgType.BINARY and msg.data:
                if msg.data[0] == 0:
                    stdin.push(msg.data[1:])
                elif msg.data[0] == 4:
                    stdin.eof()
            elif msg.type == WSMsgType.TEXT:
                try:
                    m = json.loads(msg.data)
                except ValueError:
                    continue
                if m.get("type") == "signal":
                    killed["signal"] = str(m.get("signal") or "SIGTERM")
                    task.cancel()
        stdin.eof()

    async def _exec_tty(self, request, ws, sb, argv, env, cwd):
        q = request.query
        rec = {"id": new_id("pty"), "argv": argv, "cols": int(q.get("cols", 80)),
               "rows": int(q.get("rows", 24)), "resizes": [], "input": bytearray(), "exit_code": None}
        sb.pty.append(rec)

        async def send_raw(data):
            await ws.send_bytes(data)
        out = Output(self, request, lambda fd, d: send_raw(d))
        interactive = argv[0] in SHELLS_INTERACTIVE and all(a in ("-i", "-l", "--login") for a in argv[1:])
        code = None
        try:
            if interactive:
                shell = PtyShell(Interpreter(sb.fs, {**sb.env, **env}, cwd or "/"), lambda d: out(1, d))
                await shell.start()
                async for msg in ws:
                    if msg.type == WSMsgType.BINARY:
                        rec["input"].extend(msg.data)
                        await shell.feed(msg.data)
                        if shell.exit_code is not None:
                            code = shell.exit_code
                            break
                    elif msg.type == WSMsgType.TEXT:
                        m = _json(msg.data)
                        if m.get("type") == "resize":
                            rec["cols"], rec["rows"] = m.get("cols"), m.get("rows")
                            rec["resizes"].append((m.get("cols"), m.get("rows")))
                        elif m.get("type") == "signal" and m.get("signal") == "SIGINT":
                            await shell.feed(b"\x03")
            else:
                async def crlf(fd, data):
                    await out(fd, data.replace(b"\n", b"\r\n"))
                code = await run_exec(sb, crlf, argv=argv, env=env, cwd=cwd)
            if code is not None:
                rec["exit_code"] = code
                out.gate()
                await ws.send_str(json.dumps({"type": "exit", "exit_code": code}))
                await ws.close(code=1000)
        except Dropped:
            pass
        return ws

    async def exec_http(self, request):
        sb = self.find(request)
        argv, env, cwd = self.exec_params(request)
        if not argv:
            return self.error(request, 400, "invalid_request", "cmd is required")
        self.touch(sb)
        stdin = ByteQueue()
        stdin.push(await request.read())
        stdin.eof()
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)

        async def send(fd, data):
            await resp.write(bytes([fd]) + data)
        out = Output(self, request, send)
        try:
            code = await run_exec(sb, out, argv=argv, env=env, cwd=cwd, stdin=stdin)
            out.gate()
            await resp.write(bytes([3, code & 0xFF]))
            await resp.write_eof()
        except Dropped:
            pass
        return resp

    # -- files
    def fs_path(self, request, sb):
        path = request.query.get("path")
        if not path:
            raise _Answer(self.error(request, 400, "EINVAL", "path is required"))
        return sb.fs.norm(path, request.query.get("workingDir", "/"))

    def fs_error(self, request, e):
        status = {"ENOENT": 404, "EISDIR": 400, "ENOTDIR": 400, "ENOTEMPTY": 400, "EEXIST": 409}.get(e.code, 400)
        return web.json_response({"error": str(e), "code": e.code, "path": e.path}, status=status)

    async def fs_read(self, request):
        sb = self.find(request)
        self.touch(sb)
        try:
            data = sb.fs.read(self.fs_path(request, sb))
        except FsError as e:
            return self.fs_error(request, e)
        return web.Response(body=data, content_type="application/octet-stream")

    async def fs_write(self, request):
        sb = self.find(request)
        self.touch(sb)
        path = self.fs_path(request, sb)
        mode = int(request.query.get("mode", "0644"), 8)
        data = await request.read()
        try:
            sb.fs.write(path, data, parents=request.query.get("mkdirParents") == "true", mode=mode)
        except FsError as e:
            return self.fs_error(request, e)
        return web.json_response({"path": path, "size": len(data), "mode": f"{mode:04o}"})

    def entry(self, st):
        return {"name": st["name"], "path": st["path"], "type": "directory" if st["is_dir"] else "file",
                "size": st["size"], "mode": f"{st['mode']:04o}", "modTime": _iso(st["mtime"]),
                "isDir": st["is_dir"]}

    async def fs_list(self, request):
        sb = self.find(request)
        self.touch(sb)
        path = self.fs_path(request, sb)
        try:
            st = sb.fs.stat(path)
            entries = [self.entry(e) for e in sb.fs.list(path)] if st["is_dir"] else [self.entry(st)]
        except FsError as e:
            return self.fs_error(request, e)
        return web.json_response({"path": path, "entries": entries, "count": len(entries)})

    async def fs_delete(self, request):
        sb = self.find(request)
        self.touch(sb)
        path = self.fs_path(request, sb)
        try:
            sb.fs.remove(path, recursive=request.query.get("recursive") == "true")
        except FsError as e:
            return self.fs_error(request, e)
        return web.json_response({"deleted": [path]})

