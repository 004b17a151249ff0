// Drives @hopx-ai/sdk against the Hopx double: create (with env vars, which
// the SDK pushes to the agent), commands with exit codes, a streamed run,
// a terminal, files, pause/resume, delete, then a bad key. The agent is the
// double's own URL (the create answer's public_host). Prints one JSON line.
// The package's ESM build loads its sandbox module through a dynamic import
// that can leave a top-level await unsettled (node exits 13); its CommonJS
// build has no such cycle.
import { createRequire } from 'node:module'
const { Sandbox } = createRequire(import.meta.url)('@hopx-ai/sdk')

const opts = { apiKey: process.env.DOUBLE_KEY, baseURL: process.env.DOUBLE_URL }
const out = {}
const errorOf = (e) => ({ name: e?.constructor?.name, status: e?.statusCode ?? e?.status, message: String(e?.message ?? e) })

const sbx = await Sandbox.create({ ...opts, template: 'code-interpreter', envVars: { GREETING: 'hello-env' } })
const info = await sbx.getInfo()
out.created = { status: info.status, publicHost: info.publicHost }

const ok = await sbx.commands.run('echo hi; printf oops >&2; printenv GREETING')
out.exec = { stdout: ok.stdout, stderr: ok.stderr, exitCode: ok.exit_code ?? ok.exitCode }
const fail = await sbx.commands.run('echo before; exit 3')
out.fail = { stdout: fail.stdout, exitCode: fail.exit_code ?? fail.exitCode }

// The SDK's WSClient listens for one message at a time (ws.once), so
// messages that arrive together are lost to its iterators; these parts use
// its connection (agent host, JWT) and its send, with a listener of their own.
function collect(ws, last) {
  const msgs = []
  return new Promise((resolve, reject) => {
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString())
      msgs.push(m)
      if (m.type === last) { ws.close(); resolve(msgs) }
    })
    ws.on('error', reject)
    ws.on('close', () => resolve(msgs))
  })
}

// streamed: stdout pieces, then the result
const sws = await sbx.wsClient.connect('/execute/stream')
const streamed = collect(sws, 'complete')
sbx.wsClient.send(sws, { type: 'execute', code: 'echo one; sleep 0.3; echo two', language: 'bash', timeout: 60, workdir: '/workspace' })
const msgs = await streamed
out.stream = msgs.filter((m) => m.type !== 'result').map((m) => [m.type, m.data ?? m.success])
out.streamExit = msgs.find((m) => m.type === 'result')?.exit_code

// a terminal
const ws = await sbx.terminal.connect()
const term = collect(ws, 'exit')
sbx.terminal.resize(ws, 100, 30)
sbx.terminal.sendInput(ws, 'echo typed\nexit 5\n')
const tm = await term
out.pty = { exitCode: tm.find((m) => m.type === 'exit')?.code, screen: tm.filter((m) => m.type === 'output').map((m) => m.data).join('') }

await sbx.files.write('/workspace/a.txt', 'hello')
out.read = await sbx.files.read('/workspace/a.txt')
await sbx.files.writeBytes('/workspace/b.bin', Buffer.from([0, 1, 2, 255]))
out.readBytes = [...(await sbx.files.readBytes('/workspace/b.bin'))]
out.list = (await sbx.files.list('/workspace')).map((f) => f.name)
await sbx.files.remove('/workspace/a.txt')
try {
  await sbx.files.read('/workspace/a.txt')
  out.readMissing = 'no error'
} catch (e) {
  out.readMissing = errorOf(e).name
}

await sbx.pause()
out.paused = (await sbx.getInfo()).status
await sbx.resume()
out.resumed = (await sbx.getInfo()).status

await sbx.kill()
try {
  await Sandbox.connect(sbx.sandboxId, opts.apiKey, opts.baseURL)
  out.afterDelete = 'still there'
} catch (e) {
  out.afterDelete = errorOf(e).name
}
try {
  await Sandbox.create({ ...opts, apiKey: 'hopx_live_wrong', template: 'code-interpreter' })
  out.badKey = 'accepted'
} catch (e) {
  out.badKey = errorOf(e)
}
console.log(JSON.stringify(out))
process.exit(0)
