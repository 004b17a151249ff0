"""Double of Runloop (api.runloop.ai, `/v1`, reference section 10), as
@runloop/api-client drives it. `Authorization: Bearer KEY`.

Implements: devboxes create (status `provisioning`; the first look after
create moves it to `running`), get, list, `create_and_await_running`,
`wait_for_status` (a long poll: answers at once when the devbox is in one
of the statuses, else holds briefly, moves it one state on and answers 408
with `x-should-retry: true`, as the service does after ~25 s), suspend
(`suspending` once, then `suspended`; running executions end with 143,
as the disk is all a suspend keeps), resume (`resuming` once, then
`running`), shutdown (status `shutdown` with `shutdown_reason
api_shutdown`; the devbox stays listed, as on the service). Exec:
`execute` (waits up to `optimistic_timeout` seconds, then answers the
execution as `running`), `execute_async`, `execute_sync`, executions
`get`, `wait_for_status`, `kill` (exit 143), `send_std_in` (`text`, or
`signal: "EOF"` to close stdin), `stream_stdout_updates` and
`stream_stderr_updates` (SSE `data: {"output", "offset"}` from the `offset`
query, ending with the execution; `offset` is where the next chunk starts,
so a reconnect resumes there [?: the SDK's docs say "the byte offset of
this chunk"]). Files: `write_file_contents` (UTF-8 text),
`read_file_contents` (text/plain), `upload_file` (multipart `path`,
`file`), `download_file` (bytes). Tunnel: `enable_tunnel` (one per devbox,
its key the devbox id; the URL is on the double: `/__preview__/{key}/{port}/`;
an `authenticated` one gets an `auth_token` that previews must send as
`X-Runloop-Tunnel-Authorization: Bearer TOKEN`, else 401; no tunnel: 404).
Not implemented: blueprints, snapshots, the PTY tunnel
(`create_pty_tunnel` and its WebSocket, whose frame format is not in the
sources), code mounts, gateways, MCP, SSH keys, usage, evictions.
"""
import asyncio
import base64
import json
import time

from aiohttp import web

from ._core import Answer, ByteQueue, Double, Dropped, FsError, Output, Sandbox, new_id, run_exec

HOME = "/home/user"
BOOTING = ("provisioning", "initializing", "queued", "scheduled")
LONG_POLL_HOLD = 1.0  # the service holds ~25 s; the double answers 408 sooner


class Execution:
    def __init__(self, devbox, command):
        self.id = new_id("exec_")
        self.devbox = devbox
        self.command = command
        self.status = "running"
        self.exit_status = None
        self.out = {1: bytearray(), 2: bytearray()}
        self.stdin = ByteQueue()
        self.changed = asyncio.Event()
        self.task = None

    def view(self, last_n=None):
        v = {"devbox_id": self.devbox.id, "execution_id": self.id, "status": self.status,
             "exit_status": self.exit_status, "shell_name": None}
        if self.status == "completed":
            v.update(stdout=self.out[1].decode(errors="replace"), stderr=self.out[2].decode(errors="replace"),
                     stdout_truncated=False, stderr_truncated=False)
        return v

    def poke(self):
        self.changed.set()
        self.changed = asyncio.Event()


class RunloopDouble(Double):
    name = "runloop"
    key_prefix = "ak_"

    def error(self, request, status, code, message):
        return web.json_response({"error": code, "message": message}, status=status)

    def routes(self, app):
        r = app.router
        d = "/v1/devboxes/{id}"
        r.add_post("/v1/devboxes", self.create, name="create")
        r.add_post("/v1/devboxes/create_and_await_running", self.create_running, name="create:running")
        r.add_get("/v1/devboxes", self.list, name="list")
        r.add_get(d, self.get, name="get")
        r.add_post(d + "/wait_for_status", self.wait, name="wait")
        r.add_post(d + "/suspend", self.suspend, name="suspend")
        r.add_post(d + "/resume", self.resume, name="resume")
        r.add_post(d + "/shutdown", self.shutdown, name="shutdown")
        r.add_post(d + "/execute", self.execute, name="exec")
        r.add_post(d + "/execute_async", self.execute_async, name="exec.detached")
        r.add_post(d + "/execute_sync", self.execute_sync, name="exec.sync")
        e = d + "/executions/{eid}"
        r.add_get(e, self.exec_get, name="exec.get")
        r.add_post(e + "/wait_for_status", self.exec_wait, name="exec.wait")
        r.add_post(e + "/kill", self.exec_kill, name="exec.kill")
        r.add_post(e + "/send_std_in", self.exec_stdin, name="exec.stdin")
        r.add_get(e + "/stream_stdout_updates", self.stream_stdout, name="exec.stdout")
        r.add_get(e + "/stream_stderr_updates", self.stream_stderr, name="exec.stderr")
        r.add_post(d + "/write_file_contents", self.write_contents, name="fs.write:text")
        r.add_post(d + "/read_file_contents", self.read_contents, name="fs.read:text")
        r.add_post(d + "/upload_file", self.upload, name="fs.write")
        r.add_post(d + "/download_file", self.download, name="fs.read")
        r.add_post(d + "/enable_tunnel", self.enable_tunnel, name="tunnel")

    # -- devboxes
    def view(self, sb):
        return {"id": sb.id, "name": sb.name, "status": sb.status, "create_time_ms": int(sb.created_at * 1000),
                "end_time_ms": sb.end_time_ms, "launch_parameters": sb.launch, "metadata": sb.metadata,
                "state_transitions": sb.transitions, "capabilities": [], "blueprint_id": None,
                "snapshot_id": None, "shutdown_reason": sb.shutdown_reason, "failure_reason": None,
                "tunnel": sb.tunnel}

    def find(self, request, live=False):
        sb = self.sandboxes.get(request.match_info["id"])
        if sb is None:
            raise Answer(self.error(request, 404, "not_found", f"devbox {request.match_info['id']} not found"))
        return sb

    def set_status(self, sb, status):
        sb.status = status
        sb.transitions.append({"status": status, "transition_time_ms": int(time.time() * 1000)})

    def advance(self, sb):
        """One step of what the service does on its own clock."""
        nxt = {"provisioning": "running", "suspending": "suspended", "resuming": "running"}.get(sb.status)
        if nxt:
            self.set_status(sb, nxt)

    def running(self, request):
        sb = self.find(request)
        if sb.status != "running":
            raise Answer(self.error(request, 400, "devbox_not_running",
                                    f"devbox {sb.id} is {sb.status}, not running"))
        return sb

    async def _new(self, request):
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("body must be an object")
        sb = Sandbox(new_id("dbx_"), env=body.get("environment_variables") or {}, name=body.get("name"),
                     status="provisioning", launch=body.get("launch_parameters") or {},
                     blueprint=body.get("blueprint_name"),
                     metadata=body.get("metadata") or {}, transitions=[], end_time_ms=None,
                     shutdown_reason=None, tunnel=None, executions={}, destroyed=False)
        sb.fs.mkdir(HOME, parents=True)
        sb.cwd = HOME
        sb.transitions.append({"status": "provisioning", "transition_time_ms": int(time.time() * 1000)})
        self.sandboxes[sb.id] = sb
        return sb

    async def create(self, request):
        return web.json_response(self.view(await self._new(request)))

    async def create_running(self, request):
        sb = await self._new(request)
        self.advance(sb)
        return web.json_response(self.view(sb))

    async def list(self, request):
        boxes = [self.view(s) for s in self.sandboxes.values()
                 if request.query.get("status") in (None, s.status)]
        return web.json_response({"devboxes": boxes, "has_more": False, "total_count": len(boxes),
                                  "remaining_count": 0})

    async def get(self, request):
        sb = self.find(request)
        view = self.view(sb)
        self.advance(sb)  # the next look sees the next state
        return web.json_response(view)

    async def wait(self, request):
        sb = self.find(request)
        statuses = (await request.json()).get("statuses") or []
        if sb.status not in statuses:
            # the hold ran out before the devbox got there: it moves on, the
            # client asks again (every wait sees one 408)
            await asyncio.sleep(0.1)
            self.advance(sb)
            resp = self.error(request, 408, "timeout", "devbox did not reach the statuses in time")
            resp.headers["x-should-retry"] = "true"
            return resp
        return web.json_response(self.view(sb))

    async def suspend(self, request):
        sb = self.find(request)
        if sb.status != "running":
            return self.error(request, 400, "invalid_state", f"devbox {sb.id} is {sb.status}")
        self.set_status(sb, "suspending")
        # a suspend keeps the disk, not the processes: running executions end
        for x in sb.executions.values():
            if x.task and not x.task.done():
                x.task.cancel()
        return web.json_response(self.view(sb))

    async def resume(self, request):
        sb = self.find(request)
        if sb.status == "running":
            return web.json_response(self.view(sb))
        if sb.status != "suspended":
            return self.error(request, 400, "invalid_state", f"devbox {sb.id} is {sb.status}")
        self.set_status(sb, "resuming")
        return web.json_response(self.view(sb))

    async def shutdown(self, request):
        sb = self.find(request)
        for x in sb.executions.values():
            if x.task and not x.task.done():
                x.task.cancel()
        if sb.status != "shutdown":
            self.set_status(sb, "shutdown")
            sb.shutdown_reason = "api_shutdown"
            sb.end_time_ms = int(time.time() * 1000)
        sb.destroyed = True
        return web.json_response(self.view(sb))

    # -- exec
    def run_command(self, sb, command, stdin=False):
        x = Execution(sb, command)
        sb.executions[x.id] = x
        if not stdin:
            x.stdin.eof()

        async def out(fd, data):
            x.out[fd].extend(data)
            x.poke()

        async def run():
            try:
                x.exit_status = await run_exec(sb, out, script=command, stdin=x.stdin)
            except asyncio.CancelledError:
                x.exit_status = 143
                if sb.execs and sb.execs[-1]["exit_code"] is None:
                    sb.execs[-1]["exit_code"] = 143
            x.status = "completed"
            x.poke()
        x.task = asyncio.ensure_future(run())
        return x

    async def _wait_done(self, x, seconds):
        try:
            await asyncio.wait_for(asyncio.shield(x.task), seconds)
        except asyncio.TimeoutError:
            pass

    async def execute(self, request):
        sb = self.running(request)
        body = await request.json()
        if not isinstance(body.get("command"), str):
            return self.error(request, 400, "invalid_request", "command is required")
        x = self.run_command(sb, body["command"])
        await self._wait_done(x, float(body.get("optimistic_timeout") or 0))
        return web.json_response(x.view())

    async def execute_async(self, request):
        sb = self.running(request)
        body = await request.json()
        if not isinstance(body.get("command"), str):
            return self.error(request, 400, "invalid_request", "command is required")
        x = self.run_command(sb, body["command"], stdin=bool(body.get("attach_stdin")))
        return web.json_response(x.view())

    async def execute_sync(self, request):
        sb = self.running(request)
        body = await request.json()
        x = self.run_command(sb, body["command"])
        await asyncio.shield(x.task)
        return web.json_response({"id": x.id, "devbox_id": sb.id, "exit_status": x.exit_status,
                                  "stdout": x.out[1].decode(errors="replace"),
                                  "stderr": x.out[2].decode(errors="replace"), "status": "completed"})

    def execution(self, request):
        sb = self.find(request)
        x = sb.executions.get(request.match_info["eid"])
        if x is None:
            raise Answer(self.error(request, 404, "not_found", f"execution {request.match_info['eid']} not found"))
        return x

    async def exec_get(self, request):
        return web.json_response(self.execution(request).view())

    async def exec_wait(self, request):
        x = self.execution(request)
        statuses = (await request.json()).get("statuses") or ["completed"]
        if x.status not in statuses:
            await self._wait_done(x, LONG_POLL_HOLD)
        if x.status not in statuses:
            resp = self.error(request, 408, "timeout", "execution did not reach the statuses in time")
            resp.headers["x-should-retry"] = "true"
            return resp
        return web.json_response(x.view())

    async def exec_kill(self, request):
        x = self.execution(request)
        if x.task and not x.task.done():
            x.task.cancel()
            await asyncio.gather(x.task, return_exceptions=True)
        return web.json_response(x.view())

    async def exec_stdin(self, request):
        x = self.execution(request)
        body = await request.json()
        if body.get("text"):
            x.stdin.push(body["text"].encode())
        if body.get("signal") == "EOF":
            x.stdin.eof()
        return web.json_response(x.view())

    async def _stream(self, request, fd):
        x = self.execution(request)
        offset = int(request.query.get("offset") or 0)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        sent = offset

        async def send(_fd, data):
            nonlocal sent
            sent += len(data)
            event = {"output": data.decode(errors="replace"), "offset": sent}
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        out = Output(self, request, send)
        try:
            while True:
                changed = x.changed
                if len(x.out[fd]) > sent:
                    await out(fd, bytes(x.out[fd][sent:]))
                    continue
                if x.status == "completed":
                    break
                await changed.wait()
            out.gate()
            await resp.write_eof()
        except Dropped:
            pass
        return resp

    async def stream_stdout(self, request):
        return await self._stream(request, 1)

    async def stream_stderr(self, request):
        return await self._stream(request, 2)

    # -- files
    def path(self, sb, p):
        if not isinstance(p, str) or not p:
            raise Answer(web.json_response({"error": "invalid_request", "message": "path is required"}, status=400))
        return sb.fs.norm(p, HOME)

    def fs_error(self, request, e):
        status = 404 if e.code == "ENOENT" else 400
        return self.error(request, status, e.code, f"{e.code}: {e.path}")

    async def write_contents(self, request):
        sb = self.running(request)
        body = await request.json()
        try:
            sb.fs.write(self.path(sb, body.get("file_path")), str(body.get("contents", "")).encode())
        except FsError as e:
            return self.fs_error(request, e)
        return web.json_response({"devbox_id": sb.id, "exit_status": 0, "stdout": "", "stderr": ""})

    async def read_contents(self, request):
        sb = self.running(request)
        body = await request.json()
        try:
            data = sb.fs.read(self.path(sb, body.get("file_path")))
        except FsError as e:
            return self.fs_error(request, e)
        return web.Response(text=data.decode(errors="replace"), content_type="text/plain")

    async def upload(self, request):
        sb = self.running(request)
        path, data = None, None
        async for part in await request.multipart():
            if part.name == "path":
                path = (await part.read()).decode()
            elif part.name == "file":
                data = await part.read()
        if data is None:
            return self.error(request, 400, "invalid_request", "file is required")
        try:
            sb.fs.write(self.path(sb, path), data)
        except FsError as e:
            return self.fs_error(request, e)
        return web.json_response({})

    async def download(self, request):
        sb = self.running(request)
        body = await request.json()
        try:
            data = sb.fs.read(self.path(sb, body.get("path")))
        except FsError as e:
            return self.fs_error(request, e)
        return web.Response(body=data, content_type="application/octet-stream")

    async def enable_tunnel(self, request):
        sb = self.running(request)
        body = await request.json() if request.can_read_body else {}
        if sb.tunnel is None:  # one tunnel per devbox: enabling it again answers it
            mode = body.get("auth_mode", "open")
            sb.tunnel = {"tunnel_key": sb.id, "auth_mode": mode,
                         "http_keep_alive": True, "wake_on_http": False,
                         "create_time_ms": int(time.time() * 1000),
                         "auth_token": new_id("tkn_", 24) if mode == "authenticated" else None}
        return web.json_response(sb.tunnel)

    def preview_denied(self, request, sb, port):
        """A tunnel serves only a devbox that has one; an authenticated
        one wants its token (reference §10.6)."""
        t = sb.tunnel
        if t is None:
            return web.Response(status=404, text="no tunnel\n")
        if t["auth_token"] and request.headers.get("X-Runloop-Tunnel-Authorization") != \
                "Bearer " + t["auth_token"]:
            return web.Response(status=401, text="tunnel token required\n")
        return None
