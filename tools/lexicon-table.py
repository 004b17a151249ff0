#!/usr/bin/env python3
"""Generate lib/http/xrpc-table.c from the io.pocketenv.* lexicons.

The lexicons (../shared/lexicons, plus our extensions in lexicons/) are the
source of truth for the API (STYLE rule 5): this script turns every query
and procedure into one row of
the XRPC route and validation table that lib/http/xrpc.c walks. The output
is committed, so the build never needs the lexicons; tests regenerate it in
memory and compare, so a lexicon change without a regenerated table fails.

  tools/lexicon-table.py [--lexicons DIR] [--out FILE]   write the table
  tools/lexicon-table.py --check [--lexicons DIR]        exit 1 on drift

What is kept: parameter and body property types (string, integer, boolean,
object, array), required, nullable, integer minimum/maximum, string
minLength/maxLength (UTF-8 bytes, as atproto counts them), array
minLength/maxLength, enum, and the string formats lib/http/xrpc.c checks
(FORMATS below). A format the validator does not check, on a string a client
sends (a parameter or an input), stops the generation: a lexicon change
cannot silently let one through. What is not kept: knownValues (an open set
by definition), maxGraphemes/minGraphemes (would need Unicode segmentation;
the byte limit that accompanies them in our lexicons still applies), unions
and unknown, refs that point nowhere; those become "any", which accepts every
JSON value. Python 3 standard library only.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LEXICONS = os.path.join(ROOT, "..", "shared", "lexicons")
DEFAULT_OUT = os.path.join(ROOT, "lib", "http", "xrpc-table.c")
# Our extensions (lexicons/README.md): methods upstream's lexicons lack.
EXTENSIONS = os.path.join(ROOT, "lexicons")
MAX_DEPTH = 8
# Values our daemon accepts beyond an upstream enum (lexicons/README.md):
# {nsid: {input property: [values]}}. Kept here, not in a lexicon file,
# because upstream's document is the contract and is never edited.
ENUM_EXTENSIONS = {
    "io.pocketenv.sandbox.createSandbox": {"provider": ["kubernetes"]},
}

# String formats (atproto lexicon spec) and the validator's name for each.
FORMATS = {
    "uri": "PE_XRPC_F_URI",
    "at-identifier": "PE_XRPC_F_AT_IDENTIFIER",
    "did": "PE_XRPC_F_DID",
    "handle": "PE_XRPC_F_HANDLE",
}

TYPES = {
    "string": "PE_XRPC_T_STRING",
    "integer": "PE_XRPC_T_INTEGER",
    "boolean": "PE_XRPC_T_BOOLEAN",
    "object": "PE_XRPC_T_OBJECT",
    "array": "PE_XRPC_T_ARRAY",
}


def load_docs(lexdir):
    docs = {}
    for dirpath, dirnames, filenames in os.walk(lexdir):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                doc = json.load(f)
            if isinstance(doc, dict) and "id" in doc and "defs" in doc:
                docs[doc["id"]] = doc
    return docs


def c_str(s):
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= ord(ch) < 0x7F:
            out.append(ch)
        else:
            out.extend("\\%03o" % b for b in ch.encode("utf-8"))
    return '"' + "".join(out) + '"'


class Emitter:
    """Turns schema nodes into C definitions, sharing identical ones."""

    def __init__(self, docs):
        self.docs = docs
        self.lines = []
        self.memo = {}
        self.count = 0

    def name(self, prefix):
        self.count += 1
        return "%s%d" % (prefix, self.count)

    def define(self, kind, body):
        key = (kind, body)
        if key not in self.memo:
            prefix = {"schema": "s", "props": "p", "enum": "e"}[kind]
            name = self.name(prefix)
            ctype = {
                "schema": "static const pe_xrpc_schema %s = %s;",
                "props": "static const pe_xrpc_prop %s[] = %s;",
                "enum": "static const char *const %s[] = %s;",
            }[kind]
            self.lines.append(ctype % (name, body))
            self.memo[key] = name
        return self.memo[key]

    def resolve(self, node, doc_id, depth):
        seen = 0
        while node.get("type") == "ref" and seen < MAX_DEPTH:
            ref = node.get("ref", "")
            target_id, _, frag = ref.partition("#")
            target_id = target_id or doc_id
            doc = self.docs.get(target_id)
            node = (doc or {}).get("defs", {}).get(frag or "main")
            if node is None:
                return None, doc_id
            doc_id = target_id
            seen += 1
        return node, doc_id

    def schema(self, node, doc_id, depth=0):
        node, doc_id = self.resolve(node, doc_id, depth)
        if node is None or depth > MAX_DEPTH or node.get("type") not in TYPES:
            return self.define("schema", "{.type = PE_XRPC_T_ANY, .min_length = -1, .max_length = -1}")
        t = node["type"]
        fields = [".type = " + TYPES[t]]
        if t == "integer":
            if "minimum" in node:
                fields.append(".has_min = 1, .minimum = %dLL" % node["minimum"])
            if "maximum" in node:
                fields.append(".has_max = 1, .maximum = %dLL" % node["maximum"])
        fields.append(".min_length = %d" % node.get("minLength", -1))
        fields.append(".max_length = %d" % node.get("maxLength", -1))
        if t == "string" and "format" in node:
            if node["format"] not in FORMATS:
                raise SystemExit("%s: string format %r is not checked by lib/http/xrpc.c"
                                 % (doc_id, node["format"]))
            fields.append(".format = " + FORMATS[node["format"]])
        if t == "string" and node.get("enum"):
            vals = ", ".join(c_str(v) for v in node["enum"])
            fields.append(".enum_values = " + self.define("enum", "{%s, NULL}" % vals))
        if t == "object":
            props, n = self.props(node, doc_id, depth + 1)
            if n:
                fields.append(".props = %s, .n_props = %d" % (props, n))
        if t == "array":
            fields.append(".items = &" + self.schema(node.get("items", {}), doc_id, depth + 1))
        return self.define("schema", "{" + ", ".join(fields) + "}")

    def props(self, node, doc_id, depth):
        required = set(node.get("required", []))
        nullable = set(node.get("nullable", []))
        rows = []
        for pname in sorted(node.get("properties", {})):
            s = self.schema(node["properties"][pname], doc_id, depth)
            flags = []
            if pname in required:
                flags.append(".required = 1")
            if pname in nullable:
                flags.append(".nullable = 1")
            rows.append("{" + ", ".join([".name = " + c_str(pname)] + flags + [".schema = &" + s]) + "}")
        if not rows:
            return "NULL", 0
        return self.define("props", "{\n    " + ",\n    ".join(rows) + ",\n}"), len(rows)


def load_all(lexdir):
    """Upstream's lexicons plus our extensions; an id in both is an error."""
    docs = load_docs(lexdir)
    ext = load_docs(EXTENSIONS) if os.path.isdir(EXTENSIONS) else {}
    both = sorted(set(docs) & set(ext))
    if both:
        raise SystemExit("lexicons defined upstream and as extensions: " + ", ".join(both))
    docs.update(ext)
    for nsid, props in ENUM_EXTENSIONS.items():
        for pname, values in props.items():
            try:
                node = docs[nsid]["defs"]["main"]["input"]["schema"]["properties"][pname]
            except (KeyError, TypeError):
                raise SystemExit("enum extension: %s has no input property %s" % (nsid, pname))
            if not isinstance(node.get("enum"), list):
                raise SystemExit("enum extension: %s.%s is not an enum" % (nsid, pname))
            node["enum"] = node["enum"] + [v for v in values if v not in node["enum"]]
    return docs


def generate(lexdir):
    docs = load_all(lexdir)
    em = Emitter(docs)
    methods = []
    for nsid in sorted(docs):
        main = docs[nsid]["defs"].get("main")
        if not isinstance(main, dict) or main.get("type") not in ("query", "procedure"):
            continue
        kind = "PE_XRPC_QUERY" if main["type"] == "query" else "PE_XRPC_PROCEDURE"
        params, n_params = em.props(main.get("parameters", {}), nsid, 1)
        inp = main.get("input")
        input_s, encoding = "NULL", "NULL"
        if inp:
            encoding = c_str(inp.get("encoding", "application/json"))
            if "schema" in inp:
                input_s = "&" + em.schema(inp["schema"], nsid, 1)
        methods.append("    {.nsid = %s,\n     .kind = %s,\n     .params = %s,\n"
                       "     .n_params = %d,\n     .input = %s,\n     .input_encoding = %s},"
                       % (c_str(nsid), kind, params, n_params, input_s, encoding))
    out = [
        "/* Generated by tools/lexicon-table.py from ../shared/lexicons: do not edit.",
        " * The XRPC route and validation table, sorted by NSID for bsearch.",
        " * Regenerate with `python3 tools/lexicon-table.py`; tests compare this",
        " * file with a fresh generation whenever the lexicons are present. */",
        "// clang-format off",
        '#include "http/xrpc-internal.h"',
        "",
    ]
    out += em.lines
    out += ["", "const pe_xrpc_method pe__xrpc_methods[] = {"] + methods + ["};", ""]
    out += ["const size_t pe__xrpc_n_methods = sizeof(pe__xrpc_methods) / sizeof(pe__xrpc_methods[0]);", ""]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lexicons", default=DEFAULT_LEXICONS)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    args = ap.parse_args()
    if not os.path.isdir(args.lexicons):
        print("lexicons not found: %s" % args.lexicons, file=sys.stderr)
        return 77 if args.check else 1
    text = generate(args.lexicons)
    if args.check:
        with open(args.out, encoding="utf-8") as f:
            if f.read() != text:
                print("%s is out of date: run tools/lexicon-table.py" % args.out, file=sys.stderr)
                return 1
        return 0
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
