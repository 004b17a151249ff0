// Drives @runloop/api-client against the Runloop double: the lifecycle a
// Pocketenv adapter needs (create and await running, exec with exit codes,
// streamed output, files, suspend/resume, shutdown), then a bad key.
// The double speaks HTTP/1.1 only: the SDK's default HTTP/2 (prior
// knowledge on http://) is turned off with its own http2: false.
// Prints one JSON line; the pytest test checks it against the double.
import Runloop from '@runloop/api-client'

const rl = new Runloop({ bearerToken: process.env.DOUBLE_KEY, baseURL: process.env.DOUBLE_URL, maxRetries: 2, http2: false })
const out = {}
const errorOf = (e) => ({ name: e?.constructor?.name, status: e?.status, message: String(e?.message ?? e) })

const created = await rl.devboxes.create({ name: 'pe-t1', environment_variables: { GREETING: 'hello-env' } })
out.created = { status: created.status }
const box = await rl.devboxes.awaitRunning(created.id)
out.running = box.status

const ok = await rl.devboxes.executeAndAwaitCompletion(box.id, { command: 'echo hi; printf oops >&2; printenv GREETING' })
out.exec = { stdout: ok.stdout, stderr: ok.stderr, exit: ok.exit_status }
const fail = await rl.devboxes.executeAndAwaitCompletion(box.id, { command: 'echo before; exit 3' })
out.fail = { stdout: fail.stdout, exit: fail.exit_status }

// streaming: the SSE tail of a running execution
const ex = await rl.devboxes.executeAsync(box.id, { command: 'echo one; sleep 0.3; echo two' })
const chunks = []
for await (const c of await rl.devboxes.executions.streamStdoutUpdates(box.id, ex.execution_id)) chunks.push(c.output)
const done = await rl.devboxes.executions.awaitCompleted(box.id, ex.execution_id)
out.stream = { chunks, exit: done.exit_status }

// stdin of an async execution
const cat = await rl.devboxes.executeAsync(box.id, { command: 'cat', attach_stdin: true })
await rl.devboxes.executions.sendStdIn(box.id, cat.execution_id, { text: 'from stdin' })
await rl.devboxes.executions.sendStdIn(box.id, cat.execution_id, { text: '', signal: 'EOF' }) // a body of only `signal` reads as request options to the SDK
out.stdin = (await rl.devboxes.executions.awaitCompleted(box.id, cat.execution_id)).stdout

// a kill
const slow = await rl.devboxes.executeAsync(box.id, { command: 'sleep 30' })
await rl.devboxes.executions.kill(box.id, slow.execution_id)
out.killed = (await rl.devboxes.executions.retrieve(box.id, slow.execution_id)).exit_status

await rl.devboxes.writeFileContents(box.id, { file_path: '/tmp/a.txt', contents: 'hello' })
out.read = await rl.devboxes.readFileContents(box.id, { file_path: '/tmp/a.txt' })
await rl.devboxes.uploadFile(box.id, { path: '/tmp/b.bin', file: new File([new Uint8Array([0, 1, 2, 255])], 'b.bin') })
const dl = await rl.devboxes.downloadFile(box.id, { path: '/tmp/b.bin' })
out.download = [...new Uint8Array(await dl.arrayBuffer())]
try {
  await rl.devboxes.downloadFile(box.id, { path: '/tmp/missing' })
  out.readMissing = 'no error'
} catch (e) {
  out.readMissing = errorOf(e).status
}

await rl.devboxes.suspend(box.id)
out.suspended = (await rl.devboxes.awaitSuspended(box.id)).status
await rl.devboxes.resume(box.id)
out.resumed = (await rl.devboxes.awaitRunning(box.id)).status
out.readAfterResume = await rl.devboxes.readFileContents(box.id, { file_path: '/tmp/a.txt' })

const end = await rl.devboxes.shutdown(box.id)
out.shutdown = { status: end.status, reason: end.shutdown_reason }
out.afterShutdown = (await rl.devboxes.retrieve(box.id)).status

try {
  await new Runloop({ bearerToken: 'wrong', baseURL: process.env.DOUBLE_URL, maxRetries: 0, http2: false }).devboxes.retrieve(box.id)
  out.badKey = 'accepted'
} catch (e) {
  out.badKey = errorOf(e)
}
console.log(JSON.stringify(out))
process.exit(0)
