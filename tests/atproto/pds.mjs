// A real AT Protocol PDS and PLC directory on loopback, for the tests of
// issue 18: @did-plc/server with its in-memory database and @atproto/pds
// (both pinned in package.json), nothing reaching any other network.
//
//   node tests/atproto/pds.mjs DIR [HANDLE:PASSWORD ...]
//
// DIR holds the PDS's SQLite files and blobs. Once both servers answer and
// every account exists, one JSON line goes to stdout:
//   {"plc": "http://127.0.0.1:P", "pds": "http://localhost:Q",
//    "accounts": [{"handle", "did", "password", "accessJwt"}]}
// Then the script reads commands from stdin, one JSON object a line:
//   {"op": "account", "handle", "password"}   another account, answered
//   {"op": "token-max-age", "seconds"}        access tokens issued from now on live that long
//   {"op": "revoke-tokens", "did"}            end every OAuth session of the account
//   {"op": "route", "origin", "to"}           the PDS's requests to https ORIGIN
//                                             go to http TO instead (no "to": forget)
//   {"op": "stop-pds"} / {"op": "start-pds"}  the PDS goes away / comes back
//                                             on the same port and data
// Each is answered with one JSON line ({"ok": true, ...} or {"error"}).
// End of stdin (the test's fixture closing it) shuts both down.
//
// The PDS runs in dev mode: its hostname is "localhost", so it serves plain
// HTTP on http://localhost:PORT and gives handles under ".test", which is
// how @atproto's own dev environment runs it. A handle like alice.test
// resolves through the PDS's /.well-known/atproto-did when asked with
// "Host: alice.test", which is what the daemon's resolver does when the
// test tells it to connect alice.test:80 to this port.

import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import readline from 'node:readline';
import path from 'node:path';

import { PlcServer, Database as PlcDatabase } from '@did-plc/server';
import { PDS, envToCfg, envToSecrets, readEnv } from '@atproto/pds';
import { Secp256k1Keypair } from '@atproto/crypto';

// Origins the PDS reaches elsewhere than their name says ({"op": "route"}):
// a daemon with a public https URL (a confidential OAuth client, whose
// metadata document and JWKS the PDS fetches) is served here on plain
// http on loopback, as a TLS proxy in front of it would forward. The PDS
// fetches through globalThis.fetch, looked up at each call.
const routes = new Map();
const realFetch = globalThis.fetch;
globalThis.fetch = function (input, init) {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const to = routes.get(url.origin);
    if (to) {
        const target = to + url.pathname + url.search;
        input = input instanceof Request ? new Request(target, input) : target;
    }
    return realFetch.call(this, input, init);
};

const dir = process.argv[2];
if (!dir) {
    console.error('usage: pds.mjs DIR [HANDLE:PASSWORD ...]');
    process.exit(2);
}

// A port nobody listens on right now. The PDS must know its port before it
// starts (its public URL and OAuth issuer contain it), so listen(0) on the
// PDS itself cannot be used; the window between close and the PDS's listen
// is a few milliseconds on loopback.
function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

async function startPlc() {
    const plc = PlcServer.create({ db: PlcDatabase.mock(), port: 0 });
    const server = await plc.start();
    return { plc, url: `http://127.0.0.1:${server.address().port}` };
}

function pdsEnv(port, plcUrl, rotationHex) {
    const e = {
        PDS_PORT: String(port),
        PDS_HOSTNAME: 'localhost',
        PDS_DEV_MODE: 'true',
        PDS_DATA_DIRECTORY: dir,
        PDS_BLOBSTORE_DISK_LOCATION: path.join(dir, 'blobs'),
        PDS_DID_PLC_URL: plcUrl,
        PDS_JWT_SECRET: randomBytes(16).toString('hex'),
        PDS_ADMIN_PASSWORD: 'admin-pass',
        PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX: rotationHex,
        PDS_INVITE_REQUIRED: 'false',
        PDS_RATE_LIMITS_ENABLED: 'false',
        PDS_CRAWLERS: '',
        // No app view, no moderation service, no email: nothing to reach.
        PDS_BSKY_APP_VIEW_URL: '',
        PDS_BSKY_APP_VIEW_DID: '',
        PDS_MOD_SERVICE_URL: '',
        PDS_MOD_SERVICE_DID: '',
        LOG_ENABLED: 'false',
    };
    for (const [k, v] of Object.entries(e)) process.env[k] = v;
    const env = readEnv();
    return { cfg: envToCfg(env), secrets: envToSecrets(env) };
}

async function startPds(state) {
    const { cfg, secrets } = pdsEnv(state.port, state.plcUrl, state.rotationHex);
    state.pds = await PDS.create(cfg, secrets);
    if (state.tokenMaxAge) state.pds.ctx.oauthProvider.tokenManager.tokenMaxAge = state.tokenMaxAge;
    await state.pds.start();
}

async function xrpc(base, nsid, body, token) {
    const headers = { 'content-type': 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    const r = await fetch(`${base}/xrpc/${nsid}`, {
        method: 'POST',
        headers,
        body: JSON.stringify(body),
    });
    const v = await r.json();
    if (!r.ok) throw new Error(`${nsid}: ${r.status} ${JSON.stringify(v)}`);
    return v;
}

async function createAccount(pdsUrl, handle, password) {
    const v = await xrpc(pdsUrl, 'com.atproto.server.createAccount', {
        handle,
        password,
        email: `${handle.replace(/[^a-z0-9]/gi, '-')}@example.test`,
    });
    return { handle: v.handle, did: v.did, password, accessJwt: v.accessJwt };
}

async function main() {
    mkdirSync(dir, { recursive: true });
    const { plc, url: plcUrl } = await startPlc();
    const rotation = await Secp256k1Keypair.create({ exportable: true });
    const state = {
        plcUrl,
        port: await freePort(),
        rotationHex: Buffer.from(await rotation.export()).toString('hex'),
        pds: null,
    };
    await startPds(state);
    const pdsUrl = `http://localhost:${state.port}`;
    const accounts = [];
    for (const arg of process.argv.slice(3)) {
        const i = arg.indexOf(':');
        accounts.push(await createAccount(pdsUrl, arg.slice(0, i), arg.slice(i + 1)));
    }
    process.stdout.write(JSON.stringify({ plc: plcUrl, pds: pdsUrl, accounts }) + '\n');

    const answer = (v) => process.stdout.write(JSON.stringify(v) + '\n');
    const rl = readline.createInterface({ input: process.stdin });
    for await (const line of rl) {
        try {
            const cmd = JSON.parse(line);
            if (cmd.op === 'account') {
                answer({ ok: true, ...(await createAccount(pdsUrl, cmd.handle, cmd.password)) });
            } else if (cmd.op === 'token-max-age') {
                // The lifetime of the access tokens issued from now on (the
                // PDS has no setting for it; its OAuth provider reads this
                // field at each token it issues).
                state.tokenMaxAge = cmd.seconds * 1000;
                state.pds.ctx.oauthProvider.tokenManager.tokenMaxAge = state.tokenMaxAge;
                answer({ ok: true });
            } else if (cmd.op === 'revoke-tokens') {
                // Every OAuth session of the account ends (as when its user
                // removes an app from their PDS): its refresh tokens die.
                const store = state.pds.ctx.oauthProvider.tokenManager.store;
                const tokens = await store.listAccountTokens(cmd.did);
                for (const t of tokens) await store.deleteToken(t.id);
                answer({ ok: true, revoked: tokens.length });
            } else if (cmd.op === 'route') {
                if (cmd.to) routes.set(new URL(cmd.origin).origin, cmd.to);
                else routes.delete(new URL(cmd.origin).origin);
                answer({ ok: true });
            } else if (cmd.op === 'stop-pds') {
                if (state.pds) await state.pds.destroy();
                state.pds = null;
                answer({ ok: true });
            } else if (cmd.op === 'start-pds') {
                if (!state.pds) await startPds(state);
                answer({ ok: true });
            } else {
                answer({ error: `unknown op ${cmd.op}` });
            }
        } catch (e) {
            answer({ error: String(e?.message ?? e) });
        }
    }
    if (state.pds) await state.pds.destroy();
    await plc.destroy();
    process.exit(0);
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
