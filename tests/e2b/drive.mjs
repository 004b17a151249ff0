// Drives the real `e2b` and `@e2b/code-interpreter` SDKs (package.json
// pins them) against a Pocketenv
// daemon, configured only by E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY.
// Usage: node drive.mjs <scenario> [template]; prints one JSON object of
// what the SDK returned (tests/integration/test_e2b.py checks it).
import { Sandbox, CommandExitError } from 'e2b'
import { Sandbox as CodeSandbox } from '@e2b/code-interpreter'

const [scenario, template = 'busybox'] = process.argv.slice(2)
const out = {}

function errorOf(e) {
  return { name: e?.constructor?.name, message: String(e?.message ?? e) }
}

// Wait for cond() with a deadline: no sleep-and-hope.
async function until(cond, ms = 15000) {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await cond()) return true
    await new Promise((r) => setTimeout(r, 20))
  }
  return false
}

async function flow() {
  const sbx = await Sandbox.create(template, {
    timeoutMs: 120_000,
    metadata: { suite: 'e2b' },
    envs: { GREETING: 'hi there' },
  })
  out.sandboxId = sbx.sandboxId
  const r = await sbx.commands.run('echo "$GREETING"; echo oops >&2')
  out.run = { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode }
  try {
    await sbx.commands.run('exit 3')
    out.exit3 = 'no error'
  } catch (e) {
    out.exit3 = e instanceof CommandExitError ? { exitCode: e.exitCode } : errorOf(e)
  }
  // A background command: streamed output, then stdin it answers.
  const seen = []
  const h = await sbx.commands.run('echo ready; read line; echo "got $line"', {
    background: true,
    stdin: true,
    onStdout: (d) => seen.push(d),
  })
  out.streamedBeforeInput = await until(() => seen.join('').includes('ready'))
  await sbx.commands.sendStdin(h.pid, 'ping\n')
  const done = await h.wait()
  out.background = { stdout: done.stdout, exitCode: done.exitCode, seen: seen.join('') }
  // A background command killed.
  const k = await sbx.commands.run('sleep 600', { background: true })
  out.listed = (await sbx.commands.list()).some((p) => p.pid === k.pid)
  out.killed = await sbx.commands.kill(k.pid)
  try {
    await k.wait()
    out.killedWait = 'no error'
  } catch (e) {
    out.killedWait = e instanceof CommandExitError ? { exitCode: e.exitCode } : errorOf(e)
  }
  // Files.
  await sbx.files.write('/tmp/e2b/a.txt', 'hello file')
  out.read = await sbx.files.read('/tmp/e2b/a.txt')
  out.list = (await sbx.files.list('/tmp/e2b')).map((e) => ({ name: e.name, type: e.type, size: e.size }))
  out.exists = [await sbx.files.exists('/tmp/e2b/a.txt'), await sbx.files.exists('/tmp/e2b/none')]
  out.makeDir = await sbx.files.makeDir('/tmp/e2b/sub')
  await sbx.files.rename('/tmp/e2b/a.txt', '/tmp/e2b/sub/b.txt')
  out.afterRename = await sbx.files.read('/tmp/e2b/sub/b.txt')
  await sbx.files.remove('/tmp/e2b/sub')
  out.afterRemove = await sbx.files.exists('/tmp/e2b/sub')
  try {
    await sbx.files.read('/tmp/e2b/none')
    out.readMissing = 'no error'
  } catch (e) {
    out.readMissing = errorOf(e)
  }
  // Lifecycle: info, list, timeout, kill.
  const info = await sbx.getInfo()
  out.info = { sandboxId: info.sandboxId, templateId: info.templateId, metadata: info.metadata, state: info.state }
  const paginator = Sandbox.list()
  const items = await paginator.nextItems()
  out.inList = items.some((s) => s.sandboxId === sbx.sandboxId)
  await sbx.setTimeout(60_000)
  out.isRunning = await sbx.isRunning()
  out.kill = await sbx.kill()
  out.killedAgain = await Sandbox.kill(sbx.sandboxId)
}

async function badKey() {
  try {
    await Sandbox.create(template)
    out.create = 'no error'
  } catch (e) {
    out.create = errorOf(e)
  }
}

async function unknown() {
  try {
    await Sandbox.connect('sbx_doesnotexist')
    out.connect = 'no error'
  } catch (e) {
    out.connect = errorOf(e)
  }
  try {
    await Sandbox.getInfo('sbx_doesnotexist')
    out.getInfo = 'no error'
  } catch (e) {
    out.getInfo = errorOf(e)
  }
  out.kill = await Sandbox.kill('sbx_doesnotexist')
}

// A PTY: keystrokes in, the terminal's output back, a resize the shell sees.
async function pty() {
  const sbx = await Sandbox.create(template)
  let seen = ''
  const dec = new TextDecoder()
  const t = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => (seen += dec.decode(d)) })
  const enc = new TextEncoder()
  await sbx.pty.sendInput(t.pid, enc.encode('echo "tty:$(tty | cut -c1-8)"\n'))
  out.echoed = await until(() => seen.includes('tty:/dev/pts'))
  await sbx.pty.resize(t.pid, { cols: 100, rows: 30 })
  await sbx.pty.sendInput(t.pid, enc.encode('stty size\n'))
  out.resized = await until(() => seen.includes('30 100'))
  await sbx.pty.sendInput(t.pid, enc.encode('exit 5\n'))
  try {
    const r = await t.wait()
    out.exit = r.exitCode
  } catch (e) {
    out.exit = e.exitCode ?? errorOf(e)
  }
  await sbx.kill()
}

// watchDir: what a write and a remove in the directory look like.
async function watch() {
  const sbx = await Sandbox.create(template)
  await sbx.files.makeDir('/tmp/w')
  const events = []
  const h = await sbx.files.watchDir('/tmp/w', (e) => events.push(`${e.type}:${e.name}`))
  await sbx.files.write('/tmp/w/f.txt', 'x')
  await sbx.commands.run('rm /tmp/w/f.txt')
  out.seen = await until(() => events.includes('create:f.txt') && events.includes('remove:f.txt'))
  out.types = [...new Set(events)].sort()
  await h.stop()
  try {
    await sbx.files.watchDir('/tmp/none', () => {})
    out.missing = 'no error'
  } catch (e) {
    out.missing = errorOf(e)
  }
  await sbx.kill()
}

// watchDir recursive: events from directories that were there and from
// one made while it watches, named by their path under the directory.
async function watchRecursive() {
  const sbx = await Sandbox.create(template)
  await sbx.files.makeDir('/tmp/rw/old/deep')
  const events = []
  const h = await sbx.files.watchDir('/tmp/rw', (e) => events.push(`${e.type}:${e.name}`), { recursive: true })
  await sbx.files.write('/tmp/rw/old/deep/a.txt', 'x')
  await sbx.files.makeDir('/tmp/rw/new')
  out.newSeen = await until(() => events.includes('create:new'))
  await sbx.files.write('/tmp/rw/new/b.txt', 'y')
  await sbx.commands.run('rm -r /tmp/rw/old')
  out.seen = await until(() =>
    ['create:old/deep/a.txt', 'create:new/b.txt', 'remove:old/deep/a.txt', 'remove:old'].every((e) => events.includes(e)))
  out.events = [...new Set(events)].sort()
  await h.stop()
  await sbx.kill()
}

// What an agent framework's tool loop does: write a script, run it, read
// what it produced, feed that into the next step.
async function agent() {
  const sbx = await Sandbox.create(template)
  const steps = []
  let input = '3'
  for (let i = 0; i < 3; i++) {
    await sbx.files.write('/tmp/agent/step.sh', `n=$1; echo $((n * 2)) > /tmp/agent/out.txt; echo step ${i} done`)
    const r = await sbx.commands.run(`sh /tmp/agent/step.sh ${input}`)
    input = (await sbx.files.read('/tmp/agent/out.txt')).trim()
    steps.push({ stdout: r.stdout.trim(), value: input })
  }
  out.steps = steps
  await sbx.kill()
}

// Another client re-attaches to a running command (process Connect),
// gives it input, and both see its end.
async function reattach() {
  const sbx = await Sandbox.create(template)
  const h = await sbx.commands.run('echo first; read x; echo "got $x"', { background: true, stdin: true })
  const other = await Sandbox.connect(sbx.sandboxId)
  let seen = ''
  const h2 = await other.commands.connect(h.pid, { onStdout: (d) => (seen += d) })
  await other.commands.sendStdin(h.pid, 'again\n')
  const [a, b] = await Promise.all([h.wait(), h2.wait()])
  out.first = { stdout: a.stdout, exitCode: a.exitCode }
  out.second = { seen, exitCode: b.exitCode }
  try {
    await other.commands.connect(99999)
    out.unknown = 'no error'
  } catch (e) {
    out.unknown = errorOf(e)
  }
  await sbx.kill()
}

// pause keeps processes and memory: a shell counting in a variable is
// frozen by pause and carries on from where it was after connect.
async function pauseKeeps() {
  const sbx = await Sandbox.create(template)
  const h = await sbx.commands.run(
    'i=0; while :; do i=$((i+1)); echo $i > /tmp/count.tmp; mv /tmp/count.tmp /tmp/count; sleep 0.05; done',
    { background: true })
  const count = async () => Number((await sbx.files.read('/tmp/count').catch(() => '0')).trim() || 0)
  out.counting = await until(async () => (await count()) >= 3)
  await sbx.pause()
  const info = await Sandbox.getInfo(sbx.sandboxId)
  out.pausedState = info.state
  const again = await Sandbox.connect(sbx.sandboxId)
  const atResume = await count()
  out.resumedFrom = atResume
  out.continues = await until(async () => (await count()) > atResume + 2)
  out.samePid = (await again.commands.list()).some((p) => p.pid === h.pid)
  out.stateAfter = (await Sandbox.getInfo(sbx.sandboxId)).state
  await again.kill()
}

// Sandbox.list's filters: metadata (with characters that need escaping),
// state, template.
async function listFilter() {
  const a = await Sandbox.create(template, { metadata: { team: 'a&b=c', n: '1' } })
  const b = await Sandbox.create(template, { metadata: { team: 'other' } })
  await b.pause()
  const ids = async (query) => (await Sandbox.list({ query }).nextItems()).map((s) => s.sandboxId).sort()
  out.byMeta = (await ids({ metadata: { team: 'a&b=c' } })).join() === a.sandboxId
  out.byMeta2 = (await ids({ metadata: { team: 'a&b=c', n: '2' } })).length
  out.paused = (await ids({ state: ['paused'] })).includes(b.sandboxId)
  out.running = (await ids({ state: ['running'] })).includes(b.sandboxId)
  out.byTemplate = (await ids({ template: 'nope' })).length
  await a.kill()
  await Sandbox.kill(b.sandboxId)
}

// Sandbox.list in pages: the SDK's paginator follows x-next-token.
async function paging() {
  const made = []
  for (let i = 0; i < 3; i++) made.push((await Sandbox.create(template, { metadata: { page: 'p' } })).sandboxId)
  const pager = Sandbox.list({ query: { metadata: { page: 'p' } }, limit: 2 })
  const pages = []
  while (pager.hasNext) pages.push((await pager.nextItems()).map((s) => s.sandboxId))
  out.sizes = pages.map((p) => p.length)
  out.all = pages.flat().sort().join() === made.sort().join()
  for (const id of made) await Sandbox.kill(id)
}

// Sandbox.create → first commands.run, for bench/.
async function bench() {
  const n = Number(process.env.E2B_BENCH_N || 5)
  const ms = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    const sbx = await Sandbox.create(template)
    await sbx.commands.run('true')
    ms.push(performance.now() - t0)
    await sbx.kill()
  }
  out.ms = ms
}

// An execution as the tests compare it.
function execOf(e) {
  return {
    text: e.text ?? null,
    stdout: e.logs.stdout,
    stderr: e.logs.stderr,
    error: e.error ? { name: e.error.name, value: e.error.value, traceback: e.error.traceback } : null,
    count: e.executionCount ?? null,
  }
}

// The code interpreter: runCode's state between calls, errors, a chart,
// per-execution variables, and contexts.
async function interp() {
  const sbx = await CodeSandbox.create(template, { timeoutMs: 300_000 })
  const streamed = []
  out.first = execOf(await sbx.runCode('x = 41\nprint("set", x)', { onStdout: (m) => streamed.push(m.line) }))
  out.streamed = streamed
  out.second = execOf(await sbx.runCode('x + 1'))
  // Streamed: the first line arrives while the cell still runs (it
  // waits for a file this client writes only once it saw that line).
  const early = []
  const running = sbx.runCode(
    'import os, time\nprint("early", flush=True)\nend = time.time() + 30\n' +
      'while not os.path.exists("/tmp/go") and time.time() < end: time.sleep(0.05)\n' +
      'print("go" if os.path.exists("/tmp/go") else "no go")',
    { onStdout: (m) => early.push(m.line) })
  out.streamedEarly = await until(() => early.includes('early\n'), 20000)
  await sbx.files.write('/tmp/go', 'x')
  out.streamedAll = (await running).logs.stdout.join('')
  out.failed = execOf(await sbx.runCode('print("before")\n1 / 0'))
  out.afterError = execOf(await sbx.runCode('x'))
  const chart = await sbx.runCode(
    'import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 1, 9])\nplt.title("t")\nplt.show()')
  out.chart = chart.results.map((r) => ({ formats: r.formats(), png: r.png ?? null, main: r.isMainResult }))
  out.chartError = chart.error ? chart.error.value : null
  out.html = (await sbx.runCode('from IPython.display import HTML\nHTML("<b>hi</b>")')).results.map((r) => r.html ?? null)
  out.envs = execOf(await sbx.runCode('import os\nos.environ["PE_VAR"]', { envs: { PE_VAR: 'only now' } }))
  out.envsAfter = execOf(await sbx.runCode('os.environ.get("PE_VAR", "gone")'))
  const ctx = await sbx.createCodeContext({ cwd: '/tmp' })
  out.context = { language: ctx.language, cwd: ctx.cwd, hasId: typeof ctx.id === 'string' }
  out.ctxCwd = execOf(await sbx.runCode('import os\nos.getcwd()', { context: ctx }))
  out.ctxSeparate = execOf(await sbx.runCode('x', { context: ctx }))
  await sbx.runCode('y = 7', { context: ctx })
  out.listed = (await sbx.listCodeContexts()).some((c) => c.id === ctx.id && c.cwd === '/tmp')
  await sbx.restartCodeContext(ctx)
  out.afterRestart = execOf(await sbx.runCode('y', { context: ctx }))
  out.cwdAfterRestart = execOf(await sbx.runCode('import os\nos.getcwd()', { context: ctx }))
  await sbx.removeCodeContext(ctx)
  out.listedAfterRemove = (await sbx.listCodeContexts()).some((c) => c.id === ctx.id)
  try {
    await sbx.runCode('1', { context: ctx })
    out.removedRun = 'no error'
  } catch (e) {
    out.removedRun = errorOf(e)
  }
  try {
    await sbx.runCode('1', { language: 'r' })
    out.otherLanguage = 'no error'
  } catch (e) {
    out.otherLanguage = errorOf(e)
  }
  out.defaultStill = execOf(await sbx.runCode('x'))
  await sbx.kill()
}

// An agent framework's loop on the interpreter: it writes a script, runs
// it, reads what it wrote, and feeds that to the next step.
async function interpAgent() {
  const sbx = await CodeSandbox.create(template, { timeoutMs: 300_000 })
  const steps = []
  let value = 3
  for (let i = 0; i < 3; i++) {
    await sbx.files.write('/tmp/agent/step.py',
      `import json, sys\nn = int(sys.argv[1])\njson.dump({"n": n * 2}, open("/tmp/agent/out.json", "w"))\nprint("step done", n)\n`)
    const run = await sbx.runCode(`%run /tmp/agent/step.py ${value}`)
    value = JSON.parse(await sbx.files.read('/tmp/agent/out.json')).n
    steps.push({ stdout: run.logs.stdout.join(''), value })
  }
  out.steps = steps
  await sbx.kill()
}

// The code interpreter, for bench/: create → first runCode (the kernel
// starts then), and runCode of a small cell in a warm context.
async function interpBench() {
  const n = Number(process.env.E2B_BENCH_N || 5)
  const t0 = performance.now()
  const sbx = await CodeSandbox.create(template)
  await sbx.runCode('1')
  out.first = performance.now() - t0
  const ms = []
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    await sbx.runCode('x = 6 * 7\nx')
    ms.push(performance.now() - t)
  }
  out.ms = ms
  await sbx.kill()
}

// A sandbox made elsewhere (on a remote provider, on another node), its
// id in the template argument: connect, run commands, write, read and list
// files; with E2B_DRIVE_LACKS, stdin and a watch, which a provider may lack.
async function remote() {
  const sbx = await Sandbox.connect(template)
  const r = await sbx.commands.run('echo out; echo err >&2')
  out.run = { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode }
  try {
    await sbx.commands.run('echo before; exit 3')
    out.exit3 = 'no error'
  } catch (e) {
    out.exit3 = e instanceof CommandExitError ? { exitCode: e.exitCode, stdout: e.stdout } : errorOf(e)
  }
  await sbx.files.write('/tmp/e2b/a.txt', 'hello file')
  out.read = await sbx.files.read('/tmp/e2b/a.txt')
  out.list = (await sbx.files.list('/tmp/e2b')).map((e) => ({ name: e.name, type: e.type }))
  try {
    await sbx.files.read('/tmp/e2b/none')
    out.readMissing = 'no error'
  } catch (e) {
    out.readMissing = errorOf(e)
  }
  if (process.env.E2B_DRIVE_LACKS) {
    try {
      const h = await sbx.commands.run('cat', { background: true, stdin: true })
      await sbx.commands.sendStdin(h.pid, 'x')
      out.stdin = 'accepted'
      await h.kill()
    } catch (e) {
      out.stdin = errorOf(e)
    }
    try {
      const w = await sbx.files.watchDir('/tmp/e2b', () => {})
      out.watch = 'accepted'
      await w.stop()
    } catch (e) {
      out.watch = errorOf(e)
    }
  }
}

// A sandbox made through one node of a cluster (test_cluster.py): the
// create is placed on another node, and left running for the test to see
// where it is.
async function placedCreate() {
  const sbx = await Sandbox.create(template, { timeoutMs: 120_000, metadata: { placed: 'yes' } })
  out.sandboxId = sbx.sandboxId
  out.run = (await sbx.commands.run('echo placed > /tmp/placed; cat /tmp/placed')).stdout
}

// Then its control plane, every call through the node the SDK knows
// (template: the sandbox's id): timeout, info, pause, connect, kill.
async function placedDrive() {
  const sbx = await Sandbox.connect(template)
  const before = Date.now()
  await sbx.setTimeout(90_000)
  const info = await sbx.getInfo()
  out.info = { metadata: info.metadata, state: info.state,
    endInS: Math.round((new Date(info.endAt).getTime() - before) / 1000) }
  await sbx.pause()
  out.paused = (await Sandbox.getInfo(sbx.sandboxId)).state
  // the list is any node's, from the store: c recorded the pause there
  out.listedPaused = (await Sandbox.list({ query: { metadata: { placed: 'yes' } } }).nextItems())
    .map((s) => s.state)
  const again = await Sandbox.connect(sbx.sandboxId)
  out.stateAfter = (await again.getInfo()).state
  out.resumed = (await again.commands.run('cat /tmp/placed')).stdout
  // the list is any node's, from the store: the metadata c keeps there
  out.byMeta = (await Sandbox.list({ query: { metadata: { placed: 'yes' } } }).nextItems())
    .map((s) => s.sandboxId)
  out.kill = await again.kill()
  out.killedAgain = await Sandbox.kill(sbx.sandboxId)
}

const scenarios = { placedCreate, placedDrive, remote, flow, pauseKeeps, badKey, unknown, pty, watch, agent, reattach, listFilter, paging, watchRecursive, bench, interpBench, interp, interpAgent }
try {
  await scenarios[scenario]()
} catch (e) {
  out.error = errorOf(e)
  out.stack = String(e?.stack ?? '')
}
console.log(JSON.stringify(out))
