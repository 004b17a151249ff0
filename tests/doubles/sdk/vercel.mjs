// Drives @vercel/sandbox 1.x (the v1 API) against the Vercel double: the
// lifecycle a Pocketenv adapter needs, streaming logs, files, then the
// SDK's view of a bad token. Prints one JSON line of what the SDK returned.
// Env: DOUBLE_URL, DOUBLE_KEY.
// 1.x has no base-URL option; its documented `fetch` option is how we point
// it at the double: every URL must start with the API base it would call.
// The SDK passes an undici 7 dispatcher (bodyTimeout 0) that Node 20's
// built-in fetch cannot take; it is dropped here.
import { Sandbox } from '@vercel/sandbox';

const url = process.env.DOUBLE_URL;
const key = process.env.DOUBLE_KEY;
const API = 'https://vercel.com/api';
const out = { foreignUrls: [] };

function toDouble(input, init = {}) {
  const u = String(input instanceof Request ? input.url : input);
  if (!u.startsWith(API)) {
    out.foreignUrls.push(u);
    throw new Error(`SDK called outside its API base: ${u}`);
  }
  const { dispatcher, ...rest } = init;
  return fetch(url + u.slice(API.length), rest);
}
const creds = { token: key, teamId: 'team_double', projectId: 'prj_double', fetch: toDouble };

const sandbox = await Sandbox.create({
  ...creds, ports: [3000], env: { GREETING: 'hello-env' }, runtime: 'node24', timeout: 600000,
  resources: { vcpus: 2 },
});
out.created = { id: sandbox.sandboxId, status: sandbox.status };
out.got = (await Sandbox.get({ ...creds, sandboxId: sandbox.sandboxId })).status;

const ok = await sandbox.runCommand('sh', ['-c', 'echo hi; printf oops >&2; printenv GREETING']);
out.exec = { exitCode: ok.exitCode, stdout: await ok.stdout(), stderr: await ok.stderr() };
const bad = await sandbox.runCommand('sh', ['-c', 'echo before; exit 3']);
out.fail = { exitCode: bad.exitCode, stdout: await bad.stdout() };

// streaming: a detached command's logs, line by line as they come
const cmd = await sandbox.runCommand({ cmd: 'sh', args: ['-c', 'echo one; printf two >&2; sleep 0.3; echo three'], detached: true });
const logs = [];
for await (const log of cmd.logs()) logs.push([log.stream, log.data]);
out.stream = { logs, exitCode: (await cmd.wait()).exitCode };

await sandbox.writeFiles([{ path: '/tmp/a.txt', content: Buffer.from('hello') }, { path: 'rel.txt', content: Buffer.from('in cwd') }]);
out.read = (await sandbox.readFileToBuffer({ path: '/tmp/a.txt' })).toString();
out.readRel = (await sandbox.readFileToBuffer({ path: '/vercel/sandbox/rel.txt' })).toString();
out.readMissing = await sandbox.readFileToBuffer({ path: '/tmp/nope' });
await sandbox.mkDir('/tmp/d');
const ls = await sandbox.runCommand('ls', ['/tmp']);
out.list = (await ls.stdout()).trim().split('\n');
const preview = sandbox.routes.find((r) => r.port === 3000);
const pv = await fetch(preview.url);
out.preview = { status: pv.status, body: await pv.text(), domain: sandbox.domain(3000) };

await sandbox.stop({ blocking: true });  // polls until stopped
out.stopped = (await Sandbox.get({ ...creds, sandboxId: sandbox.sandboxId })).status;
try {
  await sandbox.runCommand('echo', ['late']);
  out.afterStop = 'ran';
} catch (e) {
  out.afterStop = { name: e.name, status: e.response?.status, code: e.json?.error?.code };
}

try {
  await Sandbox.get({ ...creds, token: 'wrong-token', sandboxId: sandbox.sandboxId });
  out.badToken = 'accepted';
} catch (e) {
  out.badToken = { name: e.name, status: e.response?.status, json: e.json };
}
console.log(JSON.stringify(out));
process.exit(0);
