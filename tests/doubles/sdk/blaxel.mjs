// Drives @blaxel/core against the Blaxel double: create, processes with
// exit codes and streamed logs, files (text and bytes), delete, then a bad
// key. Configured as a user would: BL_API_URL (the double's /v0),
// BL_WORKSPACE, BL_API_KEY; the sandbox API is the metadata.url the double
// answers. No region is given, so the SDK uses no HTTP/2 edge session.
// Prints one JSON line; the pytest test checks it against the double.
process.env.BL_API_URL = process.env.DOUBLE_URL + '/v0'
process.env.BL_WORKSPACE = process.env.DOUBLE_WORKSPACE
process.env.BL_API_KEY = process.env.BAD_KEY || process.env.DOUBLE_KEY
const { SandboxInstance } = await import('@blaxel/core')
const out = {}
// the SDK throws its API errors as plain objects (the error body, and a status)
const errorOf = (e) => ({ status: e?.status ?? e?.response?.status ?? e?.code, error: e?.error ?? String(e?.message ?? e).slice(0, 200) })

if (process.env.BAD_KEY) { // a process of its own: the SDK reads its credentials once
  try {
    await SandboxInstance.get('pe-t1')
    out.badKey = 'accepted'
  } catch (e) {
    out.badKey = errorOf(e)
  }
  console.log(JSON.stringify(out))
  process.exit(0)
}

const sbx = await SandboxInstance.create({ name: 'pe-t1', envs: [{ name: 'GREETING', value: 'hello-env' }], ports: [{ target: 3000, protocol: 'HTTP' }] })
out.created = { name: sbx.metadata.name, status: sbx.status }
out.got = (await SandboxInstance.get('pe-t1')).status

const ok = await sbx.process.exec({ command: 'echo hi; printf oops >&2; printenv GREETING', waitForCompletion: true })
out.exec = { stdout: ok.stdout, stderr: ok.stderr, exitCode: ok.exitCode, status: ok.status }
const fail = await sbx.process.exec({ command: 'echo before; exit 3', waitForCompletion: true })
out.fail = { stdout: fail.stdout, exitCode: fail.exitCode, status: fail.status }

// streamed logs of a running process
const lines = []
const p = await sbx.process.exec({ name: 'streamer', command: 'echo one; sleep 0.3; echo two >&2' })
const done = new Promise((resolve) => {
  const s = sbx.process.streamLogs(p.name, { onStdout: (l) => lines.push(['stdout', l]), onStderr: (l) => lines.push(['stderr', l]) })
  const t = setInterval(async () => {
    const q = await sbx.process.get(p.name)
    if (q.status !== 'running') { clearInterval(t); setTimeout(() => { s.close(); resolve(q) }, 200) }
  }, 50)
})
const fin = await done
out.stream = { lines, exitCode: fin.exitCode }

await sbx.fs.write('/tmp/a.txt', 'hello')
out.read = await sbx.fs.read('/tmp/a.txt')
await sbx.fs.writeBinary('/tmp/b.bin', new Uint8Array([0, 1, 2, 255]))
out.readBinary = [...new Uint8Array(await (await sbx.fs.readBinary('/tmp/b.bin')).arrayBuffer())]
const ls = await sbx.fs.ls('/tmp')
out.list = ls.files.map((f) => f.name)
await sbx.fs.rm('/tmp/a.txt')
try {
  await sbx.fs.read('/tmp/a.txt')
  out.readMissing = 'no error'
} catch (e) {
  out.readMissing = errorOf(e).status ?? errorOf(e).message
}

await SandboxInstance.delete('pe-t1')
try {
  await SandboxInstance.get('pe-t1')
  out.afterDelete = 'still there'
} catch (e) {
  out.afterDelete = errorOf(e)
}
console.log(JSON.stringify(out))
process.exit(0)
