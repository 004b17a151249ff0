// The official MCP SDK (@modelcontextprotocol/sdk, pinned in package.json)
// as the client of pocketenv's MCP server, over streamable HTTP (the
// daemon's /mcp) or stdio (`pocketenv mcp`, launched from an agent's JSON
// configuration). tests/integration/test_mcp.py runs one scenario per
// process and checks what it prints: a JSON object on stdout.
//
//   node drive.mjs SCENARIO
//   env: MCP_URL (http), MCP_TOKEN, MCP_CONFIG (stdio: an mcpServers file),
//        MCP_SANDBOX (a sandbox name), MCP_TRANSPORT (http|stdio)
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { CallToolResultSchema, ResourceUpdatedNotificationSchema }
  from '@modelcontextprotocol/sdk/types.js';
import { readFileSync } from 'node:fs';

const env = process.env;
const TIMEOUT = { timeout: 120000 };

function httpTransport(opts = {}) {
  return new StreamableHTTPClientTransport(new URL(env.MCP_URL), {
    requestInit: { headers: { Authorization: `Bearer ${env.MCP_TOKEN}` } },
    reconnectionOptions: { initialReconnectionDelay: 100, maxReconnectionDelay: 1000,
                           reconnectionDelayGrowFactor: 1.5, maxRetries: 2 },
    ...opts,
  });
}

// The server entry of an agent's configuration, read as the agent reads it:
// Claude Code's .mcp.json and Gemini CLI's settings.json both keep
// {"mcpServers": {NAME: {"command", "args", "env"}}}.
function stdioTransport() {
  const conf = JSON.parse(readFileSync(env.MCP_CONFIG, 'utf8'));
  const server = conf.mcpServers.pocketenv;
  return new StdioClientTransport({
    command: server.command,
    args: server.args ?? [],
    env: { PATH: process.env.PATH, ...(server.env ?? {}) },
    stderr: 'pipe',
  });
}

async function connect(transport) {
  const client = new Client({ name: 'pocketenv-tests', version: '1.0.0' });
  await client.connect(transport);
  return client;
}

function text(r) {
  return (r.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
}

async function call(client, name, args, extra = {}) {
  const r = await client.callTool({ name, arguments: args }, CallToolResultSchema,
                                  { ...TIMEOUT, ...extra });
  return { isError: !!r.isError, text: text(r), structured: r.structuredContent ?? null };
}

const scenarios = {
  // Every tool once, as a model would chain them, and the answers' shapes.
  async tools() {
    const client = await connect(env.MCP_TRANSPORT === 'stdio' ? stdioTransport()
                                                               : httpTransport());
    const out = {};
    const tools = (await client.listTools()).tools;
    out.tools = tools.map((t) => ({ name: t.name, schema: t.inputSchema,
                                    description: t.description }));
    const sb = env.MCP_SANDBOX;
    out.templates = await call(client, 'sandbox_templates', {});
    const progress = [];
    out.create = await call(client, 'sandbox_create', { base: 'busybox', name: sb },
                            { onprogress: (p) => progress.push(p) });
    out.createProgress = progress;
    out.list = await call(client, 'sandbox_list', {});
    out.get = await call(client, 'sandbox_get', { sandbox: sb });
    out.exec = await call(client, 'exec', { sandbox: sb, command: 'echo out; echo err >&2' });
    out.execFails = await call(client, 'exec', { sandbox: sb, command: 'echo no >&2; exit 7' });
    out.execTimeout = await call(client, 'exec', { sandbox: sb, command: 'sleep 30', timeout: 1 });
    out.execLong = await call(client, 'exec', { sandbox: sb, command: 'seq 1 20000' });
    const id = out.execLong.structured?.outputId;
    out.pages = [];
    let offset = 0;
    const total = out.execLong.structured?.stdoutBytes ?? 0;
    const m = /bytes 0-(\d+) of/.exec(out.execLong.text);
    offset = m ? Number(m[1]) : total;
    out.firstPage = out.execLong.text;
    while (id && offset < total && out.pages.length < 20) {
      const page = await call(client, 'read_output', { output_id: id, stream: 'stdout', offset });
      out.pages.push(page);
      const pm = /bytes \d+-(\d+) of/.exec(page.text);
      if (!pm) break;
      offset = Number(pm[1]);
    }
    out.readOutputGone = await call(client, 'read_output',
                                    { output_id: 'out-999', stream: 'stdout', offset: 0 });
    const content = "line one\nit's \"quoted\" $HOME `x` \\n ü\n";
    out.write = await call(client, 'file_write', { sandbox: sb, path: '/work/a/b.txt', content });
    out.append = await call(client, 'file_write', { sandbox: sb, path: '/work/a/b.txt',
                                                   content: 'more\n', append: true });
    out.read = await call(client, 'file_read', { sandbox: sb, path: '/work/a/b.txt' });
    out.readPart = await call(client, 'file_read', { sandbox: sb, path: '/work/a/b.txt',
                                                     offset: 5, length: 3 });
    out.expectedFile = content + 'more\n';
    out.listDir = await call(client, 'file_list', { sandbox: sb, path: '/work/a' });
    out.rmDir = await call(client, 'file_remove', { sandbox: sb, path: '/work/a' });
    out.rmDirRec = await call(client, 'file_remove', { sandbox: sb, path: '/work/a',
                                                       recursive: true });
    out.readGone = await call(client, 'file_read', { sandbox: sb, path: '/work/a/b.txt' });
    out.setVar = await call(client, 'env_set', { sandbox: sb, name: 'GREETING', value: 'hello' });
    out.setSecret = await call(client, 'env_set', { sandbox: sb, name: 'TOKEN',
                                                    value: 's3cr3t-value', secret: true });
    out.envSeen = await call(client, 'exec', { sandbox: sb, command: 'echo "$GREETING $TOKEN"' });
    out.svcStart = await call(client, 'service_start', {
      sandbox: sb, name: 'ticker', command: 'i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done' });
    const t0 = Date.now();
    do {
      out.svcLogs = await call(client, 'service_logs', { sandbox: sb, name: 'ticker' });
    } while (!out.svcLogs.text.includes('tick 3') && Date.now() - t0 < 20000);
    out.svcStop = await call(client, 'service_stop', { sandbox: sb, name: 'ticker' });
    out.svcGone = await call(client, 'service_logs', { sandbox: sb, name: 'ticker' });
    out.port = await call(client, 'port_expose', { sandbox: sb, port: 8080 });
    await call(client, 'file_write', { sandbox: sb, path: '/data/keep.txt', content: 'v1\n' });
    out.backup = await call(client, 'backup_create', { sandbox: sb, directory: '/data' });
    await call(client, 'file_write', { sandbox: sb, path: '/data/keep.txt', content: 'v2\n' });
    out.backups = await call(client, 'backup_list', { sandbox: sb });
    out.restore = await call(client, 'backup_restore',
                             { backup_id: out.backup.structured?.backup?.id ?? 'none' });
    out.restored = await call(client, 'file_read', { sandbox: sb, path: '/data/keep.txt' });
    out.restoreUnknown = await call(client, 'backup_restore', { backup_id: 'bak_nope' });
    out.unknown = await call(client, 'sandbox_get', { sandbox: 'no-such-sandbox' });
    out.badArgs = await call(client, 'exec', { sandbox: sb });
    out.badType = await call(client, 'exec', { sandbox: sb, command: 42 });
    out.extraArg = await call(client, 'sandbox_get', { sandbox: sb, color: 'red' });
    try {
      await call(client, 'no_such_tool', {});
      out.unknownTool = 'answered';
    } catch (e) {
      out.unknownTool = { code: e.code, message: e.message };
    }
    out.stop = await call(client, 'sandbox_stop', { sandbox: sb });
    out.execStopped = await call(client, 'exec', { sandbox: sb, command: 'true' });
    out.start = await call(client, 'sandbox_start', { sandbox: sb });
    out.delete = await call(client, 'sandbox_delete', { sandbox: sb });
    await client.close();
    return out;
  },

  // Another user's token: the sandbox named in MCP_SANDBOX is not theirs.
  async other() {
    const client = await connect(httpTransport());
    const sb = env.MCP_SANDBOX;
    const out = {};
    for (const [name, args] of [['sandbox_get', {}], ['exec', { command: 'id' }],
                                ['file_read', { path: '/etc/hostname' }],
                                ['file_write', { path: '/tmp/x', content: 'x' }],
                                ['env_set', { name: 'A', value: 'b' }],
                                ['service_start', { name: 's', command: 'true' }],
                                ['port_expose', { port: 8080 }],
                                ['dir_download', { path: '/etc' }],
                                ['dir_upload', { path: '/tmp', archive: env.MCP_ARCHIVE ?? 'AAAA' }],
                                ['sandbox_stop', {}],
                                ['sandbox_delete', {}]]) {
      out[name] = await call(client, name, { sandbox: sb, ...args });
    }
    out.list = await call(client, 'sandbox_list', {});
    await client.close();
    return out;
  },

  // What the SDK negotiates, and what the server says it speaks.
  async version() {
    const transport = httpTransport();
    const client = await connect(transport);
    const out = { negotiated: transport.protocolVersion, server: client.getServerVersion(),
                  capabilities: client.getServerCapabilities() };
    await client.close();
    return out;
  },

  // A stream lost while a tool runs, resumed on a new connection with the
  // last event id: the answer arrives once, and the command ran once.
  async resume() {
    const sb = env.MCP_SANDBOX;
    const first = httpTransport();
    const client = await connect(first);
    const sessionId = first.sessionId;
    let token;
    const got = new Promise((resolve) => {
      client.request({ method: 'tools/call', params: { name: 'exec', arguments: {
        sandbox: sb, command: 'echo run >> /tmp/runs; sleep 3; echo finished' } } },
      CallToolResultSchema, { ...TIMEOUT, onresumptiontoken: (t) => { token = t; resolve(); } })
        .catch(() => {}); // this connection is cut below
    });
    await got;
    await first.close(); // the client goes away mid-call
    const second = httpTransport({ sessionId });
    const again = new Client({ name: 'pocketenv-tests', version: '1.0.0' });
    await again.connect(second); // a known session: no new initialize
    const r = await again.request({ method: 'tools/call', params: { name: 'exec', arguments: {
      sandbox: sb, command: 'false' } } }, CallToolResultSchema,
    { ...TIMEOUT, resumptionToken: token });
    const runs = await again.callTool({ name: 'exec', arguments: {
      sandbox: sb, command: 'wc -l < /tmp/runs' } }, CallToolResultSchema, TIMEOUT);
    await second.terminateSession();
    let afterEnd;
    try {
      await again.callTool({ name: 'sandbox_list', arguments: {} }, CallToolResultSchema, TIMEOUT);
      afterEnd = 'answered';
    } catch (e) {
      afterEnd = String(e.message);
    }
    await again.close();
    return { token, sessionId, resumed: text(r), isError: !!r.isError, runs: text(runs),
             afterEnd };
  },

  // A sandbox's files and its services' output as resources.
  // A directory up as an archive, checked inside, and down again
  // (MCP_ARCHIVE: a tar.gz in base64; MCP_EVIL: one with a ../ path).
  async archives() {
    const client = await connect(env.MCP_TRANSPORT === 'stdio' ? stdioTransport()
                                                               : httpTransport());
    const sb = env.MCP_SANDBOX;
    const out = {};
    out.upload = await call(client, 'dir_upload',
                            { sandbox: sb, path: '/srv/up', archive: env.MCP_ARCHIVE });
    out.inside = await call(client, 'exec',
                            { sandbox: sb, command: 'cat /srv/up/a.txt /srv/up/sub/b.txt' });
    await call(client, 'exec', { sandbox: sb, command: 'echo made inside > /srv/up/sub/c.txt' });
    const r = await client.callTool({ name: 'dir_download',
                                      arguments: { sandbox: sb, path: '/srv/up' } },
                                    CallToolResultSchema, TIMEOUT);
    out.download = { isError: !!r.isError, text: text(r),
                     resources: (r.content ?? []).filter((c) => c.type === 'resource')
                       .map((c) => c.resource) };
    out.notBase64 = await call(client, 'dir_upload',
                               { sandbox: sb, path: '/srv/x', archive: '!!!not base64!!!' });
    out.evil = await call(client, 'dir_upload',
                          { sandbox: sb, path: '/srv/evil', archive: env.MCP_EVIL });
    out.evilLanded = await call(client, 'exec',
                                { sandbox: sb, command: 'ls /srv/escaped 2>&1; ls /srv/evil 2>&1' });
    out.missingDir = await call(client, 'dir_download', { sandbox: sb, path: '/no/such/dir' });
    out.unknownSandbox = await call(client, 'dir_download',
                                    { sandbox: 'no-such-sandbox', path: '/srv' });
    await client.close();
    return out;
  },

  // Subscriptions: a file and a service's output change, the client hears
  // of it; after unsubscribing it does not. Waits are conditions with
  // deadlines: `until` polls what the client has seen.
  async subscribe() {
    const client = await connect(env.MCP_TRANSPORT === 'stdio' ? stdioTransport()
                                                               : httpTransport());
    const sb = env.MCP_SANDBOX;
    const out = { caps: client.getServerCapabilities() };
    const seen = [];
    client.setNotificationHandler(ResourceUpdatedNotificationSchema,
                                  (n) => seen.push(n.params.uri));
    const until = async (cond, ms = 30000) => {
      const t0 = Date.now();
      while (!cond() && Date.now() - t0 < ms) await new Promise((r) => setTimeout(r, 50));
      return cond();
    };
    const file = `pocketenv://sandbox/${sb}/file/srv/watched.txt`;
    const other = `pocketenv://sandbox/${sb}/file/srv/other.txt`;
    const logs = `pocketenv://sandbox/${sb}/service/ticker/logs`;
    await call(client, 'file_write', { sandbox: sb, path: '/srv/watched.txt', content: 'one\n' });
    await client.subscribeResource({ uri: file });
    await call(client, 'file_write', { sandbox: sb, path: '/srv/watched.txt', content: 'two\n' });
    out.fileUpdated = await until(() => seen.includes(file));
    // a file that does not exist yet: its appearing is an update
    await client.subscribeResource({ uri: other });
    await call(client, 'file_write', { sandbox: sb, path: '/srv/other.txt', content: 'hi\n' });
    out.otherUpdated = await until(() => seen.includes(other));
    await call(client, 'service_start', { sandbox: sb, name: 'ticker',
                                          command: 'i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done' });
    await client.subscribeResource({ uri: logs });
    out.logsUpdated = await until(() => seen.includes(logs));
    await client.unsubscribeResource({ uri: file });
    await client.unsubscribeResource({ uri: logs });
    seen.length = 0;
    // after unsubscribing: change it, then change one still subscribed;
    // once that one's update is in, a look happened after both changes
    await call(client, 'file_write', { sandbox: sb, path: '/srv/watched.txt', content: 'three\n' });
    await call(client, 'file_write', { sandbox: sb, path: '/srv/other.txt', content: 'again\n' });
    out.otherAgain = await until(() => seen.includes(other));
    out.afterUnsubscribe = [...seen];
    out.errors = [];
    for (const uri of [`pocketenv://sandbox/${sb}/nothing`, 'https://example.com/x']) {
      try {
        await client.subscribeResource({ uri });
        out.errors.push({ uri, answered: true });
      } catch (e) {
        out.errors.push({ uri, code: e.code, message: e.message });
      }
    }
    await client.close();
    return out;
  },

  // Cancellation: an exec the client gives up on stops in the sandbox.
  async cancel() {
    const client = await connect(env.MCP_TRANSPORT === 'stdio' ? stdioTransport()
                                                               : httpTransport());
    const sb = env.MCP_SANDBOX;
    const out = {};
    const ac = new AbortController();
    const running = client.callTool(
      { name: 'exec', arguments: { sandbox: sb, command: 'echo $$ > /tmp/pid; sleep 600; echo late > /tmp/late' } },
      CallToolResultSchema, { signal: ac.signal, timeout: 120000 });
    running.catch(() => {});
    const t0 = Date.now();
    let pid = '';
    while (Date.now() - t0 < 30000) {
      const r = await call(client, 'exec', { sandbox: sb, command: 'cat /tmp/pid 2>/dev/null' });
      pid = (r.text.split('---\n')[1] ?? '').split('\n')[0].trim();
      if (/^[0-9]+$/.test(pid)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    out.pid = pid;
    ac.abort('the user changed their mind');
    try { await running; out.rejected = false; } catch (e) { out.rejected = true; }
    const t1 = Date.now();
    out.gone = false;
    while (Date.now() - t1 < 30000) {
      const r = await call(client, 'exec', { sandbox: sb,
                                            command: `kill -0 ${pid} 2>/dev/null && echo alive || echo gone` });
      if (r.text.includes('gone')) { out.gone = true; break; }
      await new Promise((r) => setTimeout(r, 100));
    }
    out.ping = await client.ping();
    out.after = await call(client, 'exec', { sandbox: sb, command: 'echo still here' });
    await client.close();
    return out;
  },

  async resources() {
    const client = await connect(env.MCP_TRANSPORT === 'stdio' ? stdioTransport()
                                                               : httpTransport());
    const sb = env.MCP_SANDBOX;
    const out = { caps: client.getServerCapabilities() };
    out.templates = (await client.listResourceTemplates()).resourceTemplates;
    out.list = (await client.listResources()).resources;
    await call(client, 'file_write', { sandbox: sb, path: '/srv/notes.txt', content: 'a note\n' });
    await call(client, 'service_start', { sandbox: sb, name: 'hello',
                                          command: 'echo hello from a service; sleep 1000' });
    out.file = await client.readResource({ uri: `pocketenv://sandbox/${sb}/file/srv/notes.txt` });
    const t0 = Date.now();
    do {
      out.logs = await client.readResource({ uri: `pocketenv://sandbox/${sb}/service/hello/logs` });
    } while (!out.logs.contents[0].text.includes('hello from') && Date.now() - t0 < 20000);
    out.errors = [];
    for (const uri of [`pocketenv://sandbox/${sb}/file/no/such/file`,
                       `pocketenv://sandbox/${sb}/service/nope/logs`,
                       `pocketenv://sandbox/not-mine/file/etc/hostname`,
                       'https://example.com/x', `pocketenv://sandbox/${sb}/other`]) {
      try {
        await client.readResource({ uri });
        out.errors.push({ uri, answered: true });
      } catch (e) {
        out.errors.push({ uri, code: e.code, message: e.message });
      }
    }
    await client.close();
    return out;
  },

  // Snapshots, a copy made from one, and idle policies, as a model would use
  // them (issue 19): MCP_SANDBOX is made here and, with its copy, deleted.
  async snapshots() {
    const client = await connect(httpTransport());
    const sb = env.MCP_SANDBOX;
    const snap = `${sb}-snap`;
    const copy = `${sb}-copy`;
    const out = {};
    out.create = await call(client, 'sandbox_create', { base: 'busybox', name: sb });
    await call(client, 'file_write', { sandbox: sb, path: '/work/state.txt', content: 'before\n' });
    out.snapCreate = await call(client, 'snapshot_create', { sandbox: sb, name: snap, ttl: 600 });
    await call(client, 'file_write', { sandbox: sb, path: '/work/state.txt', content: 'after\n' });
    out.snapGet = await call(client, 'snapshot_get', { snapshot: snap });
    out.snapBadTtl = await call(client, 'snapshot_create', { sandbox: sb, name: `${snap}2`, ttl: 0 });
    out.snapRestore = await call(client, 'snapshot_restore', { sandbox: sb, snapshot: snap });
    out.fromSnap = await call(client, 'sandbox_create', { base: `snapshot:${snap}`, name: copy });
    out.copyRead = await call(client, 'file_read', { sandbox: copy, path: '/work/state.txt' });
    out.srcRead = await call(client, 'file_read', { sandbox: sb, path: '/work/state.txt' });
    out.idleDefault = await call(client, 'idle_policy_get', { sandbox: sb });
    out.idleSet = await call(client, 'idle_policy_set', { sandbox: sb, action: 'pause',
                                                           timeout: 3600 });
    out.idleGet = await call(client, 'idle_policy_get', { sandbox: sb });
    out.idleBad = await call(client, 'idle_policy_set', { sandbox: sb, action: 'hibernate' });
    out.idleBadTimeout = await call(client, 'idle_policy_set', { sandbox: sb, action: 'stop',
                                                                  timeout: -5 });
    out.snapDelete = await call(client, 'snapshot_delete', { snapshot: snap });
    out.snapGone = await call(client, 'snapshot_get', { snapshot: snap });
    out.snapDeleteGone = await call(client, 'snapshot_delete', { snapshot: snap });
    out.copyAfter = await call(client, 'file_read', { sandbox: copy, path: '/work/state.txt' });
    for (const name of [copy, sb]) await call(client, 'sandbox_delete', { sandbox: name });
    await client.close();
    return out;
  },

  // Another user's snapshot and sandbox, by name: not there.
  async otherSnapshots() {
    const client = await connect(httpTransport());
    const out = {};
    out.get = await call(client, 'snapshot_get', { snapshot: env.MCP_SNAPSHOT });
    out.delete = await call(client, 'snapshot_delete', { snapshot: env.MCP_SNAPSHOT });
    out.fromSnap = await call(client, 'sandbox_create', { base: `snapshot:${env.MCP_SNAPSHOT}`,
                                                          name: 'stolen-copy' });
    out.list = await call(client, 'snapshot_list', {});
    out.idleGet = await call(client, 'idle_policy_get', { sandbox: env.MCP_SANDBOX });
    out.idleSet = await call(client, 'idle_policy_set', { sandbox: env.MCP_SANDBOX,
                                                          action: 'stop', timeout: 1 });
    await client.close();
    return out;
  },

  // Launch the command an agent's configuration names and list the tools.
  async config() {
    const client = await connect(stdioTransport());
    const tools = (await client.listTools()).tools.map((t) => t.name);
    const ping = await client.ping();
    await client.close();
    return { tools, ping };
  },
};

const name = process.argv[2];
try {
  const out = await scenarios[name]();
  // exit once the pipe has taken it all (a pipe's writes are asynchronous)
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
} catch (e) {
  process.stderr.write(`scenario ${name}: ${e.stack ?? e}\n`);
  process.exit(1);
}
