/* Unit tests for the XRPC validators (lib/http/xrpc.c) over the generated
 * lexicon table: every kind of validation error, and the error mapping. */
#include <string.h>

#include "task.h"
#include "http/xrpc-internal.h"

#define ARGS(...) ((const pe_xrpc_arg[]){__VA_ARGS__})
#define NARGS(...) (sizeof((const pe_xrpc_arg[]){__VA_ARGS__}) / sizeof(pe_xrpc_arg))

static const pe_xrpc_method *method(const char *nsid)
{
    const pe_xrpc_method *m = pe__xrpc_lookup(nsid);
    if (m == NULL)
        TEST_FAIL("%s not in the table", nsid);
    return m;
}

/* Parse params; returns the message on failure, NULL on success. */
static const char *params_err(const char *nsid, const pe_xrpc_arg *args, size_t n, json_t **out)
{
    static char msg[512];
    json_t *tmp = NULL;

    if (pe__xrpc_params(method(nsid), args, n, out ? out : &tmp, msg, sizeof(msg)) < 0)
        return msg;
    json_decref(tmp);
    return NULL;
}

/* Parse a body; returns the message on failure, NULL on success (with
 * the parsed input in *out when out is given). framed: the request had a
 * Content-Length (or was chunked). */
static const char *body_in(const char *nsid, const char *ctype, const char *body, bool framed,
                           json_t **out)
{
    static char msg[512];
    json_t *tmp = NULL;

    if (pe__xrpc_body(method(nsid), ctype, body, body ? strlen(body) : 0, framed, out ? out : &tmp,
                      msg, sizeof(msg)) < 0)
        return msg;
    json_decref(tmp);
    return NULL;
}

/* A body as most clients send it: no body at all, or one with its length. */
static const char *body_err(const char *nsid, const char *ctype, const char *body)
{
    return body_in(nsid, ctype, body, body != NULL, NULL);
}

TEST_CASE(table_sorted_and_lookup)
{
    for (size_t i = 1; i < pe__xrpc_n_methods; i++)
        ASSERT(strcmp(pe__xrpc_methods[i - 1].nsid, pe__xrpc_methods[i].nsid) < 0);
    ASSERT_EQ_INT(method("io.pocketenv.sandbox.getSandbox")->kind, PE_XRPC_QUERY);
    ASSERT_EQ_INT(method("io.pocketenv.sandbox.createSandbox")->kind, PE_XRPC_PROCEDURE);
    ASSERT(pe__xrpc_lookup("io.pocketenv.sandbox.nope") == NULL);
    ASSERT(pe__xrpc_lookup("io.pocketenv.sandbox.defs") == NULL);
}

TEST_CASE(nsid_syntax)
{
    ASSERT(pe__xrpc_nsid_valid("io.pocketenv.sandbox.getSandbox"));
    ASSERT(pe__xrpc_nsid_valid("a.b.c"));
    ASSERT(!pe__xrpc_nsid_valid("a.b"));
    ASSERT(!pe__xrpc_nsid_valid(""));
    ASSERT(!pe__xrpc_nsid_valid("a..b.c"));
    ASSERT(!pe__xrpc_nsid_valid("a.b.c."));
    ASSERT(!pe__xrpc_nsid_valid("a.b/c.d"));
    ASSERT(!pe__xrpc_nsid_valid("a.b.c%00"));
}

TEST_CASE(params_ok_and_coerced)
{
    json_t *out = NULL;
    const char *e = params_err("io.pocketenv.actor.getActorSandboxes",
                               ARGS({"did", "did:key:z"}, {"limit", "5"}, {"offset", "0"},
                                    {"isRunning", "true"}, {"unknown", "x"}),
                               5, &out);
    ASSERT(e == NULL);
    ASSERT_EQ_STR(json_string_value(json_object_get(out, "did")), "did:key:z");
    ASSERT_EQ_INT(json_integer_value(json_object_get(out, "limit")), 5);
    ASSERT(json_is_true(json_object_get(out, "isRunning")));
    ASSERT(json_object_get(out, "unknown") == NULL);
    json_decref(out);
}

TEST_CASE(params_errors)
{
    const char *nsid = "io.pocketenv.actor.getActorSandboxes";

    ASSERT_CONTAINS(params_err(nsid, NULL, 0, NULL), "must have the property \"did\"");
    ASSERT_CONTAINS(params_err(nsid, ARGS({"did", "did:key:z"}, {"limit", "abc"}), 2, NULL),
                    "Params/limit must be an integer");
    ASSERT_CONTAINS(params_err(nsid, ARGS({"did", "did:key:z"}, {"limit", "1.5"}), 2, NULL),
                    "must be an integer");
    ASSERT_CONTAINS(
        params_err(nsid, ARGS({"did", "did:key:z"}, {"limit", "99999999999999999999"}), 2, NULL),
        "must be an integer");
    ASSERT_CONTAINS(params_err(nsid, ARGS({"did", "did:key:z"}, {"limit", "0"}), 2, NULL),
                    "Params/limit can not be less than 1");
    ASSERT_CONTAINS(params_err(nsid, ARGS({"did", "did:key:z"}, {"offset", "-1"}), 2, NULL),
                    "can not be less than 0");
    ASSERT_CONTAINS(params_err(nsid, ARGS({"did", "did:key:z"}, {"isRunning", "yes"}), 2, NULL),
                    "Params/isRunning must be a boolean");
    ASSERT_CONTAINS(params_err(nsid, ARGS({"did", "did:key:z"}, {"isRunning", NULL}), 2, NULL),
                    "must be a boolean");
}

TEST_CASE(body_ok_unknown_properties_allowed)
{
    ASSERT(body_err("io.pocketenv.sandbox.createSandbox", "application/json",
                    "{\"base\":\"openclaw\",\"vcpus\":2,\"provider\":\"daytona\","
                    "\"topics\":[\"a\"],\"somethingNew\":{\"x\":1}}") == NULL);
    ASSERT(body_err("io.pocketenv.sandbox.createSandbox", "Application/JSON; charset=utf-8",
                    "{\"base\":\"x\"}") == NULL);
    /* No input declared: a body is ignored, whatever it is. */
    ASSERT(body_err("io.pocketenv.sandbox.stopSandbox", NULL, "garbage") == NULL);
}

TEST_CASE(body_errors)
{
    const char *cs = "io.pocketenv.sandbox.createSandbox";

    ASSERT_CONTAINS(body_err(cs, "application/json", "{\"base\":"), "Malformed JSON");
    ASSERT_CONTAINS(body_err(cs, "text/plain", "{\"base\":\"x\"}"), "Wrong request encoding");
    ASSERT_CONTAINS(body_err(cs, NULL, "{\"base\":\"x\"}"),
                    "Request encoding (Content-Type) required but not provided");
    ASSERT_CONTAINS(body_err(cs, "application/json", NULL), "request body is expected");
    ASSERT_CONTAINS(body_err(cs, "application/json", "[1]"), "Input must be an object");
    ASSERT_CONTAINS(body_err(cs, "application/json", "{}"),
                    "Input must have the property \"base\"");
    ASSERT_CONTAINS(body_err(cs, "application/json", "{\"base\":1}"),
                    "Input/base must be a string");
    ASSERT_CONTAINS(body_err(cs, "application/json", "{\"base\":\"x\",\"vcpus\":0}"),
                    "Input/vcpus can not be less than 1");
    ASSERT_CONTAINS(body_err(cs, "application/json", "{\"base\":\"x\",\"vcpus\":1.5}"),
                    "Input/vcpus must be an integer");
    ASSERT_CONTAINS(body_err(cs, "application/json", "{\"base\":\"x\",\"keepAlive\":\"yes\"}"),
                    "Input/keepAlive must be a boolean");
    ASSERT_CONTAINS(body_err(cs, "application/json", "{\"base\":\"x\",\"provider\":\"aws\"}"),
                    "Input/provider must be one of (daytona|vercel|");
    ASSERT_CONTAINS(body_err(cs, "application/json", "{\"base\":\"x\",\"name\":\"\"}"),
                    "Input/name must not be shorter than 1 characters");
    ASSERT_CONTAINS(body_err(cs, "application/json", "{\"base\":\"x\",\"topics\":\"a\"}"),
                    "Input/topics must be an array");
    ASSERT_CONTAINS(body_err(cs, "application/json",
                             "{\"base\":\"x\",\"topics\":[\"ok\",\"0123456789012345678901234567890"
                             "12345678901234567890\"]}"),
                    "Input/topics/1 must not be longer than 50 characters");
}

/* Which value would win is each parser's guess: two of a key are refused,
 * at any depth. */
/* What @atproto/xrpc-server does with an empty body (upstream's util.ts),
 * and the SDK's sandbox.start(): a POST with Content-Type: application/json,
 * Content-Length: 0 (fetch with no body) or no length at all. */
TEST_CASE(empty_body_is_an_empty_object_where_that_is_valid)
{
    const char *start = "io.pocketenv.sandbox.startSandbox"; /* {repo?, keepAlive?} */
    const char *cs = "io.pocketenv.sandbox.createSandbox";   /* {base*, ...} */
    json_t *out = NULL;

    ASSERT(body_in(start, "application/json", "", true, &out) == NULL);
    ASSERT(json_is_object(out) && json_object_size(out) == 0);
    json_decref(out);
    out = NULL;
    ASSERT(body_in(start, NULL, NULL, false, &out) == NULL); /* curl -X POST */
    ASSERT(json_is_object(out) && json_object_size(out) == 0);
    json_decref(out);
    ASSERT(body_in(start, NULL, "", true, NULL) == NULL);
    ASSERT(body_in("io.pocketenv.sandbox.updateSandboxSettings", "application/json", "", true,
                   NULL) == NULL);
    ASSERT_CONTAINS(body_in(start, "text/plain", "", true, NULL),
                    "Wrong request encoding (Content-Type): text/plain");
    /* A body that is there is still read and checked. */
    ASSERT_CONTAINS(body_in(start, "application/json", "{\"keepAlive\":1}", true, NULL),
                    "Input/keepAlive must be a boolean");
    /* Required properties: refused as upstream refuses, by framing. */
    ASSERT_CONTAINS(body_in(cs, "application/json", "", true, NULL),
                    "Input must have the property \"base\"");
    ASSERT_CONTAINS(body_in(cs, "application/json", NULL, false, NULL),
                    "A request body is expected but none was provided");
    ASSERT_CONTAINS(body_in(cs, NULL, "", true, NULL),
                    "Request encoding (Content-Type) required but not provided");
    ASSERT_CONTAINS(body_in("io.pocketenv.volume.updateVolume", "application/json", "", true, NULL),
                    "Input must have the property \"id\"");
}

TEST_CASE(body_duplicate_keys_refused)
{
    const char *cs = "io.pocketenv.sandbox.createSandbox";

    ASSERT_CONTAINS(body_err(cs, "application/json", "{\"base\":\"x\",\"base\":\"y\"}"),
                    "duplicate object key");
    ASSERT_CONTAINS(body_err(cs, "application/json", "{\"base\":\"x\",\"vcpus\":1,\"vcpus\":64}"),
                    "Malformed JSON");
    ASSERT_CONTAINS(body_err("io.pocketenv.file.addFile", "application/json",
                             "{\"file\":{\"path\":\"/a\",\"content\":\"x\",\"path\":\"/etc/x\"}}"),
                    "duplicate object key");
    ASSERT(body_err(cs, "application/json", "{\"base\":\"x\",\"envs\":{\"base\":\"y\"}}") == NULL);
}

/* The lexicons' string formats on client input: "uri" (readme, repo) and
 * "at-identifier" (the did parameters), as the atproto spec defines them;
 * what the CLI and the tests send passes. */
TEST_CASE(string_formats)
{
    const char *cs = "io.pocketenv.sandbox.createSandbox";
    const char *gs = "io.pocketenv.actor.getActorSandboxes";
    static char long_uri[8200];

    ASSERT(pe__xrpc_format_ok(PE_XRPC_F_URI, "https://github.com/o/r", 22));
    ASSERT(pe__xrpc_format_ok(PE_XRPC_F_URI, "github:octo/hello", 17));
    ASSERT(pe__xrpc_format_ok(PE_XRPC_F_URI, "at://did:plc:x/app.bsky.feed.post/1", 35));
    ASSERT(pe__xrpc_format_ok(PE_XRPC_F_URI, "git+ssh://git@h:o/r.git", 23));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_URI, "", 0));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_URI, "octo/hello", 10));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_URI, "https:", 6));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_URI, ":x", 2));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_URI, "1http://x", 9));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_URI, "https://a.example/x y", 21));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_URI, "https://a.example/\tx", 20));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_URI, "https://a\0x", 11));
    memcpy(long_uri, "https://a.example/", 18);
    memset(long_uri + 18, 'a', sizeof(long_uri) - 18);
    ASSERT(pe__xrpc_format_ok(PE_XRPC_F_URI, long_uri, 8192));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_URI, long_uri, 8193));

    ASSERT(pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "did:key:z6MkhaXgBZD", 19));
    ASSERT(pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "did:plc:abc123", 14));
    ASSERT(pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "did:web:localhost%3A8080", 24));
    ASSERT(pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "owner.local", 11));
    ASSERT(pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "alice.bsky.social", 17));
    ASSERT(pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "xn--ls8h.test", 13));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "x", 1));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "did:key:", 8));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "did:KEY:z", 9));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "did:key:z:", 10));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "did:key:a/b", 11));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "-a.test", 7));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "a..test", 7));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "a.123", 5));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "a b.test", 8));
    ASSERT(!pe__xrpc_format_ok(PE_XRPC_F_AT_IDENTIFIER, "owner.local.", 12));

    ASSERT_CONTAINS(params_err(gs, ARGS({"did", "not a did"}), 1, NULL),
                    "Params/did must be a valid did or a handle");
    ASSERT(params_err(gs, ARGS({"did", "owner.local"}), 1, NULL) == NULL);
    ASSERT(params_err(gs, ARGS({"did", "did:key:zPagingUser"}), 1, NULL) == NULL);
    ASSERT_CONTAINS(body_err(cs, "application/json", "{\"base\":\"x\",\"readme\":\"README.md\"}"),
                    "Input/readme must be a uri");
    ASSERT_CONTAINS(body_err(cs, "application/json", "{\"base\":\"x\",\"readme\":\"\"}"),
                    "Input/readme must be a uri");
    ASSERT(body_err(cs, "application/json",
                    "{\"base\":\"x\",\"readme\":\"https://github.com/o/r#readme\"}") == NULL);
    /* createSandbox's repo has no format: URLs and github:o/r alike */
    ASSERT(body_err(cs, "application/json", "{\"base\":\"x\",\"repo\":\"octo/hello\"}") == NULL);
}

TEST_CASE(body_max_and_nested_refs)
{
    ASSERT_CONTAINS(
        body_err("io.pocketenv.sandbox.exposePort", "application/json", "{\"port\":65536}"),
        "Input/port can not be greater than 65535");
    ASSERT(body_err("io.pocketenv.sandbox.exposePort", "application/json", "{\"port\":8080}") ==
           NULL);
    /* file is a ref to io.pocketenv.file.defs#file, resolved by the generator */
    ASSERT_CONTAINS(
        body_err("io.pocketenv.file.addFile", "application/json", "{\"file\":{\"path\":\"/a\"}}"),
        "Input/file must have the property \"content\"");
    ASSERT(body_err("io.pocketenv.file.addFile", "application/json",
                    "{\"file\":{\"path\":\"/a\",\"content\":\"x\"}}") == NULL);
    ASSERT_CONTAINS(body_err("io.pocketenv.file.addFile", "application/json", "{\"file\":null}"),
                    "Input/file must be an object");
}

TEST_CASE(error_mapping)
{
    ASSERT_EQ_INT(pe__xrpc_error_for(PE_EINVAL).status, 400);
    ASSERT_EQ_STR(pe__xrpc_error_for(PE_EINVAL).name, "InvalidRequest");
    ASSERT_EQ_INT(pe__xrpc_error_for(PE_XRPC_EAUTH).status, 401);
    ASSERT_EQ_STR(pe__xrpc_error_for(PE_XRPC_EAUTH).name, "AuthenticationRequired");
    ASSERT_EQ_INT(pe__xrpc_error_for(PE_XRPC_EFORBIDDEN).status, 403);
    ASSERT_EQ_INT(pe__xrpc_error_for(PE_ENOENT).status, 404);
    ASSERT_EQ_STR(pe__xrpc_error_for(PE_XRPC_ENOMETHOD).name, "XRPCNotSupported");
    ASSERT_EQ_INT(pe__xrpc_error_for(PE_XRPC_ETOOBIG).status, 413);
    ASSERT_EQ_INT(pe__xrpc_error_for(PE_XRPC_ERATE).status, 429);
    ASSERT_EQ_INT(pe__xrpc_error_for(PE_ESYS).status, 500);
    ASSERT_EQ_INT(pe__xrpc_error_for(12345).status, 500);
    ASSERT_EQ_STR(pe__xrpc_error_for(PE_XRPC_ENOTIMPL).name, "MethodNotImplemented");
    ASSERT_EQ_INT(pe__xrpc_error_for(PE_XRPC_EUPSTREAM).status, 502);
}

/* What lib/provider's errors become: a capability the sandbox's provider
 * lacks is 501, its failures 502/504, never a 4xx that blames the client
 * (no endpoint reaches a provider without it yet: every sandbox is local). */
TEST_CASE(provider_error_mapping)
{
    ASSERT_EQ_INT(pe__xrpc_error_for(PE_ENOTCAP).status, 501);
    ASSERT_EQ_STR(pe__xrpc_error_for(PE_ENOTCAP).name, "NotSupported");
    ASSERT_EQ_INT(pe__xrpc_error_for(PE_EREMOTE).status, 502);
    ASSERT_EQ_STR(pe__xrpc_error_for(PE_EREMOTE).name, "UpstreamFailure");
    ASSERT_EQ_INT(pe__xrpc_error_for(PE_EAUTH).status, 502);
    ASSERT_EQ_INT(pe__xrpc_error_for(PE_ETIMEDOUT).status, 504);
    ASSERT_EQ_STR(pe__xrpc_error_for(PE_ETIMEDOUT).name, "UpstreamTimeout");
}

int main(void)
{
    return RUN_TESTS(table_sorted_and_lookup, nsid_syntax, params_ok_and_coerced, params_errors,
                     body_ok_unknown_properties_allowed, body_errors,
                     empty_body_is_an_empty_object_where_that_is_valid, body_duplicate_keys_refused,
                     string_formats, body_max_and_nested_refs, error_mapping,
                     provider_error_mapping);
}
