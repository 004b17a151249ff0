// Drives @deno/sandbox against the Deno double (sandbox API and console on
// one server): the lifecycle a Pocketenv adapter needs, streaming output,
// files, a session-bound sandbox, then the SDK's view of a bad token.
// Prints one JSON line of what the SDK returned. Env: DOUBLE_URL, DOUBLE_KEY.
import { Sandbox } from '@deno/sandbox';

const url = process.env.DOUBLE_URL;
const key = process.env.DOUBLE_KEY;
const opts = { token: key, sandboxEndpoint: url, apiEndpoint: url };
const out = {};
const dec = new TextDecoder();

const sandbox = await Sandbox.create({ ...opts, timeout: '10m', env: { GREETING: 'hello-env' }, labels: { pocketenv: 't1' } });
out.created = { id: sandbox.id };

const ok = await (await sandbox.spawn('sh', { args: ['-c', 'echo hi; printf oops >&2; printenv GREETING'], stdout: 'piped', stderr: 'piped' })).output();
out.exec = { code: ok.status.code, success: ok.status.success, stdout: ok.stdoutText, stderr: ok.stderrText };
const bad = await (await sandbox.spawn('sh', { args: ['-c', 'echo before; exit 3'], stdout: 'piped', stderr: 'piped' })).output();
out.fail = { code: bad.status.code, success: bad.status.success, stdout: bad.stdoutText };

// streaming: chunks as the process writes them
const child = await sandbox.spawn('sh', { args: ['-c', 'echo one; sleep 0.3; echo two'], stdout: 'piped', stderr: 'piped' });
const chunks = [];
for await (const c of child.stdout) chunks.push(dec.decode(c));
out.stream = { chunks, code: (await child.status).code };

// stdin from the client
const cat = await sandbox.spawn('cat', { stdin: 'piped', stdout: 'piped', stderr: 'piped' });
const w = cat.stdin.getWriter();
await w.write(new TextEncoder().encode('from stdin'));
await w.close();
out.stdin = (await cat.output()).stdoutText;

await sandbox.fs.writeTextFile('/tmp/a.txt', 'hello');
out.read = await sandbox.fs.readTextFile('/tmp/a.txt');
await sandbox.fs.writeFile('/tmp/b.bin', new Uint8Array([0, 1, 2, 255]));
out.readBytes = Array.from(await sandbox.fs.readFile('/tmp/b.bin'));
out.list = [];
for await (const e of sandbox.fs.readDir('/tmp')) out.list.push(e.name);
await sandbox.fs.remove('/tmp/a.txt');
try {
  await sandbox.fs.readTextFile('/tmp/a.txt');
  out.readMissing = 'no error';
} catch (e) {
  out.readMissing = { name: e.name, code: e.code };
}
out.envSet = await sandbox.env.get('GREETING');

const domain = await sandbox.exposeHttp({ port: 8000 });
const pv = await fetch(domain.replace(/^https:/, 'http:'));
out.preview = { status: pv.status, body: await pv.text() };

const until = await sandbox.extendTimeout('5m');
out.extended = until instanceof Date;

await sandbox.kill();
try {
  await Sandbox.connect({ ...opts, id: sandbox.id });
  out.afterKill = 'connected';
} catch (e) {
  out.afterKill = { name: e.name, status: e.status, code: e.code };
}

// default lifetime: the sandbox lives as long as its WebSocket
const session = await Sandbox.create(opts);
out.sessionId = session.id;
await session.close();

try {
  await Sandbox.create({ ...opts, token: 'ddo_wrong' });
  out.badToken = 'accepted';
} catch (e) {
  out.badToken = { name: e.name, message: e.message };
}
console.log(JSON.stringify(out));
process.exit(0);
