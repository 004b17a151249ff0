// Drives @fly/sprites against the Sprites double: the lifecycle a
// Pocketenv adapter needs, then the SDK's view of a bad token. Prints one
// JSON line of what the SDK returned; the pytest test checks it against
// what the double saw. Env: DOUBLE_URL, DOUBLE_KEY, SANDBOX_NAME.
// Needs a global WebSocket (Node >= 22, or Node 20 with --experimental-websocket).
import { SpritesClient } from '@fly/sprites';

const url = process.env.DOUBLE_URL;
const key = process.env.DOUBLE_KEY;
const name = process.env.SANDBOX_NAME;
const out = {};

const client = new SpritesClient(key, { baseURL: url });
const sprite = await client.createSprite(name, { environment: { GREETING: 'hello-env' } });
out.created = { name: sprite.name, status: sprite.status, url: sprite.url };
out.got = (await client.getSprite(name)).status;

const ok = await sprite.execFile('sh', ['-c', 'echo hi; printf oops >&2; printenv GREETING']);
out.exec = { stdout: ok.stdout, stderr: ok.stderr, exitCode: ok.exitCode };
try {
  await sprite.execFile('sh', ['-c', 'echo before; exit 3']);
  out.fail = { error: 'no ExecError for exit 3' };
} catch (e) {
  out.fail = { name: e.name, exitCode: e.exitCode, stdout: e.stdout };
}

// streaming: output arrives as the command produces it
const chunks = [];
const child = sprite.spawn('sh', ['-c', 'echo one; sleep 0.3; echo two']);
child.stdout.on('data', (c) => chunks.push(c.toString()));
out.stream = { exitCode: await child.wait(), chunks };

// PTY: an interactive shell that we type into
const pty = sprite.spawn('bash', [], { tty: true, rows: 24, cols: 80 });
let screen = '';
const messages = [];
pty.stdout.on('data', (c) => { screen += c.toString(); });
// 0.1.0 derives a TTY exit code from the close code only; the server's
// {"type":"exit","exit_code":N} arrives as a message
pty.on('message', (m) => messages.push(m));
await new Promise((resolve, reject) => { pty.on('spawn', resolve); pty.on('error', reject); });
pty.resize(100, 30);
pty.stdin.write('echo typed\r');
pty.stdin.write('exit 5\r');
out.pty = { exitCode: await pty.wait(), screen, messages };

const fs = sprite.filesystem('/');
await fs.writeFile('/tmp/a.txt', 'hello');
out.read = await fs.readFile('/tmp/a.txt', 'utf8');
out.list = await fs.readdir('/tmp');
await fs.rm('/tmp/a.txt');
try {
  await fs.readFile('/tmp/a.txt', 'utf8');
  out.readMissing = 'no error';
} catch (e) {
  out.readMissing = e.code;
}

// Sprites has no stop: a sprite goes warm/cold by itself. Delete:
await sprite.delete();
try {
  await client.getSprite(name);
  out.afterDelete = 'still there';
} catch (e) {
  out.afterDelete = e.statusCode ?? String(e);
}

try {
  await new SpritesClient('wrong-token', { baseURL: url }).getSprite(name);
  out.badToken = 'accepted';
} catch (e) {
  out.badToken = { name: e.name, statusCode: e.statusCode, errorCode: e.errorCode };
}
console.log(JSON.stringify(out));
process.exit(0);
