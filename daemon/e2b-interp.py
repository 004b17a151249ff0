# The code interpreter's gateway (docs/e2b.md, daemon/e2b-interp.c): the
# daemon runs this with the sandbox's python3 inside the sandbox, once per
# request, and it speaks to the python template's Jupyter server over the
# sandbox's loopback (REST for kernels, the kernel's WebSocket channel for
# code). A context is one kernel; the kernels live in the Jupyter server,
# so state outlives this process.
#
#   python3 -c SCRIPT execute          stdin {code, context_id, env_vars}: ACCEPTED,
#                                      then NDJSON as the kernel answers
#   python3 -c SCRIPT create           stdin {language, cwd}: the context
#   python3 -c SCRIPT list             the contexts
#   python3 -c SCRIPT restart|remove ID
#
# Exit 0: stdout is the answer. Exit 3: stdout is {"status", "message"},
# the HTTP error the daemon answers with. An execution's first line is
# ACCEPTED once the request is good (the daemon answers 200 then and
# streams the rest); a failure after it is an error line.
import asyncio
import datetime
import fcntl
import json
import os
import re
import sys
import urllib.error
import urllib.request
import uuid

BASE = "127.0.0.1:8888"
STATE = "/tmp/.pocketenv-interp"  # {"default": id, "cwd": {id: cwd}}
HOME = "/root"  # the Jupyter server's root_dir: a new kernel's cwd
EXEC_MAX_S = 600  # then the kernel is interrupted
ACCEPTED = '{"pocketenv": "accepted"}'  # the daemon's, not passed on

# Jupyter's MIME types and the names E2B's results give them.
MIME = {"text/plain": "text", "text/html": "html", "text/markdown": "markdown",
        "image/svg+xml": "svg", "image/png": "png", "image/jpeg": "jpeg",
        "application/pdf": "pdf", "text/latex": "latex", "application/json": "json",
        "application/javascript": "javascript"}


class Refused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def api(method, path, body=None, missing=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{BASE}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        if e.code == 404 and missing:
            raise Refused(404, missing)
        raise Refused(502, f"the sandbox's Jupyter server answered {e.code} to {method} {path}")
    except OSError:
        raise Refused(503, "this sandbox has no Jupyter server on port 8888: the code "
                      "interpreter runs in sandboxes of the python template")


class State:
    """The contexts' cwd and the default context, under a lock: requests
    run at the same time."""

    def __enter__(self):
        self.f = open(STATE, "a+")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        self.f.seek(0)
        try:
            self.v = json.loads(self.f.read() or "{}")
        except ValueError:
            self.v = {}
        self.v.setdefault("cwd", {})
        return self

    def save(self):
        self.f.seek(0)
        self.f.truncate()
        self.f.write(json.dumps(self.v))
        self.f.flush()

    def __exit__(self, *a):
        self.f.close()


def context_of(k, cwd):
    return {"id": k, "language": "python", "cwd": cwd}


def check_language(lang):
    if lang not in (None, "", "python", "python3"):
        raise Refused(400, f"language {str(lang)[:40]!r} is not available: this sandbox's "
                      "kernel is Python")


def new_kernel(cwd):
    k = api("POST", "/api/kernels", {"name": "python3"})["id"]
    if cwd and cwd != HOME:
        out = asyncio.run(run_cell(k, f"import os as _pe_os; _pe_os.chdir({cwd!r}); del _pe_os",
                                   silent=True))
        if any(m["type"] == "error" for m in out):
            api("DELETE", f"/api/kernels/{k}")
            raise Refused(400, f"cwd {cwd[:200]!r}: not a directory of the sandbox")
    return k


def create(req):
    check_language(req.get("language"))
    cwd = req.get("cwd") or HOME
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise Refused(400, "cwd must be an absolute path")
    k = new_kernel(cwd)
    with State() as st:
        st.v["cwd"][k] = cwd
        st.save()
    return context_of(k, cwd)


def listing():
    with State() as st:
        return [context_of(k["id"], st.v["cwd"].get(k["id"], HOME))
                for k in api("GET", "/api/kernels")]


def default_context():
    with State() as st:
        k = st.v.get("default")
        if k and any(x["id"] == k for x in api("GET", "/api/kernels")):
            return k
        k = new_kernel(HOME)
        st.v["default"] = k
        st.v["cwd"][k] = HOME
        st.save()
        return k


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def result_of(content, main):
    r = {"type": "result", "is_main_result": main}
    for mime, v in content.get("data", {}).items():
        name = MIME.get(mime)
        if name is None:
            r.setdefault("extra", {})[mime] = v
        else:
            r[name] = v if isinstance(v, str) or name == "json" else json.dumps(v)
    return r


async def run_cell(kernel, code, silent=False, emit=None):
    """Run code in kernel; E2B's messages, each also given to emit."""
    from tornado import websocket
    out = []

    def put(m):
        out.append(m)
        if emit:
            emit(m)

    ws = await websocket.websocket_connect(f"ws://{BASE}/api/kernels/{kernel}/channels",
                                           max_message_size=256 * 1024 * 1024)
    mid = uuid.uuid4().hex
    await ws.write_message(json.dumps({
        "header": {"msg_id": mid, "username": "e2b", "session": uuid.uuid4().hex,
                   "version": "5.3", "msg_type": "execute_request", "date": now()},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": silent, "store_history": not silent,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    replied = idle = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EXEC_MAX_S
    while not (replied and idle):
        left = deadline - loop.time()
        if left <= 0:
            api("POST", f"/api/kernels/{kernel}/interrupt")
            put({"type": "error", "name": "TimeoutError",
                 "value": f"execution exceeded {EXEC_MAX_S} s: the kernel was interrupted",
                 "traceback": ""})
            break
        try:
            raw = await asyncio.wait_for(ws.read_message(), left)
        except asyncio.TimeoutError:
            continue
        if raw is None:
            raise Refused(502, "the kernel's channel closed during the execution")
        m = json.loads(raw)
        if m.get("parent_header", {}).get("msg_id") != mid:
            continue
        t, c = m["msg_type"], m["content"]
        if t == "stream":
            put({"type": "stdout" if c["name"] == "stdout" else "stderr", "text": c["text"],
                 "timestamp": now()})
        elif t == "execute_input":
            put({"type": "number_of_executions", "execution_count": c["execution_count"]})
        elif t in ("execute_result", "display_data"):
            put(result_of(c, t == "execute_result"))
        elif t == "error":
            put({"type": "error", "name": c["ename"], "value": c["evalue"],
                 "traceback": "\n".join(c["traceback"])})
        elif t == "execute_reply":
            replied = True
        elif t == "status" and c["execution_state"] == "idle":
            idle = True
    ws.close()
    return out


def execute(req):
    code = req.get("code")
    if not isinstance(code, str):
        raise Refused(400, "code must be a string")
    check_language(req.get("language"))
    envs = req.get("env_vars") or {}
    if not isinstance(envs, dict) or not all(isinstance(v, str) for v in envs.values()):
        raise Refused(400, "env_vars must map names to strings")
    k = req.get("context_id")
    if k:
        if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z0-9-]{1,64}", k):
            raise Refused(400, "context_id must be a context's id")
        api("GET", f"/api/kernels/{k}", missing=f"context {k[:64]} not found")
    else:
        k = default_context()

    def emit(m):
        sys.stdout.write(json.dumps(m) + "\n")
        sys.stdout.flush()

    print(ACCEPTED, flush=True)

    async def go():
        # The variables hold for this execution only, as E2B's do.
        if envs:
            await run_cell(k, "import os as _pe_os; _pe_saved_env = {k: _pe_os.environ.get(k) "
                           f"for k in {list(envs)!r}}}; _pe_os.environ.update({envs!r})",
                           silent=True)
        await run_cell(k, code, emit=emit)
        if envs:
            await run_cell(k, "[_pe_os.environ.pop(k, None) if v is None else "
                           "_pe_os.environ.__setitem__(k, v) for k, v in _pe_saved_env.items()]; "
                           "del _pe_saved_env, _pe_os", silent=True)
        emit({"type": "end_of_execution"})

    try:
        asyncio.run(go())
    except Refused as e:  # the answer has begun: said in it
        emit({"type": "error", "name": "InterpreterError", "value": str(e), "traceback": ""})


def main():
    op = sys.argv[1] if len(sys.argv) > 1 else ""
    arg = sys.argv[2] if len(sys.argv) > 2 else ""
    try:
        req = {}
        if op in ("execute", "create"):
            try:
                req = json.loads(sys.stdin.read() or "{}")
            except ValueError:
                raise Refused(400, "the body must be JSON")
            if not isinstance(req, dict):
                raise Refused(400, "the body must be a JSON object")
        if op == "execute":
            execute(req)
        elif op == "create":
            print(json.dumps(create(req)))
        elif op == "list":
            print(json.dumps(listing()))
        elif op == "restart":
            api("POST", f"/api/kernels/{arg}/restart", {}, missing=f"context {arg} not found")
            with State() as st:
                cwd = st.v["cwd"].get(arg, HOME)
            if cwd != HOME:
                asyncio.run(run_cell(arg, f"import os as _pe_os; _pe_os.chdir({cwd!r}); "
                                     "del _pe_os", silent=True))
        elif op == "remove":
            api("DELETE", f"/api/kernels/{arg}", missing=f"context {arg} not found")
            with State() as st:
                st.v["cwd"].pop(arg, None)
                if st.v.get("default") == arg:
                    del st.v["default"]
                st.save()
        else:
            raise Refused(404, "no such code interpreter path")
    except Refused as e:
        print(json.dumps({"status": e.status, "message": str(e)}))
        sys.exit(3)


main()
