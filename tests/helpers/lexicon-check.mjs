// Validates XRPC answers with @atproto/lexicon, upstream's own validator:
// the contract is what that library accepts, not what we believe the
// lexicons say. Started once per test session by tests/integration
// (conftest.py, LexiconCheck); reads one JSON object per line on stdin,
//   {"nsid": "io.pocketenv.sandbox.getSandbox", "output": {...}}
// or a record, {"nsid": "io.pocketenv.sandbox", "record": {...}},
// and answers one line on stdout: {"ok": true} or {"ok": false, "error": "..."}
// ({"ok": true, "unchecked": "..."} where upstream's lexicon points to a
// definition it does not have).
// Lexicons: upstream's (../shared/lexicons, the wire contract) and ours
// (lexicons/), both given as arguments. A method without an output schema
// (or not in the lexicons) answers ok: there is nothing to check.
import { Lexicons } from "@atproto/lexicon";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

function* jsonFiles(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* jsonFiles(p);
    else if (name.endsWith(".json")) yield p;
  }
}

const lex = new Lexicons();
const withOutput = new Set();
for (const dir of process.argv.slice(2)) {
  for (const file of jsonFiles(dir)) {
    const doc = JSON.parse(readFileSync(file, "utf8"));
    if (!doc.id || doc.lexicon !== 1) continue;
    lex.add(doc);
    const main = doc.defs && doc.defs.main;
    if (main && (main.type === "query" || main.type === "procedure") && main.output?.schema)
      withOutput.add(doc.id);
  }
}

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let reply;
  try {
    const { nsid, output, record } = JSON.parse(line);
    // {"nsid", "record"}: a record the daemon wrote to a repository.
    if (record !== undefined) lex.assertValidRecord(nsid, record);
    else if (withOutput.has(nsid)) lex.assertValidXrpcOutput(`lex:${nsid}`, output);
    reply = { ok: true };
  } catch (e) {
    const msg = String(e.message || e);
    // Upstream's own lexicons point to a few definitions that do not exist
    // (reference 9.3, "dangling refs"): there is no schema to check those
    // answers against. Said, not hidden: the suite counts them.
    reply = msg.startsWith("Lexicon not found") ? { ok: true, unchecked: msg } : { ok: false, error: msg };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
});
