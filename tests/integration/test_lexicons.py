"""The XRPC route table (lib/http/xrpc-table.c) against ../shared/lexicons.

Two checks, both skipped when the lexicons are absent: the committed file
is byte-for-byte what tools/lexicon-table.py generates now (so a lexicon
change without a regenerated table fails), and, independently of the
generator, every query and procedure of the lexicons is in the table with
its kind, parameters and input, and nothing else is. Needs no build.
"""
import importlib.util
import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LEXICONS = os.path.join(ROOT, "..", "shared", "lexicons")
EXTENSIONS = os.path.join(ROOT, "lexicons")  # ours: lexicons/README.md
TABLE = os.path.join(ROOT, "lib", "http", "xrpc-table.c")
GENERATOR = os.path.join(ROOT, "tools", "lexicon-table.py")

pytestmark = pytest.mark.skipif(not os.path.isdir(LEXICONS),
                                reason="../shared/lexicons not present")


def load_generator():
    spec = importlib.util.spec_from_file_location("lexicon_table", GENERATOR)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def lexicon_methods():
    out = {}
    for dirpath, _, files in [w for d in (LEXICONS, EXTENSIONS) for w in os.walk(d)]:
        for name in files:
            if not name.endswith(".json"):
                continue
            with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                doc = json.load(f)
            main = doc.get("defs", {}).get("main", {})
            if main.get("type") in ("query", "procedure"):
                out[doc["id"]] = main
    return out


def table_rows():
    text = open(TABLE, encoding="utf-8").read()
    rows = re.findall(r'\{\.nsid = "([^"]+)",\s*\.kind = (\w+),\s*\.params = (\w+),\s*'
                      r'\.n_params = (\d+),\s*\.input = ([&\w]+),\s*\.input_encoding = ([^}]+)\}',
                      text)
    return {r[0]: r for r in rows}


def test_committed_table_matches_generator():
    gen = load_generator()
    with open(TABLE, encoding="utf-8") as f:
        committed = f.read()
    assert committed == gen.generate(LEXICONS), \
        "lib/http/xrpc-table.c is stale: run python3 tools/lexicon-table.py"


def test_every_lexicon_method_is_routed():
    lex = lexicon_methods()
    rows = table_rows()
    assert sorted(rows) == sorted(lex)
    assert list(rows) == sorted(rows), "table must stay sorted for bsearch"
    for nsid, main in lex.items():
        _, kind, _, n_params, inp, _ = rows[nsid]
        want = "PE_XRPC_QUERY" if main["type"] == "query" else "PE_XRPC_PROCEDURE"
        assert kind == want, nsid
        assert int(n_params) == len(main.get("parameters", {}).get("properties", {})), nsid
        assert (inp != "NULL") == ("schema" in main.get("input", {})), nsid
