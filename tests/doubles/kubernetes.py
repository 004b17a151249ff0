"""Double of a Kubernetes API server (the core/v1 parts the kubernetes
adapter and @kubernetes/client-node use), for tests on loopback only.

Unlike the other doubles, exec runs real processes: each Pod gets a
directory of its own holding a busybox root (busybox-static's applets),
and every exec runs chrooted into it (so it needs root, as the test suite
runs). Absolute paths a test writes (/workspace/...) stay inside it.

Implemented: `GET /version`, `/api`, `/apis` (no groups, unless
`agent_sandbox=True`: then `agents.x-k8s.io/v1alpha1` is discovered and
its `Sandbox` served: create, get, merge-patch of `spec.replicas` 0/1,
delete, with the controller's part done at once: a Pod named as the
Sandbox, from `spec.podTemplate`, while replicas is 1); Pods: `POST/GET` (list; `watch=true`
streams ADDED/MODIFIED/DELETED events as JSON lines), `GET/DELETE` one (a
Pod is `Pending` on create and `Running` with a ready container 0.1 s
later; delete removes it at once and kills its processes); Secrets:
`POST`, `GET`, `DELETE` (`stringData` kept as `data`, base64); a
container's `env` and `envFrom: secretRef` reach its processes; the
`exec` subresource over WebSocket with the `v5.channel.k8s.io`,
`v4.channel.k8s.io` and `channel.k8s.io` subprotocols (channel byte first:
0 stdin, 1 stdout, 2 stderr, 3 the Status with the exit code, 4 resize
`{"Width","Height"}`, v5's 255 close of stdin; tty through a real PTY);
the Pod proxy `pods/NAME:PORT/proxy/...` (answers who it is, with the
credential); the `portforward` subresource over WebSocket
(`v4.channel.k8s.io`, one port: channel 0 data, 1 errors, each opened by
the port as 2 bytes little-endian) to a real TCP connection to the port at
the Pod's IP. Each Pod has an address of its own on loopback
(`status.podIP`, 127.x.y.z): its processes share the host's network, so
a server "in the Pod" listens on that address (the test starts one by
exec); deleting the Pod kills every process rooted in it, daemons too. Errors are `Status` objects (`kind`, `status: Failure`,
`message`, `reason`, `code`). Credentials: `Authorization: Bearer KEY`,
or, when the double serves TLS with a client CA (`tls=`), a verified
client certificate.

With `extensions=True` (implies agent_sandbox),
`extensions.agents.x-k8s.io/v1alpha1` too: `SandboxTemplate`,
`SandboxWarmPool` and `SandboxClaim` (create, get, delete), with their
controller in memory: a pool keeps `spec.replicas` warm Sandboxes (and
Pods) of its template; a claim is bound 0.1 s after its create
(`status.sandbox.name`) to a warm Sandbox of a pool of its template, or to
a fresh one named as the claim, and the pool is filled again; deleting a
claim deletes the Sandbox it bound. `bindings` lists (claim, Sandbox,
"warm"/"cold").

Not implemented: any other resource or group (Services, ConfigMaps,
volume claims), label/field selectors, resourceVersion semantics beyond a counter,
attach, logs, patch/update, namespaces as objects.

Routes: `version`, `discovery`, `create`, `list`, `watch`, `get`,
`delete`, `exec`, `portforward`, `preview`, `record.create`, `record.get`,
`record.delete`; with agent-sandbox `discovery:agents`, `sandbox.create`,
`sandbox.get`, `sandbox.patch`, `sandbox.delete`.
"""
import asyncio
import base64
import fcntl
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import tempfile
import termios
import time

from aiohttp import WSMsgType, web

from ._core import Double, Dropped, Output, Sandbox, iso

BUSYBOX = "/usr/bin/busybox"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
AGENTS_GROUP = {"kind": "APIGroup", "apiVersion": "v1", "name": "agents.x-k8s.io",
                "versions": [{"groupVersion": "agents.x-k8s.io/v1alpha1", "version": "v1alpha1"}],
                "preferredVersion": {"groupVersion": "agents.x-k8s.io/v1alpha1", "version": "v1alpha1"}}
EXT_GROUP = {"kind": "APIGroup", "apiVersion": "v1", "name": "extensions.agents.x-k8s.io",
             "versions": [{"groupVersion": "extensions.agents.x-k8s.io/v1alpha1", "version": "v1alpha1"}],
             "preferredVersion": {"groupVersion": "extensions.agents.x-k8s.io/v1alpha1", "version": "v1alpha1"}}
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
PF_PROTOCOLS = ("v4.channel.k8s.io",)  # the kubelet's WebSocket port-forward

_applets = None
PRINTENV = """#!/bin/sh
[ $# -eq 0 ] && exec env
rc=0
for n in "$@"; do
    if env | grep -q "^$n="; then eval "printf '%s\\n' \\"\\$$n\\""; else rc=1; fi
done
exit $rc
"""


def applets():
    global _applets
    if _applets is None:
        out = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout
        _applets = [a for a in out.split() if a and "/" not in a]
    return _applets


class RootFS:
    """A Pod's root directory; snapshot() is what the tests look at."""

    def __init__(self, root):
        self.root = root

    def snapshot(self):
        files = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            if rel in ("bin", "dev"):
                dirnames[:] = []
                continue
            for f in filenames:
                full = os.path.join(dirpath, f)
                if os.path.islink(full) or not os.path.isfile(full):
                    continue
                with open(full, "rb") as fh:
                    files["/" + os.path.normpath(os.path.join(rel, f)).lstrip("./")] = fh.read()
        return files


def make_root(base, name):
    root = tempfile.mkdtemp(prefix=f"{name}-", dir=base)
    for d in ("bin", "dev", "etc", "root", "tmp", "usr/bin", "sbin"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    for a in applets():
        link = os.path.join(root, "bin", a)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    try:
        os.mknod(os.path.join(root, "dev", "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError:  # a nodev filesystem: a plain file stands in
        open(os.path.join(root, "dev", "null"), "w").close()
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    # Debian's busybox has no printenv applet; a container image's coreutils would
    with open(os.path.join(root, "usr", "bin", "printenv"), "w") as f:
        f.write(PRINTENV)
    os.chmod(os.path.join(root, "usr", "bin", "printenv"), 0o755)
    return root


class Pod(Sandbox):
    pass


def status_obj(code, reason, message, **extra):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code, **extra}


class KubernetesDouble(Double):
    name = "kubernetes"
    pods_made = 0  # Pod IPs: 127.<from the pid>.x.y, the n-th Pod of this process

    def __init__(self, key=None, tls=None, agent_sandbox=False, extensions=False):
        super().__init__(key=key)
        self.agent_sandbox = agent_sandbox or extensions  # serve agents.x-k8s.io/v1alpha1 Sandboxes
        self.extensions = extensions  # and extensions.agents.x-k8s.io/v1alpha1
        self.templates = {}  # (ns, name) -> SandboxTemplate
        self.pools = {}  # (ns, name) -> SandboxWarmPool
        self.warm = {}  # (ns, pool name) -> [names of its warm Sandboxes, not yet claimed]
        self.claims = {}  # (ns, name) -> SandboxClaim
        self.bindings = []  # (claim, Sandbox name, "warm" or "cold"), in order
        self.agent_sandboxes = {}  # (ns, name) -> Sandbox
        self.secrets = {}  # (ns, name) -> Secret
        self.watchers = []  # (ns, asyncio.Queue)
        self.rv = 1
        self.base = tempfile.mkdtemp(prefix="k8s-double-")
        self.procs = {}  # pod name -> set of running processes
        self.tls = tls  # ssl.SSLContext (server side), or None
        self.ssl_context = tls
        self.forwards = []  # one record per port-forward: pod, port, protocol, bytes each way, error

    def stop(self):
        super().stop()
        for procs in self.procs.values():
            for p in procs:
                kill(p)
        for pod in list(self.sandboxes.values()):
            kill_rooted(pod.root)
        shutil.rmtree(self.base, ignore_errors=True)

    # -- shape
    def authorized(self, request):
        if request.headers.get("Authorization") == f"Bearer {self.key}":
            return True
        if self.tls is not None and request.transport is not None:
            sslobj = request.transport.get_extra_info("ssl_object")
            return bool(sslobj and sslobj.getpeercert())
        return False

    def error(self, request, status, code, message):
        reason = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                  409: "AlreadyExists", 500: "InternalError", 503: "ServiceUnavailable"}.get(status, code)
        return web.json_response(status_obj(status, reason, message), status=status)

    def unauthorized(self, request):
        return web.json_response(status_obj(401, "Unauthorized", "Unauthorized"), status=401)

    def open_route(self, route):
        return False  # the Pod proxy wants the credential too

    def routes(self, app):
        ns = "/api/v1/namespaces/{ns}"
        r = app.router
        r.add_get("/version", self.version, name="version")
        r.add_get("/api", self.api, name="discovery")
        r.add_get("/apis", self.apis, name="discovery:groups")
        r.add_post(ns + "/pods", self.create, name="create")
        r.add_get(ns + "/pods", self.list_or_watch, name="list")
        r.add_route("*", ns + "/pods/{name:[^/:]+}:{port:\\d+}/proxy/{tail:.*}", self.proxy, name="preview:proxy")
        r.add_route("*", ns + "/pods/{name:[^/:]+}:{port:\\d+}/proxy", self.proxy, name="preview:proxy-root")
        r.add_get(ns + "/pods/{name}", self.get, name="get")
        r.add_delete(ns + "/pods/{name}", self.delete, name="delete")
        r.add_route("*", ns + "/pods/{name}/exec", self.exec_, name="exec")
        r.add_route("*", ns + "/pods/{name}/portforward", self.portforward, name="portforward")
        if self.agent_sandbox:
            r.add_get("/apis/agents.x-k8s.io", self.agents_group, name="discovery:agents")
            sb = "/apis/agents.x-k8s.io/v1alpha1/namespaces/{ns}/sandboxes"
            r.add_post(sb, self.sandbox_create, name="sandbox.create")
            r.add_get(sb + "/{name}", self.sandbox_get, name="sandbox.get")
            r.add_patch(sb + "/{name}", self.sandbox_patch, name="sandbox.patch")
            r.add_delete(sb + "/{name}", self.sandbox_delete, name="sandbox.delete")
        if self.extensions:
            r.add_get("/apis/extensions.agents.x-k8s.io", self.ext_group, name="discovery:extensions")
            ext = "/apis/extensions.agents.x-k8s.io/v1alpha1/namespaces/{ns}/"
            for kind in ("sandboxtemplates", "sandboxwarmpools", "sandboxclaims"):
                short = kind[len("sandbox"):-1]
                r.add_post(ext + kind, self.ext_create, name=f"{short}.create")
                r.add_get(ext + kind + "/{name}", self.ext_get, name=f"{short}.get")
                r.add_delete(ext + kind + "/{name}", self.ext_delete, name=f"{short}.delete")
        r.add_post(ns + "/secrets", self.secret_create, name="record.create")
        r.add_get(ns + "/secrets/{name}", self.secret_get, name="record.get")
        r.add_delete(ns + "/secrets/{name}", self.secret_delete, name="record.delete")

    def next_rv(self):
        self.rv += 1
        return str(self.rv)

    def notify(self, ns, kind, obj):
        for wns, q in list(self.watchers):
            if wns == ns:
                q.put_nowait({"type": kind, "object": json.loads(json.dumps(obj))})

    def find(self, request):
        pod = self.sandboxes.get(request.match_info["name"])
        if pod is None or pod.ns != request.match_info["ns"]:
            return None
        return pod

    def not_found(self, kind, name):
        return web.json_response(status_obj(404, "NotFound", f'{kind} "{name}" not found',
                                            details={"name": name, "kind": kind}), status=404)

    # -- discovery
    async def version(self, request):
        return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0-double",
                                  "platform": "linux/amd64"})

    async def api(self, request):
        return web.json_response({"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": []})

    async def apis(self, request):
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1",
                                  "groups": ([AGENTS_GROUP] if self.agent_sandbox else []) +
                                  ([EXT_GROUP] if self.extensions else [])})

    # -- pods
    def pod_object(self, pod):
        ready = pod.phase == "Running"
        state = {"running": {"startedAt": iso(pod.created_at)}} if ready else \
            {"waiting": {"reason": "ContainerCreating"}}
        meta = dict(pod.manifest.get("metadata") or {})
        meta.update({"name": pod.id, "namespace": pod.ns, "uid": pod.uid, "resourceVersion": pod.rv,
                     "creationTimestamp": iso(pod.created_at)})
        if pod.deleted:
            meta["deletionTimestamp"] = iso(time.time())
        return {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": pod.manifest.get("spec"),
                "status": {"phase": pod.phase, "podIP": pod.ip,
                           "containerStatuses": [{"name": c.get("name"), "ready": ready, "state": state,
                                                  "image": c.get("image"), "restartCount": 0}
                                                 for c in pod.manifest["spec"]["containers"]]}}

    async def create(self, request):
        ns = request.match_info["ns"]
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("a Pod is an object")
        pod, failed = self.make_pod(ns, body)
        if failed is not None:
            return failed
        return web.json_response(self.pod_object(pod), status=201)

    def make_pod(self, ns, body):
        """A Pod from its manifest: (pod, None), or (None, the error answer)."""
        meta = body.get("metadata") or {}
        name = meta.get("name")
        containers = (body.get("spec") or {}).get("containers")
        if not isinstance(name, str) or not name or not isinstance(containers, list) or not containers:
            return None, self.error(None, 422, "Invalid", "Pod is invalid: metadata.name and spec.containers are required")
        if name in self.sandboxes:
            return None, web.json_response(status_obj(409, "AlreadyExists", f'pods "{name}" already exists'), status=409)
        env = {}
        c0 = containers[0]
        for ref in c0.get("envFrom") or []:
            sname = (ref.get("secretRef") or {}).get("name")
            sec = self.secrets.get((ns, sname))
            if sec is None:  # the kubelet would wait (CreateContainerConfigError)
                return None, self.error(None, 422, "Invalid", f'secret "{sname}" not found')
            env.update({k: base64.b64decode(v).decode() for k, v in (sec.get("data") or {}).items()})
        for e in c0.get("env") or []:
            env[e["name"]] = e.get("value", "")
        pod = Pod(name, env=env, ns=ns, manifest=body, phase="Pending", deleted=False,
                  uid=f"uid-{name}", rv=self.next_rv())
        pod.root = make_root(self.base, name)
        n = KubernetesDouble.pods_made  # across the doubles of this process: no two Pods share an IP
        KubernetesDouble.pods_made += 1
        pod.ip = f"127.{os.getpid() % 200 + 20}.{n // 250 % 250}.{n % 250 + 1}"
        pod.fs = RootFS(pod.root)
        self.sandboxes[name] = pod
        self.notify(ns, "ADDED", self.pod_object(pod))

        def running():
            if self.sandboxes.get(name) is pod:
                pod.phase = "Running"
                pod.rv = self.next_rv()
                self.notify(ns, "MODIFIED", self.pod_object(pod))
        asyncio.get_running_loop().call_later(0.1, running)
        return pod, None

    async def list_or_watch(self, request):
        ns = request.match_info["ns"]
        pods = [p for p in self.sandboxes.values() if p.ns == ns]
        if request.query.get("watch") not in ("true", "1"):
            return web.json_response({"kind": "PodList", "apiVersion": "v1",
                                      "metadata": {"resourceVersion": str(self.rv)},
                                      "items": [self.pod_object(p) for p in pods]})
        request["double.entry"]["route"] = "watch"
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        q = asyncio.Queue()
        if not request.query.get("resourceVersion"):
            for p in pods:
                q.put_nowait({"type": "ADDED", "object": self.pod_object(p)})
        self.watchers.append((ns, q))
        try:
            while True:
                ev = await q.get()
                await resp.write(json.dumps(ev).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers.remove((ns, q))
        return resp

    async def get(self, request):
        pod = self.find(request)
        if pod is None:
            return self.not_found("pods", request.match_info["name"])
        return web.json_response(self.pod_object(pod))

    async def delete(self, request):
        pod = self.find(request)
        if pod is None:
            return self.not_found("pods", request.match_info["name"])
        return web.json_response(self.remove_pod(pod))

    def remove_pod(self, pod):
        pod.deleted = True
        obj = self.pod_object(pod)
        del self.sandboxes[pod.id]
        for p in self.procs.pop(pod.id, set()):
            kill(p)
        kill_rooted(pod.root)
        shutil.rmtree(pod.root, ignore_errors=True)
        self.notify(pod.ns, "DELETED", obj)
        return obj

    # -- agent-sandbox: the Sandbox resource and what its controller does
    async def agents_group(self, request):
        return web.json_response(AGENTS_GROUP)

    def sandbox_pod(self, sbx):
        """The controller: a Pod named as the Sandbox while replicas is 1."""
        ns, name = sbx["metadata"]["namespace"], sbx["metadata"]["name"]
        pod = self.sandboxes.get(name)
        if sbx["spec"].get("replicas", 1) == 0:
            if pod is not None:
                self.remove_pod(pod)
            return None
        if pod is not None:
            return None
        tmpl = sbx["spec"].get("podTemplate") or {}
        manifest = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": (tmpl.get("metadata") or {}).get("labels") or {},
                                 "ownerReferences": [{"kind": "Sandbox", "name": name}]},
                    "spec": tmpl.get("spec")}
        _, failed = self.make_pod(ns, manifest)
        return failed

    async def sandbox_create(self, request):
        ns = request.match_info["ns"]
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise ValueError("a Sandbox is an object with a spec")
        name = (body.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not name or not (body["spec"].get("podTemplate") or {}).get("spec"):
            return self.error(request, 422, "Invalid", "Sandbox is invalid: metadata.name and spec.podTemplate.spec are required")
        if (ns, name) in self.agent_sandboxes:
            return web.json_response(status_obj(409, "AlreadyExists", f'sandboxes.agents.x-k8s.io "{name}" already exists'), status=409)
        sbx = dict(body, metadata=dict(body["metadata"], namespace=ns, resourceVersion=self.next_rv()))
        failed = self.sandbox_pod(sbx)
        if failed is not None:
            return failed
        self.agent_sandboxes[(ns, name)] = sbx
        return web.json_response(sbx, status=201)

    def find_sandbox(self, request):
        return self.agent_sandboxes.get((request.match_info["ns"], request.match_info["name"]))

    async def sandbox_get(self, request):
        sbx = self.find_sandbox(request)
        if sbx is None:
            return self.not_found("sandboxes.agents.x-k8s.io", request.match_info["name"])
        return web.json_response(sbx)

    async def sandbox_patch(self, request):
        sbx = self.find_sandbox(request)
        if sbx is None:
            return self.not_found("sandboxes.agents.x-k8s.io", request.match_info["name"])
        if request.content_type != "application/merge-patch+json":
            return self.error(request, 415, "UnsupportedMediaType", f"the double takes merge patches, not {request.content_type}")
        patch = await request.json()
        replicas = ((patch or {}).get("spec") or {}).get("replicas")
        if replicas not in (None, 0, 1):
            return self.error(request, 422, "Invalid", "spec.replicas: must be 0 or 1")
        if replicas is not None:
            sbx["spec"]["replicas"] = replicas
        failed = self.sandbox_pod(sbx)
        return failed if failed is not None else web.json_response(sbx)

    async def sandbox_delete(self, request):
        sbx = self.agent_sandboxes.pop((request.match_info["ns"], request.match_info["name"]), None)
        if sbx is None:
            return self.not_found("sandboxes.agents.x-k8s.io", request.match_info["name"])
        pod = self.sandboxes.get(sbx["metadata"]["name"])
        if pod is not None:  # garbage collection of what it owned
            self.remove_pod(pod)
        return web.json_response(sbx)

    # -- agent-sandbox extensions: templates, warm pools, claims, and their controller
    async def ext_group(self, request):
        return web.json_response(EXT_GROUP)

    def ext_store(self, request):
        kind = request.path.split("/")[-1] if request.method == "POST" else request.path.split("/")[-2]
        return kind, {"sandboxtemplates": self.templates, "sandboxwarmpools": self.pools,
                      "sandboxclaims": self.claims}[kind]

    def new_sandbox(self, ns, name, tmpl):
        """The controller makes a Sandbox (and its Pod) from a template."""
        sbx = {"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
               "metadata": {"name": name, "namespace": ns, "resourceVersion": self.next_rv()},
               "spec": {"podTemplate": json.loads(json.dumps(tmpl["spec"]["podTemplate"])), "replicas": 1}}
        self.agent_sandboxes[(ns, name)] = sbx
        self.sandbox_pod(sbx)
        return sbx

    def fill_pools(self, ns):
        """Each pool keeps spec.replicas warm Sandboxes of its template."""
        for (pns, pname), pool in self.pools.items():
            tmpl = self.templates.get((pns, pool["spec"]["sandboxTemplateRef"]["name"]))
            if pns != ns or tmpl is None:
                continue
            warm = self.warm.setdefault((pns, pname), [])
            while len(warm) < pool["spec"].get("replicas", 0):
                name = f"{pname}-{os.urandom(3).hex()}"
                self.new_sandbox(ns, name, tmpl)
                warm.append(name)

    def bind(self, ns, claim):
        """A claim takes a warm Sandbox of a pool of its template (unless its
        policy is none), else a fresh one named as the claim; the pool is
        filled again."""
        tname = claim["spec"]["sandboxTemplateRef"]["name"]
        policy = claim["spec"].get("warmpool", "default")
        name, how = None, "cold"
        for (pns, pname), pool in self.pools.items():
            if pns == ns and pool["spec"]["sandboxTemplateRef"]["name"] == tname and policy != "none" \
                    and policy in ("default", pname) and self.warm.get((pns, pname)):
                name, how = self.warm[(pns, pname)].pop(0), "warm"
                break
        if name is None:
            name = claim["metadata"]["name"]
            self.new_sandbox(ns, name, self.templates[(ns, tname)])
        claim["status"] = {"sandbox": {"name": name},
                           "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxReady"}]}
        self.bindings.append((claim["metadata"]["name"], name, how))
        self.fill_pools(ns)

    async def ext_create(self, request):
        ns = request.match_info["ns"]
        kind, store = self.ext_store(request)
        body = await request.json()
        name = ((body or {}).get("metadata") or {}).get("name") if isinstance(body, dict) else None
        spec = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name or not isinstance(spec, dict):
            return self.error(request, 422, "Invalid", f"{kind}: metadata.name and spec are required")
        if (ns, name) in store:
            return web.json_response(status_obj(409, "AlreadyExists", f'{kind}.extensions.agents.x-k8s.io "{name}" already exists'), status=409)
        if kind == "sandboxtemplates" and not (spec.get("podTemplate") or {}).get("spec"):
            return self.error(request, 422, "Invalid", "SandboxTemplate is invalid: spec.podTemplate.spec is required")
        if kind != "sandboxtemplates" and not (spec.get("sandboxTemplateRef") or {}).get("name"):
            return self.error(request, 422, "Invalid", f"{kind}: spec.sandboxTemplateRef.name is required")
        obj = dict(body, metadata=dict(body["metadata"], namespace=ns, resourceVersion=self.next_rv()))
        store[(ns, name)] = obj
        if kind == "sandboxclaims":
            if (ns, spec["sandboxTemplateRef"]["name"]) not in self.templates:
                obj["status"] = {"conditions": [{"type": "Ready", "status": "False", "reason": "TemplateNotFound"}]}
            else:  # bound a moment later, as a controller does: the client has to wait
                asyncio.get_running_loop().call_later(
                    0.1, lambda: (ns, name) in self.claims and "sandbox" not in obj.get("status", {}) and self.bind(ns, obj))
        else:
            self.fill_pools(ns)
        return web.json_response(obj, status=201)

    async def ext_get(self, request):
        kind, store = self.ext_store(request)
        obj = store.get((request.match_info["ns"], request.match_info["name"]))
        if obj is None:
            return self.not_found(f"{kind}.extensions.agents.x-k8s.io", request.match_info["name"])
        return web.json_response(obj)

    async def ext_delete(self, request):
        ns, name = request.match_info["ns"], request.match_info["name"]
        kind, store = self.ext_store(request)
        obj = store.pop((ns, name), None)
        if obj is None:
            return self.not_found(f"{kind}.extensions.agents.x-k8s.io", name)
        bound = [((obj.get("status") or {}).get("sandbox") or {}).get("name")] if kind == "sandboxclaims" else \
            self.warm.pop((ns, name), []) if kind == "sandboxwarmpools" else []
        for sname in bound:  # garbage collection of what it owned
            sbx = self.agent_sandboxes.pop((ns, sname), None) if sname else None
            if sbx is not None and sname in self.sandboxes:
                self.remove_pod(self.sandboxes[sname])
        return web.json_response(obj)

    async def proxy(self, request):
        pod = self.find(request)
        if pod is None:
            return self.not_found("pods", request.match_info["name"])
        port, tail = request.match_info["port"], request.match_info.get("tail", "")
        return web.Response(text=f"preview of {pod.id} port {port}: {request.method} /{tail}\n")

    # -- secrets
    async def secret_create(self, request):
        ns = request.match_info["ns"]
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("a Secret is an object")
        name = (body.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not name:
            return self.error(request, 422, "Invalid", "Secret is invalid: metadata.name is required")
        if (ns, name) in self.secrets:
            return web.json_response(status_obj(409, "AlreadyExists", f'secrets "{name}" already exists'), status=409)
        data = dict(body.get("data") or {})
        for k, v in (body.get("stringData") or {}).items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        meta = dict(body["metadata"], namespace=ns, resourceVersion=self.next_rv())
        sec = {"kind": "Secret", "apiVersion": "v1", "metadata": meta, "type": body.get("type", "Opaque"),
               "data": data}
        self.secrets[(ns, name)] = sec
        return web.json_response(sec, status=201)

    async def secret_get(self, request):
        sec = self.secrets.get((request.match_info["ns"], request.match_info["name"]))
        if sec is None:
            return self.not_found("secrets", request.match_info["name"])
        return web.json_response(sec)

    async def secret_delete(self, request):
        sec = self.secrets.pop((request.match_info["ns"], request.match_info["name"]), None)
        if sec is None:
            return self.not_found("secrets", request.match_info["name"])
        return web.json_response(status_obj(200, "", "", status="Success"))

    # -- port-forward
    async def portforward(self, request):
        pod = self.find(request)
        if pod is None:
            return self.not_found("pods", request.match_info["name"])
        ports = [p for v in request.query.getall("ports", []) for p in v.split(",") if p]
        if len(ports) != 1 or not ports[0].isdigit() or not 0 < int(ports[0]) < 65536:
            return self.error(request, 400, "BadRequest", "the double forwards exactly one port (ports=N)")
        port = int(ports[0])
        ws = web.WebSocketResponse(protocols=PF_PROTOCOLS)
        if not ws.can_prepare(request).ok:
            return self.error(request, 400, "BadRequest", "Upgrade request required")
        await ws.prepare(request)
        rec = {"pod": pod.id, "port": port, "protocol": ws.ws_protocol, "up": 0, "down": 0, "error": None}
        self.forwards.append(rec)
        prefix = struct.pack("<H", port)
        await ws.send_bytes(b"\x00" + prefix)
        await ws.send_bytes(b"\x01" + prefix)
        try:
            reader, writer = await asyncio.open_connection(pod.ip, port)
        except OSError as e:
            rec["error"] = (f"error forwarding port {port} to pod {pod.id}, uid {pod.uid}: "
                            f"failed to connect to {pod.ip}:{port}: {e.strerror}")
            await ws.send_bytes(b"\x01" + rec["error"].encode())
            await ws.close()
            return ws

        async def up():  # the client's bytes (channel 0) to the port
            async for msg in ws:
                if msg.type == WSMsgType.BINARY and msg.data[:1] == b"\x00" and len(msg.data) > 1:
                    rec["up"] += len(msg.data) - 1
                    writer.write(msg.data[1:])
                    await writer.drain()
            writer.close()  # the client closed: so does the connection to the port
        t = asyncio.ensure_future(up())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                rec["down"] += len(data)
                await ws.send_bytes(b"\x00" + data)
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            t.cancel()
            writer.close()
            await ws.close()
        return ws

    # -- exec
    def resolve(self, pod, cmd, env):
        if "/" in cmd:
            return os.path.lexists(pod.root + "/" + cmd.lstrip("/"))
        return any(os.path.lexists(os.path.join(pod.root + d, cmd)) for d in env["PATH"].split(":"))

    async def exec_(self, request):
        pod = self.find(request)
        if pod is None:
            return self.not_found("pods", request.match_info["name"])
        q = request.query
        cmd = q.getall("command", [])
        tty = q.get("tty") in ("true", "1")
        want_stdin = q.get("stdin") in ("true", "1")
        ws = web.WebSocketResponse(protocols=PROTOCOLS)
        if not ws.can_prepare(request).ok:
            return self.error(request, 400, "BadRequest", "Upgrade request required")
        if not cmd:
            return self.error(request, 400, "BadRequest", "you must specify at least 1 command")
        await ws.prepare(request)
        v5 = ws.ws_protocol == "v5.channel.k8s.io"
        lock = asyncio.Lock()

        async def send(fd, data):
            async with lock:
                await ws.send_bytes(bytes([fd]) + bytes(data))
        out = Output(self, request, send)
        rec = {"argv": cmd, "env": {}, "cwd": "/", "exit_code": None, "stdout": "", "stderr": "", "tty": tty,
               "protocol": ws.ws_protocol}
        pod.execs.append(rec)
        env = {"PATH": PATH, "HOSTNAME": pod.id, "HOME": "/root", **pod.env}
        if tty:
            env["TERM"] = "xterm"
        if not self.resolve(pod, cmd[0], env):
            msg = (f'failed to exec in container: exec: "{cmd[0]}": executable file not found in $PATH')
            await send(3, json.dumps(status_obj(500, "InternalError", msg)).encode())
            rec["exit_code"] = 127
            await ws.close()
            return ws
        root = pod.root
        master = slave = None
        if tty:
            master, slave = os.openpty()
            rec_pty = {"resizes": [], "input": bytearray(), "exit_code": None, "argv": cmd}
            pod.pty.append(rec_pty)

        def pre():
            os.chroot(root)
            os.chdir("/")
            if tty:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, preexec_fn=pre, start_new_session=True,
            stdin=slave if tty else (subprocess.PIPE if want_stdin else subprocess.DEVNULL),
            stdout=slave if tty else subprocess.PIPE, stderr=slave if tty else subprocess.PIPE)
        if slave is not None:
            os.close(slave)
        self.procs.setdefault(pod.id, set()).add(proc)
        loop = asyncio.get_running_loop()

        async def pump(stream, fd):
            while True:
                data = await stream.read(65536)
                if not data:
                    return
                await out(fd, data)

        async def pump_pty():
            while True:
                try:
                    data = await loop.run_in_executor(None, os.read, master, 65536)
                except OSError:
                    return
                if not data:
                    return
                await out(1, data)

        async def reader():
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                ch, data = msg.data[0], msg.data[1:]
                if ch == 0 and data:
                    if tty:
                        rec_pty["input"].extend(data)
                        os.write(master, data)
                    elif proc.stdin is not None:
                        proc.stdin.write(data)
                        await proc.stdin.drain()
                elif ch == 255 and v5 and data[:1] == b"\x00" and proc.stdin is not None:
                    proc.stdin.close()
                elif ch == 4:
                    size = json.loads(data)
                    if tty:
                        rec_pty["resizes"].append((size["Width"], size["Height"]))
                        fcntl.ioctl(master, termios.TIOCSWINSZ,
                                    struct.pack("HHHH", size["Height"], size["Width"], 0, 0))
            kill(proc)  # the client ended the session
        rt = asyncio.ensure_future(reader())
        try:
            if tty:
                await pump_pty()
            else:
                await asyncio.gather(pump(proc.stdout, 1), pump(proc.stderr, 2))
            code = await proc.wait()
            code = code if code >= 0 else 128 - code
            rec["exit_code"] = code
            if tty:
                rec_pty["exit_code"] = code
            out.gate()
            if code == 0:
                status = {"metadata": {}, "status": "Success"}
            else:
                status = status_obj(None, "NonZeroExitCode",
                                    f"command terminated with non-zero exit code: exit status {code}",
                                    details={"causes": [{"reason": "ExitCode", "message": str(code)}]})
                del status["code"]
            await send(3, json.dumps(status).encode())
            await ws.close()
        except (Dropped, ConnectionResetError):
            pass
        finally:
            rec["stdout"] = out.copy[1].decode(errors="replace")
            rec["stderr"] = out.copy[2].decode(errors="replace")
            kill(proc)
            rt.cancel()
            if master is not None:
                os.close(master)
            self.procs.get(pod.id, set()).discard(proc)
        return ws


def kill_rooted(root):
    """Every process whose root is the Pod's (servers that went to the
    background too): the Pod is gone, so are they."""
    want = os.path.realpath(root)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{pid}/root") == want:
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def kill(proc):
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
