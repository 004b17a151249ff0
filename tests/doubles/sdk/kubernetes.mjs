// Drives @kubernetes/client-node (package.json pins it) against the
// Kubernetes API server double, configured as a user would: a kubeconfig
// (cluster server, user token, context namespace). Creates a pod, watches
// it start, execs into it (exit code from the status channel, stdin with
// its end, a TTY), forwards a port to a server in it, deletes it and sees the deletion, then a bad token.
// Prints one JSON line; the pytest test checks it against the double.
import * as k8s from '@kubernetes/client-node'
import { PassThrough, Writable } from 'node:stream'

const ns = 'default'
const out = {}
const errorOf = (e) => ({ name: e?.constructor?.name, code: e?.code, message: String(e?.message ?? e).slice(0, 200) })

function config (token) {
  const kc = new k8s.KubeConfig()
  kc.loadFromOptions({
    clusters: [{ name: 'double', server: process.env.DOUBLE_URL, skipTLSVerify: true }],
    users: [{ name: 'tester', token }],
    contexts: [{ name: 'ctx', cluster: 'double', user: 'tester', namespace: ns }],
    currentContext: 'ctx'
  })
  return kc
}

function sink () {
  const chunks = []
  const w = new Writable({ write (c, _e, cb) { chunks.push(Buffer.from(c)); cb() } })
  w.text = () => Buffer.concat(chunks).toString()
  return w
}

const kc = config(process.env.DOUBLE_KEY)
const core = kc.makeApiClient(k8s.CoreV1Api)

// the watch starts first: it must see the pod added, running, then deleted
const events = []
let sawRunning, sawDeleted
const running = new Promise((resolve) => { sawRunning = resolve })
const deleted = new Promise((resolve) => { sawDeleted = resolve })
const watch = new k8s.Watch(kc)
const req = await watch.watch(`/api/v1/namespaces/${ns}/pods`, {}, (type, obj) => {
  events.push([type, obj.metadata.name, obj.status?.phase])
  if (type !== 'DELETED' && obj.status?.phase === 'Running') sawRunning()
  if (type === 'DELETED') sawDeleted()
}, () => {})

const pod = await core.createNamespacedPod({
  namespace: ns,
  body: {
    metadata: { name: 'sdk-pod' },
    spec: { containers: [{ name: 'main', image: 'busybox', command: ['sleep', '3600'], env: [{ name: 'HELLO', value: 'from-env' }] }] }
  }
})
out.created = { name: pod.metadata.name, phase: pod.status?.phase }
await running
out.read = (await core.readNamespacedPod({ namespace: ns, name: 'sdk-pod' })).status.phase

const exec = new k8s.Exec(kc)
async function run (command, { stdin = null, tty = false } = {}) {
  const stdout = sink(); const stderr = tty ? null : sink()
  const status = await new Promise((resolve, reject) => {
    exec.exec(ns, 'sdk-pod', 'main', command, stdout, stderr, stdin, tty, resolve).catch(reject)
  })
  const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode')
  return { status: status.status, exitCode: cause ? Number(cause.message) : (status.status === 'Success' ? 0 : null), stdout: stdout.text(), stderr: stderr ? stderr.text() : null }
}
out.exec = await run(['sh', '-c', 'echo hi; echo $HELLO; echo oops >&2; exit 3'])
out.ok = await run(['echo', 'fine'])
const input = new PassThrough()
const catting = run(['cat'], { stdin: input })
input.write('from stdin')
input.end()
out.stdin = await catting
const keys = new PassThrough()
const shell = run(['sh'], { stdin: keys, tty: true })
keys.write('echo typed\nexit 5\n')
out.tty = await shell

// port-forward: a server in the pod (busybox httpd on the pod's address)
// answers through the portforward subresource
const podIP = (await core.readNamespacedPod({ namespace: ns, name: 'sdk-pod' })).status.podIP
out.serve = await run(['sh', '-c', `mkdir -p /www && echo served-in-pod > /www/index.html && httpd -p ${podIP}:8080 -h /www`])
async function forward (port) {
  const got = sink(); const errs = sink(); const input = new PassThrough()
  const ws = await new k8s.PortForward(kc).portForward(ns, 'sdk-pod', [port], got, errs, input)
  const closed = new Promise((resolve) => ws.on('close', resolve))
  input.write('GET /index.html HTTP/1.0\r\n\r\n')
  await closed
  return { protocol: ws.protocol, stdout: got.text(), stderr: errs.text() }
}
out.forward = await forward(8080)
out.forwardRefused = await forward(8081)

await core.deleteNamespacedPod({ namespace: ns, name: 'sdk-pod' })
await deleted
req.abort()
out.events = events
try {
  await core.readNamespacedPod({ namespace: ns, name: 'sdk-pod' })
  out.afterDelete = 'still there'
} catch (e) {
  out.afterDelete = errorOf(e).code
}
try {
  await config('wrong-token').makeApiClient(k8s.CoreV1Api).listNamespacedPod({ namespace: ns })
  out.badKey = 'accepted'
} catch (e) {
  out.badKey = errorOf(e).code
}
console.log(JSON.stringify(out))
