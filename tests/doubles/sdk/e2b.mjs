// Drives the `e2b` SDK (package.json pins it) against the E2B double,
// configured only as a user would: E2B_API_URL, E2B_SANDBOX_URL (the
// shared sandbox host: envd calls carry E2b-Sandbox-Id) and E2B_API_KEY.
// The lifecycle a Pocketenv adapter needs, then a bad key. Prints one JSON
// line; the pytest test checks it against what the double saw.
import { Sandbox, CommandExitError } from 'e2b'

process.env.E2B_API_URL = process.env.DOUBLE_URL
process.env.E2B_SANDBOX_URL = process.env.DOUBLE_URL
process.env.E2B_API_KEY = process.env.DOUBLE_KEY
const out = {}
const errorOf = (e) => ({ name: e?.constructor?.name, message: String(e?.message ?? e) })

const sbx = await Sandbox.create('base', { envs: { GREETING: 'hello-env' }, metadata: { pocketenv: 't1' } })
out.created = { id: sbx.sandboxId, running: await sbx.isRunning() }

const ok = await sbx.commands.run('echo hi; printf oops >&2; printenv GREETING')
out.exec = { stdout: ok.stdout, stderr: ok.stderr, exitCode: ok.exitCode }
try {
  await sbx.commands.run('echo before; exit 3')
  out.fail = 'no CommandExitError for exit 3'
} catch (e) {
  out.fail = e instanceof CommandExitError ? { exitCode: e.exitCode, stdout: e.stdout } : errorOf(e)
}

// streaming: each piece as the command makes it
const chunks = []
const s = await sbx.commands.run('echo one; sleep 0.3; echo two', { onStdout: (d) => chunks.push(d) })
out.stream = { exitCode: s.exitCode, chunks }

// stdin, sent while the command runs
const h = await sbx.commands.run('cat', { background: true, stdin: true })
await sbx.commands.sendStdin(h.pid, 'from stdin')
await sbx.commands.closeStdin(h.pid)
out.stdin = (await h.wait()).stdout

// a terminal: typed lines, a resize, the shell's exit code
let screen = ''
const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => { screen += new TextDecoder().decode(d) } })
await sbx.pty.resize(pty.pid, { cols: 100, rows: 30 })
await sbx.pty.sendInput(pty.pid, new TextEncoder().encode('echo typed\nexit 5\n'))
try {
  const r = await pty.wait()
  out.pty = { exitCode: r.exitCode, screen }
} catch (e) {
  out.pty = e instanceof CommandExitError ? { exitCode: e.exitCode, screen } : errorOf(e)
}

await sbx.files.write('/tmp/a.txt', 'hello')
out.read = await sbx.files.read('/tmp/a.txt')
out.list = (await sbx.files.list('/tmp')).map((e) => e.name)
await sbx.files.remove('/tmp/a.txt')
try {
  await sbx.files.read('/tmp/a.txt')
  out.readMissing = 'no error'
} catch (e) {
  out.readMissing = e?.constructor?.name
}

// stop = pause (the disk and memory stay), start = connect
out.paused = await sbx.pause()
out.info = (await Sandbox.getInfo(sbx.sandboxId)).state
await sbx.connect()
out.readAfterResume = (await sbx.commands.run('echo back')).stdout

await sbx.kill()
try {
  await Sandbox.getInfo(sbx.sandboxId)
  out.afterDelete = 'still there'
} catch (e) {
  out.afterDelete = e?.constructor?.name
}

try {
  await Sandbox.create('base', { apiKey: 'e2b_' + '0'.repeat(40) })
  out.badKey = 'accepted'
} catch (e) {
  out.badKey = errorOf(e)
}
console.log(JSON.stringify(out))
process.exit(0)
