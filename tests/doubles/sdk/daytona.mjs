// Drives @daytonaio/sdk against the Daytona double: the lifecycle a
// Pocketenv adapter needs, streaming exec, a PTY, a preview link, then the
// SDK's view of a bad key. Prints one JSON line of what the SDK returned.
// Env: DOUBLE_URL, DOUBLE_KEY.
import { Daytona } from '@daytonaio/sdk';

const url = process.env.DOUBLE_URL;
const key = process.env.DOUBLE_KEY;
const out = {};

const daytona = new Daytona({ apiKey: key, apiUrl: `${url}/api`, target: 'us' });
const sandbox = await daytona.create({ envVars: { GREETING: 'hello-env' }, labels: { pocketenv: 't1' } });
out.created = { id: sandbox.id, state: sandbox.state, toolbox: sandbox.toolboxProxyUrl };

const ok = await sandbox.process.executeCommand('echo hi; printf oops >&2; printenv GREETING');
out.exec = { exitCode: ok.exitCode, result: ok.result };
const bad = await sandbox.process.executeCommand('echo before; exit 3');
out.fail = { exitCode: bad.exitCode, result: bad.result };

// streaming: a session command followed over the logs WebSocket
await sandbox.process.createSession('s1');
const cmd = await sandbox.process.executeSessionCommand('s1', {
  command: 'echo one; printf two >&2; sleep 0.3; echo three', runAsync: true,
});
const stdoutChunks = [];
const stderrChunks = [];
await sandbox.process.getSessionCommandLogs('s1', cmd.cmdId,
  (c) => stdoutChunks.push(c), (c) => stderrChunks.push(c));
const done = await sandbox.process.getSessionCommand('s1', cmd.cmdId);
out.stream = { stdoutChunks, stderrChunks, exitCode: done.exitCode };

// PTY
let screen = '';
const pty = await sandbox.process.createPty({
  id: 'pty1', cols: 80, rows: 24, onData: (d) => { screen += new TextDecoder().decode(d); },
});
await pty.waitForConnection();
await pty.resize(100, 30);
await pty.sendInput('echo typed\r');
await pty.sendInput('exit 5\r');
const ptyResult = await pty.wait();
out.pty = { exitCode: ptyResult.exitCode, screen };

await sandbox.fs.uploadFile(Buffer.from('hello'), '/tmp/a.txt');
out.read = (await sandbox.fs.downloadFile('/tmp/a.txt')).toString();
out.list = (await sandbox.fs.listFiles('/tmp')).map((f) => f.name);
await sandbox.fs.deleteFile('/tmp/a.txt');
try {
  await sandbox.fs.downloadFile('/tmp/a.txt');
  out.readMissing = 'no error';
} catch (e) {
  out.readMissing = e.name;
}

const preview = await sandbox.getPreviewLink(3000);
const denied = await fetch(preview.url);
const allowed = await fetch(preview.url, { headers: { 'x-daytona-preview-token': preview.token } });
out.preview = { denied: denied.status, allowed: allowed.status, body: await allowed.text() };

await sandbox.fs.uploadFile(Buffer.from('kept'), '/tmp/keep.txt');
await sandbox.stop();
out.stopped = sandbox.state;
try {
  await sandbox.process.executeCommand('echo hi');
  out.execStopped = 'ran';
} catch (e) {
  out.execStopped = { name: e.name, statusCode: e.statusCode };
}
await sandbox.start();
out.restarted = sandbox.state;
out.readAfterRestart = (await sandbox.fs.downloadFile('/tmp/keep.txt')).toString();

await sandbox.delete();
try {
  await daytona.get(sandbox.id);
  out.afterDelete = 'still there';
} catch (e) {
  out.afterDelete = { name: e.name, statusCode: e.statusCode };
}

try {
  await new Daytona({ apiKey: 'wrong-key', apiUrl: `${url}/api`, target: 'us' }).get(sandbox.id);
  out.badKey = 'accepted';
} catch (e) {
  out.badKey = { name: e.name, statusCode: e.statusCode, message: e.message };
}
console.log(JSON.stringify(out));
process.exit(0);
