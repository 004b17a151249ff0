// Drives Modal's JS SDK (`modal`, package.json pins it) against the Modal
// double, configured only as a user would: MODAL_SERVER_URL (plain http on
// loopback: the SDK dials h2c), MODAL_TOKEN_ID and MODAL_TOKEN_SECRET. The
// command router URL comes from the double (https on loopback, which the
// SDK dials without TLS). Lifecycle: create, exec with exit codes and both
// streams, stdin, write, read and list files through the SDK's filesystem,
// a PTY, terminate, then a bad token. Prints one JSON line.
import { ModalClient } from 'modal'

const [tokenId, tokenSecret] = process.env.DOUBLE_KEY.split(':')
process.env.MODAL_SERVER_URL = process.env.DOUBLE_URL
process.env.MODAL_TOKEN_ID = tokenId
process.env.MODAL_TOKEN_SECRET = tokenSecret
process.env.MODAL_CONFIG_PATH = '/nonexistent/modal.toml'
// the calls the reference (§8) and our adapter use: SandboxCreate, not the
// V2 backend this SDK picks by default
process.env.MODAL_SANDBOX_V2 = 'false'
const out = {}
const errorOf = (e) => ({ name: e?.constructor?.name, code: e?.code, message: String(e?.message ?? e) })

const modal = new ModalClient()
const app = await modal.apps.fromName('pocketenv', { createIfMissing: true })
const image = modal.images.fromRegistry('alpine:3.21')
const sb = await modal.sandboxes.create(app, image, { timeoutMs: 600000, cpu: 2, memoryMiB: 1024 })
out.created = { id: sb.sandboxId, app: app.appId }

const p = await sb.exec(['sh', '-c', 'echo hi; printf oops >&2'])
out.exec = { stdout: await p.stdout.readText(), stderr: await p.stderr.readText(), exitCode: await p.wait() }
const f = await sb.exec(['sh', '-c', 'echo before; exit 3'])
out.fail = { stdout: await f.stdout.readText(), exitCode: await f.wait() }

const c = await sb.exec(['cat'])
await c.stdin.writeText('from stdin')
await c.stdin.close()
out.stdin = { stdout: await c.stdout.readText(), exitCode: await c.wait() }

await sb.filesystem.writeText('hello', '/tmp/a.txt')
out.read = await sb.filesystem.readText('/tmp/a.txt')
try {
  await sb.filesystem.readText('/tmp/missing.txt')
  out.readMissing = 'no error'
} catch (e) {
  out.readMissing = e?.constructor?.name
}

out.list = (await sb.filesystem.listFiles('/tmp')).map((e) => [e.name, e.type, e.size])

// a terminal: pty_info on the exec, keystrokes through stdin, output on stdout
const t = await sb.exec(['bash', '-i'], { pty: true })
await t.stdin.writeText('echo in-pty\nexit 5\n')
out.pty = { stdout: await t.stdout.readText(), exitCode: await t.wait() }

out.pollBefore = await sb.poll()
await sb.terminate()
out.waited = await sb.wait()

const bad = new ModalClient({ tokenId, tokenSecret: 'as-wrong' })
try {
  await bad.apps.fromName('pocketenv', { createIfMissing: true })
  out.badKey = 'accepted'
} catch (e) {
  out.badKey = errorOf(e)
}
modal.close()
bad.close()
console.log(JSON.stringify(out))
process.exit(0)
