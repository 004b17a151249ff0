/* The MCP server's tools: sandboxes for a model, over the XRPC handlers.
 *
 * Every tool is a short chain of XRPC calls made with pe_xrpc_call and the
 * caller's own Authorization header: the handlers authenticate, check
 * ownership and validate exactly as they do for the API, so a tool can do
 * nothing its caller could not do with the API. What is here is the part
 * a model needs on top: a JSON Schema per tool (also what the arguments
 * are checked against, so schema and checks cannot drift), descriptions
 * written for a model, long output paged instead of cut, and errors whose
 * text says what to do next.
 *
 * File tools run small POSIX shell commands through sandbox.exec, with the
 * path single-quoted and file contents base64-encoded: the command line is
 * the only channel exec has (no stdin), and base64 keeps any byte and any
 * quote out of the shell's reach. */
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "mcp.h"
#include "transfer.h"

#define PAGE_BYTES 16384                /* of each stream in one answer */
#define READ_DEFAULT_BYTES 65536        /* file_read without a length */
#define READ_MAX_BYTES 262144           /* file_read's length at most */
#define WRITE_MAX_BYTES 65536           /* file_write's content at most (exec's argv) */
#define ARG_MAX_BYTES (256 * 1024)      /* any string argument */
#define CREATE_WAIT_S 300               /* sandbox_create waits this long for RUNNING */
#define ARCHIVE_DOWNLOAD_MAX (4u << 20) /* dir_download's tar.gz at most */

/* ---- results ---- */

static json_t *text_result(const char *text, bool is_error)
{
    return json_pack("{s:[{s:s, s:s}], s:b}", "content", "type", "text", "text", text, "isError",
                     is_error);
}

static void finish_text(pe_mcp_call *c, bool is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish_text(pe_mcp_call *c, bool is_error, const char *fmt, ...)
{
    va_list ap;
    char *text = NULL;

    va_start(ap, fmt);
    if (vasprintf(&text, fmt, ap) < 0)
        text = NULL;
    va_end(ap);
    c->finish(c, text_result(text ? text : "out of memory", is_error));
    free(text);
}

static void finish_json(pe_mcp_call *c, const char *lead, json_t *out)
{
    char *text = json_dumps(out, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_t *r = json_pack("{s:[{s:s, s:s++}], s:b}", "content", "type", "text", "text", lead, "\n",
                          text ? text : "{}", "isError", false);

    if (json_is_object(out))
        json_object_set(r, "structuredContent", out);
    free(text);
    c->finish(c, r);
}

/* An XRPC failure as a tool error that tells the model what to do. */
static void finish_xrpc_error(pe_mcp_call *c, unsigned status, const char *ename, const char *msg)
{
    const char *sandbox = json_string_value(json_object_get(c->args, "sandbox"));
    const char *hint;

    if (status == 404 || status == 403)
        hint = sandbox ? "No sandbox of yours has that name or id (another user's sandboxes are "
                         "not visible). Call sandbox_list to see your sandboxes, or sandbox_create "
                         "to make one."
                       : "It does not exist or is not yours. List what exists first.";
    else if (status == 409 || (msg && strstr(msg, "not running")))
        hint = "The sandbox is not in a state for this. Call sandbox_get to see its status; "
               "sandbox_start starts a stopped sandbox, and a new one is ready once its status is "
               "RUNNING.";
    else if (status == 400)
        hint = "The arguments were refused; fix them (see the tool's input schema) and call again.";
    else if (status == 401)
        hint =
            "The token was refused: the user must log in again (pocketenv login) or create a new "
            "token; retrying will not help.";
    else if (status == 429 || status == 503)
        hint = "The daemon is busy: wait a few seconds and call again.";
    else if (status == 413)
        hint = "The input is too large: split it into smaller calls.";
    else
        hint = "Retrying may not help; report this error to the user.";
    finish_text(c, true, "%s failed: %s (%s, HTTP %u). %s", c->tool->name,
                msg && *msg ? msg : "error", ename ? ename : "Error", status, hint);
}

/* ---- XRPC calls ---- */

typedef void (*step_fn)(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                        const char *msg);

static void xcall_done(json_t *out, unsigned status, const char *ename, const char *msg, void *ud)
{
    pe_mcp_call *c = ud;

    c->next(c, out, status, ename, msg);
    json_decref(out);
}

/* Call nsid (params and body stolen) and continue with next. */
static void xcall(pe_mcp_call *c, const char *nsid, json_t *params, json_t *body, step_fn next)
{
    pe_err err;

    pe_err_clear(&err);
    c->next = next;
    if (pe_xrpc_call(c->d->srv, nsid, params, body, c->authorization, "mcp", xcall_done, c, &err) <
        0)
        finish_text(c, true,
                    "%s failed: %s. Fix the arguments (see the tool's input schema) and call "
                    "again.",
                    c->tool->name, err.msg);
    json_decref(params);
    json_decref(body);
}

/* Only the outcome matters: 200 finishes with lead and the answer. */
static void finish_step(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                        const char *msg)
{
    json_t *empty;

    if (status != 200) {
        finish_xrpc_error(c, status, ename, msg);
        return;
    }
    empty = out ? NULL : json_object();
    finish_json(c,
                json_string_value(json_object_get(c->state, "lead")) ?: "Done:", out ? out : empty);
    json_decref(empty);
}

static const char *arg_str(pe_mcp_call *c, const char *key)
{
    return json_string_value(json_object_get(c->args, key));
}

static json_t *id_param(pe_mcp_call *c, const char *key)
{
    return json_pack("{s:s}", key, arg_str(c, "sandbox"));
}

static void set_lead(pe_mcp_call *c, const char *lead)
{
    json_object_set_new(c->state, "lead", json_string(lead));
}

/* ---- sandboxes ---- */

static void t_templates(pe_mcp_call *c)
{
    set_lead(c, "Templates (use an id as sandbox_create's base):");
    xcall(c, "io.pocketenv.sandbox.getSandboxes", json_pack("{s:i}", "limit", 100), NULL,
          finish_step);
}

static void t_list(pe_mcp_call *c)
{
    set_lead(c, "Your sandboxes:");
    xcall(c, "io.pocketenv.actor.getActorSandboxes",
          json_pack("{s:s, s:i}", "did", c->did, "limit", 100), NULL, finish_step);
}

static void t_get(pe_mcp_call *c)
{
    set_lead(c, "Sandbox:");
    xcall(c, "io.pocketenv.sandbox.getSandbox", id_param(c, "id"), NULL, finish_step);
}

static void t_start(pe_mcp_call *c)
{
    set_lead(c, "Started:");
    xcall(c, "io.pocketenv.sandbox.startSandbox", id_param(c, "id"), json_object(), finish_step);
}

static void t_stop(pe_mcp_call *c)
{
    set_lead(c, "Stopped:");
    xcall(c, "io.pocketenv.sandbox.stopSandbox", id_param(c, "id"), NULL, finish_step);
}

static void t_delete(pe_mcp_call *c)
{
    set_lead(c, "Deleted:");
    xcall(c, "io.pocketenv.sandbox.deleteSandbox", id_param(c, "id"), NULL, finish_step);
}

/* sandbox_create: create, then (wait) poll getSandbox until the sandbox
 * runs, with a progress notification per poll. */
static void create_poll(pe_mcp_call *c);

static void create_polled(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                          const char *msg)
{
    json_t *sb = json_object_get(out, "sandbox");
    const char *st = json_string_value(json_object_get(sb, "status"));
    double waited = pe_ev_now_ns() / 1e9 - json_real_value(json_object_get(c->state, "t0"));

    if (status != 200) {
        finish_xrpc_error(c, status, ename, msg);
        return;
    }
    if (st && strcmp(st, "INITIALIZING") != 0 && strcmp(st, "STARTING") != 0) {
        if (strcmp(st, "RUNNING") == 0)
            finish_json(c, "Created; it is RUNNING and ready for exec and file tools:", sb);
        else
            finish_text(
                c, true,
                "sandbox_create: the sandbox was made but its status is %s (%s). Call "
                "sandbox_start to try starting it, or sandbox_delete and create it again.",
                st, json_string_value(json_object_get(sb, "statusReason")) ?: "no reason given");
        return;
    }
    if (waited > CREATE_WAIT_S) {
        finish_text(c, true,
                    "sandbox_create: the sandbox is still %s after %d s. Call sandbox_get later to "
                    "see when it is RUNNING.",
                    st ? st : "being made", CREATE_WAIT_S);
        return;
    }
    if (c->progress) {
        char m[96];
        snprintf(m, sizeof(m), "sandbox is %s (%.0f s)", st ? st : "being made", waited);
        c->progress(c, floor(waited) + c->step, m);
    }
    c->step++;
    json_object_set_new(c->state, "poll", json_true());
    pe__mcp_later(c, 0.5, create_poll);
}

static void create_poll(pe_mcp_call *c)
{
    const char *id = json_string_value(json_object_get(c->state, "id"));

    xcall(c, "io.pocketenv.sandbox.getSandbox", json_pack("{s:s}", "id", id), NULL, create_polled);
}

static void create_made(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                        const char *msg)
{
    json_t *sb =
        json_is_object(json_object_get(out, "sandbox")) ? json_object_get(out, "sandbox") : out;
    const char *id = json_string_value(json_object_get(sb, "id"));

    if (status != 200) {
        finish_xrpc_error(c, status, ename, msg);
        return;
    }
    if (json_is_false(json_object_get(c->args, "wait")) || id == NULL) {
        finish_json(c, "Created (call sandbox_get until its status is RUNNING):", sb);
        return;
    }
    json_object_set_new(c->state, "id", json_string(id));
    json_object_set_new(c->state, "t0", json_real(pe_ev_now_ns() / 1e9));
    create_poll(c);
}

static void t_create(pe_mcp_call *c)
{
    json_t *body = json_pack("{s:s}", "base", arg_str(c, "base"));

    if (arg_str(c, "name"))
        json_object_set_new(body, "name", json_string(arg_str(c, "name")));
    if (arg_str(c, "description"))
        json_object_set_new(body, "description", json_string(arg_str(c, "description")));
    xcall(c, "io.pocketenv.sandbox.createSandbox", NULL, body, create_made);
}

/* ---- exec and paging ---- */

/* s single-quoted for sh. */
static char *sh_quote(const char *s)
{
    size_t n = 2;
    char *out, *o;

    for (const char *p = s; *p; p++)
        n += *p == '\'' ? 4 : 1;
    out = o = pe_xmalloc(n + 1);
    *o++ = '\'';
    for (const char *p = s; *p; p++) {
        if (*p == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else {
            *o++ = *p;
        }
    }
    *o++ = '\'';
    *o = '\0';
    return out;
}

/* At most max bytes of s from off: up to a line's end when one is in the
 * second half of the page, else on a UTF-8 character boundary. */
static size_t page_len(const char *s, size_t len, size_t off, size_t max)
{
    size_t n = len - off < max ? len - off : max;

    if (off + n == len)
        return n;
    for (size_t k = n; k > n / 2; k--)
        if (s[off + k - 1] == '\n')
            return k;
    while (n > 0 && ((unsigned char)s[off + n] & 0xc0) == 0x80)
        n--;
    return n;
}

/* "--- stdout ..." section of an answer: one page from off, exactly as
 * the command wrote it. A page that does not end with a newline gets one
 * for the reader, and a line in brackets says so (PAGE_MIDLINE or
 * PAGE_NO_NEWLINE): the bytes themselves are never changed. */
#define PAGE_MIDLINE "[the page ends mid-line: the next page goes on with the line]\n"
#define PAGE_NO_NEWLINE "[no newline at the end of the output]\n"
static void page_section(char **buf, const char *name, json_t *text, size_t off, const char *oid)
{
    const char *s = json_string_value(text) ?: "";
    size_t len = json_string_length(text), n;
    char *more = NULL, *sec;
    bool whole_line;

    if (off > len)
        off = len;
    n = page_len(s, len, off, PAGE_BYTES);
    whole_line = n == 0 || s[off + n - 1] == '\n';
    if (len == 0) {
        sec = pe_xasprintf("%s--- %s: (empty) ---\n", *buf, name);
    } else {
        if (off + n < len)
            more = pe_xasprintf("[%s continues: bytes %zu-%zu of %zu shown. Call read_output "
                                "with output_id \"%s\", stream \"%s\", offset %zu for more.]\n",
                                name, off, off + n, len, oid ? oid : "?", name, off + n);
        sec = pe_xasprintf("%s--- %s (bytes %zu-%zu of %zu) ---\n%.*s%s%s", *buf, name, off,
                           off + n, len, (int)n, s + off,
                           whole_line      ? ""
                           : off + n < len ? "\n" PAGE_MIDLINE
                                           : "\n" PAGE_NO_NEWLINE,
                           more ? more : "");
    }
    free(more);
    free(*buf);
    *buf = sec;
}

static void exec_done(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                      const char *msg)
{
    json_t *so = json_object_get(out, "stdout"), *se = json_object_get(out, "stderr");
    json_int_t code = json_integer_value(json_object_get(out, "exitCode"));
    json_int_t timeout = json_integer_value(json_object_get(c->args, "timeout"));
    double took = pe_ev_now_ns() / 1e9 - json_real_value(json_object_get(c->state, "t0"));
    bool cut = json_is_true(json_object_get(out, "truncated"));
    bool timed_out = timeout > 0 && (code == 124 || code == 137) && took >= (double)timeout - 0.1;
    char *oid = NULL, *text;
    json_t *r;

    if (status != 200) {
        finish_xrpc_error(c, status, ename, msg);
        return;
    }
    if (json_string_length(so) > PAGE_BYTES || json_string_length(se) > PAGE_BYTES)
        oid = pe__mcp_output_put(c->session, so, se);
    text = pe_xasprintf("exit code: %lld%s\n", (long long)code,
                        timed_out ? " (killed: it ran past its timeout)" : "");
    page_section(&text, "stdout", so, 0, oid);
    page_section(&text, "stderr", se, 0, oid);
    if (cut) {
        char *t = pe_xasprintf("%s[the daemon kept only the first MiB of a stream: to see all of "
                               "it, run the command again with its output redirected to a file "
                               "(cmd > /tmp/out.txt 2>&1) and read that with file_read]\n",
                               text);
        free(text);
        text = t;
    }
    r = text_result(text, code != 0);
    json_object_set_new(r, "structuredContent",
                        json_pack("{s:I, s:I, s:I, s:b, s:b}", "exitCode", code, "stdoutBytes",
                                  (json_int_t)json_string_length(so), "stderrBytes",
                                  (json_int_t)json_string_length(se), "timedOut", timed_out,
                                  "truncatedByDaemon", cut));
    if (oid)
        json_object_set_new(json_object_get(r, "structuredContent"), "outputId", json_string(oid));
    free(oid);
    free(text);
    c->finish(c, r);
}

static void ignore_answer(json_t *out, unsigned status, const char *ename, const char *msg,
                          void *ud)
{
    (void)ud;
    if (status != 200)
        pe_log_info("mcp: cancelling a command failed: %s (%s)", msg ? msg : "",
                    ename ? ename : "");
    json_decref(out);
}

/* The client cancelled exec: end every process of the sandbox that carries
 * this call's mark in its environment. The one-shot exec API has no handle
 * on the command it runs, so the mark (PE_MCP_CALL, set for the command and
 * inherited by its children) is what finds them; a process that clears
 * its environment escapes, and ends at the call's timeout. Through the API
 * with the caller's token, as every tool. */
static void exec_cancel(pe_mcp_call *c)
{
    const char *mark = json_string_value(json_object_get(c->state, "mark"));
    json_t *params, *body;
    char *script;
    pe_err err;

    if (mark == NULL)
        return;
    script = pe_xasprintf("for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null "
                          "| grep -qx PE_MCP_CALL=%s && kill -KILL ${p#/proc/} 2>/dev/null; "
                          "done; exit 0",
                          mark);
    params = id_param(c, "id");
    body = json_pack("{s:s}", "command", script);
    pe_err_clear(&err);
    if (pe_xrpc_call(c->d->srv, "io.pocketenv.sandbox.exec", params, body, c->authorization, "mcp",
                     ignore_answer, NULL, &err) < 0)
        pe_log_info("mcp: cancelling a command failed: %s", err.msg);
    json_decref(params);
    json_decref(body);
    free(script);
}

static void t_exec(pe_mcp_call *c)
{
    const char *cmd = arg_str(c, "command");
    json_int_t timeout = json_integer_value(json_object_get(c->args, "timeout"));
    unsigned char raw[8];
    char mark[2 * sizeof(raw) + 1], *q = sh_quote(cmd), *full;

    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(mark, sizeof(mark), raw, sizeof(raw));
    json_object_set_new(c->state, "mark", json_string(mark));
    if (timeout > 0)
        full = pe_xasprintf("PE_MCP_CALL=%s exec timeout -s KILL %lld /bin/sh -c %s", mark,
                            (long long)timeout, q);
    else
        full = pe_xasprintf("PE_MCP_CALL=%s exec /bin/sh -c %s", mark, q);
    json_object_set_new(c->state, "t0", json_real(pe_ev_now_ns() / 1e9));
    c->cancel = exec_cancel;
    xcall(c, "io.pocketenv.sandbox.exec", id_param(c, "id"), json_pack("{s:s}", "command", full),
          exec_done);
    free(q);
    free(full);
}

static void t_read_output(pe_mcp_call *c)
{
    const char *id = arg_str(c, "output_id"), *stream = arg_str(c, "stream");
    json_int_t off = json_integer_value(json_object_get(c->args, "offset"));
    json_t *text = pe__mcp_output_get(c->session, id, stream);
    char *buf;

    if (text == NULL) {
        finish_text(c, true,
                    "read_output: no kept output \"%s\" in this session (only the last few "
                    "outputs are kept). Run the command again, with its output redirected to a "
                    "file if it is long, and read the file with file_read.",
                    id);
        return;
    }
    if ((size_t)off > json_string_length(text)) {
        finish_text(c, true, "read_output: offset %lld is past the end (%zu bytes).",
                    (long long)off, json_string_length(text));
        return;
    }
    buf = pe_xstrdup("");
    page_section(&buf, stream, text, (size_t)off, id);
    c->finish(c, text_result(buf, false));
    free(buf);
}

/* ---- files (shell commands through exec) ---- */

static void file_done(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                      const char *msg)
{
    json_int_t code = json_integer_value(json_object_get(out, "exitCode"));
    const char *so = json_string_value(json_object_get(out, "stdout")) ?: "";
    const char *se = json_string_value(json_object_get(out, "stderr")) ?: "";

    if (status != 200) {
        finish_xrpc_error(c, status, ename, msg);
        return;
    }
    if (code != 0) {
        finish_text(c, true,
                    "%s failed (exit code %lld): %s\nCheck the path (file_list shows a "
                    "directory) and that the sandbox has a POSIX shell with coreutils.",
                    c->tool->name, (long long)code, *se ? se : so);
        return;
    }
    if (strcmp(c->tool->name, "file_read") == 0) {
        /* first line: the file's size, then the bytes asked for */
        json_int_t off = json_integer_value(json_object_get(c->args, "offset"));
        const char *nl = strchr(so, '\n');
        long long size = nl ? strtoll(so, NULL, 10) : 0;
        const char *data = nl ? nl + 1 : "";
        size_t n = json_string_length(json_object_get(out, "stdout")) - (size_t)(data - so);
        char *more = NULL;
        json_t *r;

        if ((long long)off + (long long)n < size)
            more = pe_xasprintf("\n[file continues: bytes %lld-%lld of %lld shown. Call file_read "
                                "with offset %lld for more.]",
                                (long long)off, (long long)off + (long long)n, size,
                                (long long)off + (long long)n);
        r = json_pack("{s:[{s:s, s:s%}], s:b}", "content", "type", "text", "text", data, n,
                      "isError", false);
        if (more)
            json_array_append_new(json_object_get(r, "content"),
                                  json_pack("{s:s, s:s}", "type", "text", "text", more));
        json_object_set_new(r, "structuredContent",
                            json_pack("{s:I, s:I, s:I}", "size", (json_int_t)size, "offset", off,
                                      "bytes", (json_int_t)n));
        free(more);
        c->finish(c, r);
        return;
    }
    finish_text(c, false, "%s", *so ? so : "done");
}

static void file_exec(pe_mcp_call *c, const char *script)
{
    xcall(c, "io.pocketenv.sandbox.exec", id_param(c, "id"), json_pack("{s:s}", "command", script),
          file_done);
}

static void t_file_read(pe_mcp_call *c)
{
    json_int_t off = json_integer_value(json_object_get(c->args, "offset"));
    json_int_t len = json_integer_value(json_object_get(c->args, "length"));
    char *q = sh_quote(arg_str(c, "path")), *s;

    if (len <= 0)
        len = READ_DEFAULT_BYTES;
    s = pe_xasprintf("f=%s; [ -f \"$f\" ] || { echo \"no regular file at $f\" >&2; exit 2; }; "
                     "wc -c < \"$f\" | tr -d ' '; tail -c +%lld -- \"$f\" | head -c %lld",
                     q, (long long)off + 1, (long long)len);
    file_exec(c, s);
    free(q);
    free(s);
}

static void t_file_write(pe_mcp_call *c)
{
    json_t *content = json_object_get(c->args, "content");
    size_t len = json_string_length(content), b64len;
    char *q = sh_quote(arg_str(c, "path")), *b64, *s;
    bool append = json_is_true(json_object_get(c->args, "append"));

    if (len > WRITE_MAX_BYTES) {
        free(q);
        finish_text(c, true,
                    "file_write: content is %zu bytes, at most %d per call. Write the first %d "
                    "bytes, then the rest in further calls with append: true.",
                    len, WRITE_MAX_BYTES, WRITE_MAX_BYTES);
        return;
    }
    b64len = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    b64 = pe_xmalloc(b64len);
    sodium_bin2base64(b64, b64len, (const unsigned char *)json_string_value(content), len,
                      sodium_base64_VARIANT_ORIGINAL);
    s = pe_xasprintf("f=%s; d=$(dirname -- \"$f\") && mkdir -p -- \"$d\" && printf %%s '%s' | "
                     "base64 -d %s \"$f\" && echo \"wrote %zu bytes to $f\"",
                     q, b64, append ? ">>" : ">", len);
    file_exec(c, s);
    free(b64);
    free(q);
    free(s);
}

static void t_file_list(pe_mcp_call *c)
{
    char *q = sh_quote(arg_str(c, "path") ?: "."), *s;

    s = pe_xasprintf("ls -la -- %s", q);
    file_exec(c, s);
    free(q);
    free(s);
}

static void t_file_remove(pe_mcp_call *c)
{
    char *q = sh_quote(arg_str(c, "path")), *s;
    bool rec = json_is_true(json_object_get(c->args, "recursive"));

    s = pe_xasprintf("f=%s; { [ -e \"$f\" ] || [ -L \"$f\" ]; } || { echo \"nothing at $f\" >&2; "
                     "exit 2; }; [ -d \"$f\" ] && [ ! -L \"$f\" ] && %s; rm %s -- \"$f\" && echo "
                     "\"removed $f\"",
                     q,
                     rec ? "true"
                         : "{ echo \"$f is a directory: pass recursive: true to remove it\" >&2; "
                           "exit 2; }",
                     rec ? "-rf" : "-f");
    file_exec(c, s);
    free(q);
    free(s);
}

/* ---- steps that need the sandbox's id first ---- */

static void resolve(pe_mcp_call *c, step_fn then)
{
    xcall(c, "io.pocketenv.sandbox.getSandbox", id_param(c, "id"), NULL, then);
}

static const char *resolved_id(json_t *out)
{
    return json_string_value(json_object_get(json_object_get(out, "sandbox"), "id"));
}

static void env_resolved(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                         const char *msg)
{
    bool secret = json_is_true(json_object_get(c->args, "secret"));
    const char *kind = secret ? "secret" : "variable";

    if (status != 200) {
        finish_xrpc_error(c, status, ename, msg);
        return;
    }
    set_lead(c, secret ? "Secret set (its value is sealed and never shown again); commands started "
                         "from now on see it in their environment."
                       : "Variable set; commands started from now on see it in their environment.");
    xcall(c, secret ? "io.pocketenv.secret.addSecret" : "io.pocketenv.variable.addVariable", NULL,
          json_pack("{s:{s:s, s:s, s:s}}", kind, "sandboxId", resolved_id(out), "name",
                    arg_str(c, "name"), "value", arg_str(c, "value")),
          finish_step);
}

static void t_env_set(pe_mcp_call *c)
{
    resolve(c, env_resolved);
}

static void port_done(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                      const char *msg)
{
    const char *url = json_string_value(json_object_get(out, "previewUrl"));

    if (status != 200) {
        finish_xrpc_error(c, status, ename, msg);
        return;
    }
    json_t *r = text_result("", false);
    char *t = pe_xasprintf("Port %lld is exposed. Preview URL: %s\n(Something in the sandbox must "
                           "listen on that port, on all addresses, for the URL to answer.)",
                           (long long)json_integer_value(json_object_get(c->args, "port")),
                           url ? url : "(none: this daemon has no preview URL for it)");
    json_object_set_new(json_array_get(json_object_get(r, "content"), 0), "text", json_string(t));
    json_object_set_new(r, "structuredContent", json_pack("{s:s?}", "previewUrl", url));
    free(t);
    c->finish(c, r);
}

static void t_port_expose(pe_mcp_call *c)
{
    xcall(c, "io.pocketenv.sandbox.exposePort", id_param(c, "id"),
          json_pack("{s:O}", "port", json_object_get(c->args, "port")), port_done);
}

/* ---- services: background commands ---- */

static void service_added(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                          const char *msg)
{
    if (status != 200) {
        finish_xrpc_error(c, status, ename, msg);
        return;
    }
    finish_json(c,
                "Started in the background (restarted if it fails). Read its output with "
                "service_logs; stop it with service_stop.",
                json_object_get(out, "service") ?: out);
}

static void t_service_start(pe_mcp_call *c)
{
    xcall(c, "io.pocketenv.service.addService", id_param(c, "sandboxId"),
          json_pack("{s:{s:s, s:s}}", "service", "name", arg_str(c, "name"), "command",
                    arg_str(c, "command")),
          service_added);
}

static void service_found(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                          const char *msg);

static void t_service_by_name(pe_mcp_call *c)
{
    xcall(c, "io.pocketenv.service.getServices", id_param(c, "sandboxId"), NULL, service_found);
}

static void logs_done(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                      const char *msg)
{
    char *t;

    if (status != 200) {
        finish_xrpc_error(c, status, ename, msg);
        return;
    }
    t = pe_xasprintf("service %s is %s.%s\n--- output (the last %lld bytes at most) ---\n%s",
                     arg_str(c, "name"),
                     json_string_value(json_object_get(out, "state")) ?: "in an unknown state",
                     json_is_true(json_object_get(out, "truncated"))
                         ? " Older output was dropped: the daemon keeps the latest only."
                         : "",
                     (long long)json_integer_value(json_object_get(out, "max")),
                     json_string_value(json_object_get(out, "logs")) ?: "");
    c->finish(c, text_result(t, false));
    free(t);
}

static void service_found(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                          const char *msg)
{
    const char *want = arg_str(c, "name");
    json_t *sv, *found = NULL;
    size_t i;

    if (status != 200) {
        finish_xrpc_error(c, status, ename, msg);
        return;
    }
    json_array_foreach(json_object_get(out, "services"), i, sv)
    {
        const char *n = json_string_value(json_object_get(sv, "name"));
        if (n && strcmp(n, want) == 0)
            found = sv;
    }
    if (found == NULL || json_string_value(json_object_get(found, "id")) == NULL) {
        finish_text(c, true,
                    "%s: the sandbox has no service named \"%s\". Start one with service_start.",
                    c->tool->name, want);
        return;
    }
    json_t *p = json_pack("{s:s}", "serviceId", json_string_value(json_object_get(found, "id")));
    if (strcmp(c->tool->name, "service_logs") == 0) {
        xcall(c, "io.pocketenv.service.getServiceLogs", p, NULL, logs_done);
    } else {
        set_lead(c, "Stopped and removed (its name can be used again):");
        /* stopped and removed, so that the name can be used again */
        xcall(c, "io.pocketenv.service.deleteService", p, NULL, finish_step);
    }
}

/* ---- backups: a directory kept, to restore later ---- */

static void t_backup_create(pe_mcp_call *c)
{
    json_t *body = json_pack("{s:s}", "directory", arg_str(c, "directory"));

    if (arg_str(c, "description"))
        json_object_set_new(body, "description", json_string(arg_str(c, "description")));
    set_lead(c, "Backed up (restore it with backup_restore and its id):");
    xcall(c, "io.pocketenv.sandbox.createBackup", id_param(c, "id"), body, finish_step);
}

static void t_backup_list(pe_mcp_call *c)
{
    set_lead(c, "Backups of the sandbox:");
    xcall(c, "io.pocketenv.sandbox.getBackups", id_param(c, "id"), NULL, finish_step);
}

static void t_backup_restore(pe_mcp_call *c)
{
    set_lead(c, "Restored: the directory is as it was when the backup was made.");
    xcall(c, "io.pocketenv.sandbox.restoreBackup", NULL,
          json_pack("{s:s}", "backupId", arg_str(c, "backup_id")), finish_step);
}

/* ---- directories as archives: pushDirectory / pullDirectory and the
 * /cp store, with the archive's bytes in the tool's call or result ---- */

struct archive_job {
    pe_mcp_call *c;
    char *data; /* the archive: decoded upload, or the download */
    size_t len;
    char uuid[PE_DAEMON_COPY_UUID_LEN + 1];
};

static void archive_job_free(struct archive_job *a)
{
    free(a->data);
    free(a);
}

/* Run work on a worker for c; after finishes the tool or goes on. */
static void archive_submit(pe_mcp_call *c, struct archive_job *a, pe_daemon_work_fn work,
                           void (*after)(pe_daemon_job *job))
{
    pe_daemon_job *job = pe_daemon_job_new(c->d, NULL, c->did, work);

    a->c = c;
    job->ud = a;
    job->after = after;
    job->kind = PE_JOB_LONG; /* reads or checks a whole archive */
    if (pe_daemon_job_submit(job) < 0) {
        archive_job_free(a);
        finish_text(c, true, "%s failed: the daemon is busy. Try again in a few seconds.",
                    c->tool->name);
    }
}

static void download_work(pe_daemon_job *job, pe_store *s)
{
    struct archive_job *a = job->ud;

    (void)s;
    pe_daemon_copy_take(job->d, job->did, a->uuid, ARCHIVE_DOWNLOAD_MAX, &a->data, &a->len,
                        &job->err);
}

static void download_after(pe_daemon_job *job)
{
    struct archive_job *a = job->ud;
    pe_mcp_call *c = a->c;
    size_t b64len;
    char *b64, *text, *uri;

    if (job->err.code != PE_OK) {
        finish_text(c, true,
                    "dir_download failed: %s. Download a smaller directory (a subdirectory), or "
                    "use `pocketenv cp` for large ones.",
                    job->err.msg);
        archive_job_free(a);
        return;
    }
    b64len = sodium_base64_ENCODED_LEN(a->len, sodium_base64_VARIANT_ORIGINAL);
    b64 = pe_xmalloc(b64len);
    sodium_bin2base64(b64, b64len, (const unsigned char *)a->data, a->len,
                      sodium_base64_VARIANT_ORIGINAL);
    text = pe_xasprintf("The directory %s of %s as a tar.gz archive (%zu bytes), in the "
                        "embedded resource's blob (base64).",
                        arg_str(c, "path"), arg_str(c, "sandbox"), a->len);
    uri =
        pe_xasprintf("pocketenv://sandbox/%s/archive%s", arg_str(c, "sandbox"), arg_str(c, "path"));
    c->finish(c, json_pack("{s:[{s:s, s:s}, {s:s, s:{s:s, s:s, s:s}}], s:b}", "content", "type",
                           "text", "text", text, "type", "resource", "resource", "uri", uri,
                           "mimeType", "application/gzip", "blob", b64, "isError", false));
    free(uri);
    free(text);
    free(b64);
    archive_job_free(a);
}

static void download_pushed(pe_mcp_call *c, json_t *out, unsigned status, const char *ename,
                            const char *msg)
{
    const char *uuid = json_string_value(json_object_get(out, "uuid"));
    struct archive_job *a;

    if (status != 200) {
        finish_xrpc_error(c, status, ename, msg);
        return;
    }
    if (uuid == NULL || strlen(uuid) != PE_DAEMON_COPY_UUID_LEN) {
        finish_text(c, true, "dir_download failed: the copy has no id. Try again.");
        return;
    }
    a = pe_xcalloc(1, sizeof(*a));
    memcpy(a->uuid, uuid, PE_DAEMON_COPY_UUID_LEN + 1);
    archive_submit(c, a, download_work, download_after);
}

static void t_dir_download(pe_mcp_call *c)
{
    xcall(c, "io.pocketenv.sandbox.pushDirectory", NULL,
          json_pack("{s:s, s:s}", "sandboxId", arg_str(c, "sandbox"), "directoryPath",
                    arg_str(c, "path")),
          download_pushed);
}

static void upload_work(pe_daemon_job *job, pe_store *s)
{
    struct archive_job *a = job->ud;

    pe_daemon_copy_put(job->d, s, job->did, a->data, a->len, a->uuid, &job->err);
}

static void upload_after(pe_daemon_job *job)
{
    struct archive_job *a = job->ud;
    pe_mcp_call *c = a->c;

    if (job->err.code != PE_OK) {
        finish_text(c, true,
                    "dir_upload failed: %s. Send a tar or tar.gz archive of relative paths, "
                    "base64-encoded.",
                    job->err.msg);
        archive_job_free(a);
        return;
    }
    set_lead(c, "Unpacked the archive into the directory.");
    xcall(c, "io.pocketenv.sandbox.pullDirectory", NULL,
          json_pack("{s:s, s:s, s:s}", "sandboxId", arg_str(c, "sandbox"), "uuid", a->uuid,
                    "directoryPath", arg_str(c, "path")),
          finish_step);
    archive_job_free(a);
}

static void t_dir_upload(pe_mcp_call *c)
{
    const char *b64 = arg_str(c, "archive");
    size_t len = strlen(b64), got = 0;
    struct archive_job *a = pe_xcalloc(1, sizeof(*a));

    a->data = pe_xmalloc(len / 4 * 3 + 3);
    if (sodium_base642bin((unsigned char *)a->data, len / 4 * 3 + 3, b64, len, " \n\r", &got, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        got == 0) {
        archive_job_free(a);
        finish_text(c, true,
                    "dir_upload: archive is not base64 (standard alphabet, with padding). Encode "
                    "the tar.gz file's bytes with base64 and call again.");
        return;
    }
    a->len = got;
    archive_submit(c, a, upload_work, upload_after);
}

/* ---- snapshots: a whole sandbox kept, to make copies from ---- */

static void t_snapshot_create(pe_mcp_call *c)
{
    set_lead(c, "Snapshot taken (sandbox_create with base snapshot:NAME starts a copy of it):");
    xcall(c, "io.pocketenv.sandbox.createSnapshot", id_param(c, "id"),
          json_pack("{s:s, s:O*}", "name", arg_str(c, "name"), "ttl",
                    json_object_get(c->args, "ttl")),
          finish_step);
}

static void t_snapshot_list(pe_mcp_call *c)
{
    set_lead(c, "Your snapshots, newest first:");
    xcall(c, "io.pocketenv.sandbox.getSnapshots", NULL, NULL, finish_step);
}

/* A snapshot by name or id: the snapshot methods take either as id. */
static json_t *snapshot_param(pe_mcp_call *c)
{
    return json_pack("{s:s}", "id", arg_str(c, "snapshot"));
}

static void t_snapshot_get(pe_mcp_call *c)
{
    set_lead(c, "The snapshot (sizeBytes: its own files; expiresAt: when it is removed):");
    xcall(c, "io.pocketenv.sandbox.getSnapshot", snapshot_param(c), NULL, finish_step);
}

static void t_snapshot_delete(pe_mcp_call *c)
{
    set_lead(c, "Snapshot deleted (sandboxes made from it keep their files):");
    xcall(c, "io.pocketenv.sandbox.deleteSnapshot", snapshot_param(c), NULL, finish_step);
}

static void t_snapshot_restore(pe_mcp_call *c)
{
    set_lead(c, "The sandbox's files are back as they were in the snapshot:");
    xcall(c, "io.pocketenv.sandbox.restoreSnapshot", id_param(c, "id"),
          json_pack("{s:s}", "snapshot", arg_str(c, "snapshot")), finish_step);
}

static void t_sandbox_fork(pe_mcp_call *c)
{
    json_t *n = json_object_get(c->args, "count");

    set_lead(c, "Forked (the copies start in the background; sandbox_get shows their status):");
    xcall(c, "io.pocketenv.sandbox.forkSandbox", id_param(c, "id"),
          json_pack("{s:I}", "count", n ? json_integer_value(n) : (json_int_t)1), finish_step);
}

/* ---- idle policies: what happens to a sandbox nobody uses ---- */

static void t_idle_get(pe_mcp_call *c)
{
    set_lead(c, "Idle policy (effectiveTimeout: seconds without activity before the action):");
    xcall(c, "io.pocketenv.sandbox.getIdlePolicy", id_param(c, "id"), NULL, finish_step);
}

static void t_idle_set(pe_mcp_call *c)
{
    json_t *body = json_pack("{s:s}", "action", arg_str(c, "action"));
    json_t *t = json_object_get(c->args, "timeout");

    if (t)
        json_object_set(body, "timeout", t);
    set_lead(c, "Idle policy set:");
    xcall(c, "io.pocketenv.sandbox.putIdlePolicy", id_param(c, "id"), body, finish_step);
}

/* ---- the table ---- */

#define SANDBOX_PROP                                                                               \
    "\"sandbox\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The sandbox's name " \
    "or id, as sandbox_list shows them.\"}"

#define SNAPSHOT_PROP                                                                              \
    "\"snapshot\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 63, "                   \
    "\"description\": \"The snapshot's name or id, as snapshot_list shows them.\"}"

static const pe_mcp_tool tools[] = {
    {"sandbox_templates",
     "List the templates (base images) a sandbox can be created from, with their ids. Use one of "
     "these ids as sandbox_create's base.",
     "{\"type\": \"object\", \"properties\": {}, \"additionalProperties\": false}", t_templates},
    {"sandbox_create",
     "Create a sandbox: an isolated Linux machine of your own, made from a template (see "
     "sandbox_templates). By default waits until it is RUNNING (sending progress notifications), "
     "so exec and the file tools work right away. Returns its name and id.",
     "{\"type\": \"object\", \"required\": [\"base\"], \"additionalProperties\": false, "
     "\"properties\": {\"base\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The "
     "template's id, e.g. from sandbox_templates, or snapshot:NAME for a copy of one of your "
     "snapshots (snapshot_list).\"}, \"name\": {\"type\": \"string\", "
     "\"minLength\": 1, \"description\": \"A name for it (letters, digits, dashes); one is made up "
     "when left out.\"}, \"description\": {\"type\": \"string\"}, \"wait\": {\"type\": "
     "\"boolean\", \"description\": \"Wait until it runs (default true).\"}}}",
     t_create},
    {"sandbox_list",
     "List your sandboxes with their names, ids and status (RUNNING, STOPPED, ...).",
     "{\"type\": \"object\", \"properties\": {}, \"additionalProperties\": false}", t_list},
    {"sandbox_get", "Show one sandbox: its status, resources and settings.",
     "{\"type\": \"object\", \"required\": [\"sandbox\"], \"additionalProperties\": false, "
     "\"properties\": {" SANDBOX_PROP "}}",
     t_get},
    {"sandbox_start", "Start a stopped sandbox. Its files are as they were when it stopped.",
     "{\"type\": \"object\", \"required\": [\"sandbox\"], \"additionalProperties\": false, "
     "\"properties\": {" SANDBOX_PROP "}}",
     t_start},
    {"sandbox_stop",
     "Stop a running sandbox: its processes end, its files are kept. sandbox_start resumes it.",
     "{\"type\": \"object\", \"required\": [\"sandbox\"], \"additionalProperties\": false, "
     "\"properties\": {" SANDBOX_PROP "}}",
     t_stop},
    {"sandbox_delete", "Delete a sandbox and all its files, for good.",
     "{\"type\": \"object\", \"required\": [\"sandbox\"], \"additionalProperties\": false, "
     "\"properties\": {" SANDBOX_PROP "}}",
     t_delete},
    {"exec",
     "Run a shell command (/bin/sh -c) in a running sandbox and wait for it to end. Returns the "
     "exit code, stdout and stderr; a nonzero exit code is reported as an error. Long output is "
     "paged: the answer says how to read the rest with read_output. For servers or anything that "
     "does not end, use service_start instead.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"command\"], \"additionalProperties\": "
     "false, \"properties\": {" SANDBOX_PROP ", \"command\": {\"type\": \"string\", \"minLength\": "
     "1, \"description\": \"The command line, run by /bin/sh -c in the sandbox's environment.\"}, "
     "\"timeout\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 3600, \"description\": "
     "\"Kill the command after this many seconds (the daemon's own limit applies too).\"}}}",
     t_exec},
    {"read_output",
     "Read more of a long exec output, from a byte offset, as the exec answer told you.",
     "{\"type\": \"object\", \"required\": [\"output_id\", \"stream\", \"offset\"], "
     "\"additionalProperties\": false, \"properties\": {\"output_id\": {\"type\": \"string\"}, "
     "\"stream\": {\"type\": \"string\", \"enum\": [\"stdout\", \"stderr\"]}, \"offset\": "
     "{\"type\": \"integer\", \"minimum\": 0}}}",
     t_read_output},
    {"service_start",
     "Start a long-running command in the background (a server, a watcher, a build): it keeps "
     "running after this call returns and is restarted if it fails. Read its output later with "
     "service_logs.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"name\", \"command\"], "
     "\"additionalProperties\": false, \"properties\": {" SANDBOX_PROP
     ", \"name\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 63, \"description\": "
     "\"A name for it, unique in the sandbox.\"}, \"command\": {\"type\": \"string\", "
     "\"minLength\": 1}}}",
     t_service_start},
    {"service_logs", "Read the latest output (stdout and stderr) of a background command.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"name\"], \"additionalProperties\": "
     "false, \"properties\": {" SANDBOX_PROP ", \"name\": {\"type\": \"string\", \"minLength\": "
     "1}}}",
     t_service_by_name},
    {"service_stop", "Stop a background command and forget it.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"name\"], \"additionalProperties\": "
     "false, \"properties\": {" SANDBOX_PROP ", \"name\": {\"type\": \"string\", \"minLength\": "
     "1}}}",
     t_service_by_name},
    {"file_read",
     "Read a file of a running sandbox as text, from a byte offset (bytes that are not UTF-8 show "
     "as U+FFFD). A long file is paged: the answer says the offset to read next.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"path\"], \"additionalProperties\": "
     "false, \"properties\": {" SANDBOX_PROP ", \"path\": {\"type\": \"string\", \"minLength\": "
     "1, \"description\": \"Absolute, or relative to the sandbox's working directory.\"}, "
     "\"offset\": {\"type\": \"integer\", \"minimum\": 0}, \"length\": {\"type\": \"integer\", "
     "\"minimum\": 1, \"maximum\": 262144}}}",
     t_file_read},
    {"file_write",
     "Write a text file in a running sandbox (directories are made as needed), replacing it, or "
     "appending with append: true. At most 64 KiB per call: write larger files in parts with "
     "append.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"path\", \"content\"], "
     "\"additionalProperties\": false, \"properties\": {" SANDBOX_PROP
     ", \"path\": {\"type\": \"string\", \"minLength\": 1}, \"content\": {\"type\": \"string\"}, "
     "\"append\": {\"type\": \"boolean\"}}}",
     t_file_write},
    {"file_list", "List a directory of a running sandbox (ls -la).",
     "{\"type\": \"object\", \"required\": [\"sandbox\"], \"additionalProperties\": false, "
     "\"properties\": {" SANDBOX_PROP ", \"path\": {\"type\": \"string\", \"minLength\": 1, "
     "\"description\": \"Default: the working directory.\"}}}",
     t_file_list},
    {"file_remove", "Remove a file, or a directory with recursive: true, in a running sandbox.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"path\"], \"additionalProperties\": "
     "false, \"properties\": {" SANDBOX_PROP ", \"path\": {\"type\": \"string\", \"minLength\": "
     "1}, \"recursive\": {\"type\": \"boolean\"}}}",
     t_file_remove},
    {"env_set",
     "Set an environment variable for a sandbox's commands; with secret: true the value is "
     "sealed and never shown again (use this for API keys and passwords).",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"name\", \"value\"], "
     "\"additionalProperties\": false, \"properties\": {" SANDBOX_PROP
     ", \"name\": {\"type\": \"string\", \"minLength\": 1}, \"value\": {\"type\": \"string\"}, "
     "\"secret\": {\"type\": \"boolean\"}}}",
     t_env_set},
    {"dir_download",
     "Download a directory of a sandbox as a tar.gz archive: the result embeds it as a resource "
     "(base64 blob, application/gzip). At most 4 MiB compressed; for larger trees download "
     "subdirectories, or use exec to pack what you need.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"path\"], \"additionalProperties\": "
     "false, \"properties\": {" SANDBOX_PROP
     ", \"path\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The directory, an "
     "absolute path in the sandbox.\"}}}",
     t_dir_download},
    {"dir_upload",
     "Upload a tar or tar.gz archive (base64) into a directory of a sandbox, which is made if "
     "needed; the archive's files replace those of the same name. Paths in the archive must be "
     "relative. At most 192 KiB of archive per call.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"path\", \"archive\"], "
     "\"additionalProperties\": false, \"properties\": {" SANDBOX_PROP
     ", \"path\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The directory to "
     "unpack into, an absolute path in the sandbox.\"}, \"archive\": {\"type\": \"string\", "
     "\"minLength\": 4, \"description\": \"The archive's bytes, base64-encoded.\"}}}",
     t_dir_upload},
    {"backup_create",
     "Keep a copy of a directory of a sandbox (a backup; kept 3 days), to restore it later, e.g. "
     "before a risky change. Returns the backup's id.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"directory\"], "
     "\"additionalProperties\": false, \"properties\": {" SANDBOX_PROP
     ", \"directory\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"An "
     "absolute path in the sandbox.\"}, \"description\": {\"type\": \"string\"}}}",
     t_backup_create},
    {"backup_list", "List the backups of a sandbox, newest first, with their ids.",
     "{\"type\": \"object\", \"required\": [\"sandbox\"], \"additionalProperties\": false, "
     "\"properties\": {" SANDBOX_PROP "}}",
     t_backup_list},
    {"backup_restore",
     "Put a directory back as it was in a backup (backup_list shows the ids). What changed in it "
     "since is lost.",
     "{\"type\": \"object\", \"required\": [\"backup_id\"], \"additionalProperties\": "
     "false, \"properties\": {\"backup_id\": {\"type\": \"string\", \"minLength\": 1}}}",
     t_backup_restore},
    {"snapshot_create",
     "Keep a whole sandbox's files as a named snapshot (kept 7 days), e.g. before a risky "
     "change; sandbox_create with base snapshot:NAME starts a new sandbox from it.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"name\"], "
     "\"additionalProperties\": false, \"properties\": {" SANDBOX_PROP
     ", \"name\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 63}, \"ttl\": "
     "{\"type\": \"integer\", \"minimum\": 1, \"maximum\": 31536000, \"description\": "
     "\"Seconds to keep it (default 7 days).\"}}}",
     t_snapshot_create},
    {"snapshot_list", "List your snapshots, newest first, with their names and sizes.",
     "{\"type\": \"object\", \"properties\": {}, \"additionalProperties\": false}",
     t_snapshot_list},
    {"snapshot_get",
     "Show one of your snapshots: the sandbox it came from, its own size on disk, how long the "
     "sandbox stayed frozen while it was taken, and when it expires.",
     "{\"type\": \"object\", \"required\": [\"snapshot\"], \"additionalProperties\": "
     "false, \"properties\": {" SNAPSHOT_PROP "}}",
     t_snapshot_get},
    {"snapshot_delete",
     "Delete one of your snapshots for good, returning its disk space. Sandboxes already made "
     "from it are not touched.",
     "{\"type\": \"object\", \"required\": [\"snapshot\"], \"additionalProperties\": "
     "false, \"properties\": {" SNAPSHOT_PROP "}}",
     t_snapshot_delete},
    {"snapshot_restore",
     "Put a sandbox's files back as they were in one of its own snapshots, in place (what it "
     "wrote since is lost). Only where its provider can (Blaxel, Sprites); elsewhere make a new "
     "sandbox from the snapshot with sandbox_create and base snapshot:NAME.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"snapshot\"], "
     "\"additionalProperties\": false, \"properties\": {" SANDBOX_PROP ", " SNAPSHOT_PROP "}}",
     t_snapshot_restore},
    {"sandbox_fork",
     "Make count copies of a sandbox (running or stopped), each an independent sandbox on its "
     "own copy of the files; returns their ids at once.",
     "{\"type\": \"object\", \"required\": [\"sandbox\"], \"additionalProperties\": "
     "false, \"properties\": {" SANDBOX_PROP ", \"count\": {\"type\": \"integer\", "
     "\"minimum\": 1, \"maximum\": 100}}}",
     t_sandbox_fork},
    {"idle_policy_get",
     "Show what happens to a sandbox when nobody uses it (no exec, terminal or preview traffic): "
     "its action (stop, pause or snapshot-then-stop) and after how many idle seconds.",
     "{\"type\": \"object\", \"required\": [\"sandbox\"], \"additionalProperties\": false, "
     "\"properties\": {" SANDBOX_PROP "}}",
     t_idle_get},
    {"idle_policy_set",
     "Choose what happens to a sandbox once idle for timeout seconds: stop it (files kept), "
     "pause it (processes frozen, memory kept; the next exec, terminal or preview request "
     "resumes it) or snapshot-then-stop (a snapshot named <name>-idle-<time>, then stop).",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"action\"], "
     "\"additionalProperties\": false, \"properties\": {" SANDBOX_PROP
     ", \"action\": {\"type\": \"string\", \"enum\": [\"stop\", \"pause\", "
     "\"snapshot-then-stop\"]}, \"timeout\": {\"type\": \"integer\", \"minimum\": 0, "
     "\"maximum\": 2592000, \"description\": \"Idle seconds before the action; 0: the "
     "daemon's default.\"}}}",
     t_idle_set},
    {"port_expose",
     "Expose a port of a sandbox and get its preview URL, to open a web server running there.",
     "{\"type\": \"object\", \"required\": [\"sandbox\", \"port\"], \"additionalProperties\": "
     "false, \"properties\": {" SANDBOX_PROP ", \"port\": {\"type\": \"integer\", \"minimum\": "
     "1025, \"maximum\": 65535}}}",
     t_port_expose},
};

#define N_TOOLS (sizeof(tools) / sizeof(tools[0]))

static json_t *schema_of(const pe_mcp_tool *t)
{
    json_error_t je;
    json_t *s = json_loads(t->schema, 0, &je);

    if (s == NULL) /* a broken literal above: caught by the tests' tools/list */
        pe_log_error("mcp: tool %s: schema: %s", t->name, je.text);
    return s ? s : json_object();
}

json_t *pe__mcp_tools_list(void)
{
    json_t *arr = json_array();

    for (size_t i = 0; i < N_TOOLS; i++)
        json_array_append_new(arr,
                              json_pack("{s:s, s:s, s:o}", "name", tools[i].name, "description",
                                        tools[i].description, "inputSchema", schema_of(&tools[i])));
    return json_pack("{s:o}", "tools", arr);
}

/* The arguments against the tool's schema (the subset the table uses:
 * object, required, additionalProperties false, string / integer /
 * boolean, minLength, maxLength, minimum, maximum, enum). A message for
 * the model, or NULL when they fit. */
static char *check_args(const pe_mcp_tool *t, json_t *args)
{
    json_t *schema = schema_of(t), *props = json_object_get(schema, "properties"), *v, *p;
    const char *key;
    char *msg = NULL;
    size_t i;

    json_array_foreach(json_object_get(schema, "required"), i, v)
    {
        if (!json_object_get(args, json_string_value(v))) {
            msg = pe_xasprintf("missing required argument \"%s\"", json_string_value(v));
            goto out;
        }
    }
    json_object_foreach(args, key, v)
    {
        const char *type;
        p = json_object_get(props, key);
        if (p == NULL) {
            msg = pe_xasprintf("unknown argument \"%s\"", key);
            goto out;
        }
        type = json_string_value(json_object_get(p, "type"));
        if (!strcmp(type, "string")) {
            size_t len = json_string_length(v);
            json_t *en = json_object_get(p, "enum"), *e;
            if (!json_is_string(v)) {
                msg = pe_xasprintf("\"%s\" must be a string", key);
                goto out;
            }
            if (strlen(json_string_value(v)) != len || len > ARG_MAX_BYTES) {
                msg = pe_xasprintf("\"%s\" must be text without NUL, at most %d bytes", key,
                                   ARG_MAX_BYTES);
                goto out;
            }
            if ((json_integer_value(json_object_get(p, "minLength")) > (json_int_t)len) ||
                (json_object_get(p, "maxLength") &&
                 json_integer_value(json_object_get(p, "maxLength")) < (json_int_t)len)) {
                msg = pe_xasprintf("\"%s\" has the wrong length (%zu bytes)", key, len);
                goto out;
            }
            if (en) {
                bool ok = false;
                size_t k;
                json_array_foreach(en, k, e) ok = ok || json_equal(e, v);
                if (!ok) {
                    char *all = json_dumps(en, JSON_COMPACT);
                    msg = pe_xasprintf("\"%s\" must be one of %s", key, all);
                    free(all);
                    goto out;
                }
            }
        } else if (!strcmp(type, "integer")) {
            json_t *mn = json_object_get(p, "minimum"), *mx = json_object_get(p, "maximum");
            if (!json_is_integer(v)) {
                msg = pe_xasprintf("\"%s\" must be an integer", key);
                goto out;
            }
            if ((mn && json_integer_value(v) < json_integer_value(mn)) ||
                (mx && json_integer_value(v) > json_integer_value(mx))) {
                msg = pe_xasprintf("\"%s\" must be between %lld and %lld", key,
                                   mn ? (long long)json_integer_value(mn) : 0LL,
                                   mx ? (long long)json_integer_value(mx) : (long long)INT64_MAX);
                goto out;
            }
        } else if (!strcmp(type, "boolean") && !json_is_boolean(v)) {
            msg = pe_xasprintf("\"%s\" must be true or false", key);
            goto out;
        }
    }
out:
    json_decref(schema);
    return msg;
}

int pe__mcp_tool_start(pe_mcp_call *c, const char *name)
{
    char *msg;

    for (size_t i = 0; i < N_TOOLS; i++) {
        if (strcmp(tools[i].name, name) != 0)
            continue;
        c->tool = &tools[i];
        c->state = json_object();
        if (!json_is_object(c->args)) {
            json_decref(c->args);
            c->args = json_object();
        }
        msg = check_args(&tools[i], c->args);
        if (msg) {
            finish_text(c, true,
                        "%s: bad arguments: %s. Fix them (see the tool's input schema) "
                        "and call again.",
                        name, msg);
            free(msg);
            return 0;
        }
        tools[i].start(c);
        return 0;
    }
    return -1;
}
