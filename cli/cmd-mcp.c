/* `pocketenv mcp`: the daemon's MCP server over stdio, for agents that
 * launch a command rather than call a URL.
 *
 * A relay, not a second server: each JSON-RPC line read from stdin is
 * POSTed to the daemon's /mcp with the user's token (POCKETENV_TOKEN or
 * the login's file, as every API command), and what comes back (a JSON
 * answer, or the events of a stream: progress notifications, then the
 * answer) is written to stdout, one message per line. Messages are relayed
 * each on its own thread, so a long tools/call does not hold up a ping or
 * a cancellation. The session id the daemon gives initialize is sent with
 * every later message; a stream cut short is resumed with Last-Event-ID.
 * After the first resources/subscribe the session's own stream (GET) is
 * followed too, for the updates it carries.
 * At the end of stdin the session is ended (DELETE) and the relay exits.
 * stdout carries protocol messages only; anything else goes to stderr. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/util.h"

#define LINE_MAX_BYTES (1024 * 1024 + 1) /* the daemon takes 1 MiB messages */
#define RESUME_TRIES 5

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static char session_id[128];
static char protocol_version[32];
static char *mcp_url, *auth_header;

static void emit(json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);

    if (text == NULL)
        return;
    pthread_mutex_lock(&out_lock);
    fputs(text, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    free(text);
}

static void emit_error(json_t *id, int code, const char *message)
{
    json_t *e;

    if (id == NULL) /* a notification: nobody to tell but the log */
    {
        fprintf(stderr, "pocketenv mcp: %s\n", message);
        return;
    }
    e = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error", "code", code,
                  "message", message);
    emit(e);
    json_decref(e);
}

/* One exchange with the daemon. */
struct relay {
    json_t *msg, *id; /* id: NULL for a notification or a response */
    bool is_init;
    /* the answer */
    char content_type[96];
    char sid[128];
    char *body; /* JSON answers (bounded) */
    size_t body_len;
    /* server-sent events */
    char *line;
    size_t line_len;
    char *data;
    size_t data_len;
    char last_id[64];
    bool got_answer;
};

static size_t on_header(char *buf, size_t size, size_t n, void *ud)
{
    struct relay *r = ud;
    size_t len = size * n;
    char val[160];

    if (len >= 15 && strncasecmp(buf, "Content-Type:", 13) == 0) {
        snprintf(val, sizeof(val), "%.*s", (int)(len - 13), buf + 13);
        snprintf(r->content_type, sizeof(r->content_type), "%s", val + strspn(val, " "));
    } else if (len > 15 && strncasecmp(buf, "Mcp-Session-Id:", 15) == 0) {
        snprintf(val, sizeof(val), "%.*s", (int)(len - 15), buf + 15);
        snprintf(r->sid, sizeof(r->sid), "%s", val + strspn(val, " "));
        r->sid[strcspn(r->sid, "\r\n")] = '\0';
    }
    return len;
}

static void event_done(struct relay *r)
{
    json_t *m;

    if (r->data_len == 0)
        return;
    m = json_loadb(r->data, r->data_len, 0, NULL);
    if (m) {
        if (json_object_get(m, "method") == NULL && json_object_get(m, "id"))
            r->got_answer = true;
        emit(m);
        json_decref(m);
    }
    r->data_len = 0;
}

static void sse_line(struct relay *r, const char *l, size_t n)
{
    if (n > 0 && l[n - 1] == '\r')
        n--;
    if (n == 0) {
        event_done(r);
        return;
    }
    if (n >= 5 && memcmp(l, "data:", 5) == 0) {
        size_t skip = n > 5 && l[5] == ' ' ? 6 : 5;
        r->data = pe_xrealloc(r->data, r->data_len + (n - skip) + 2);
        if (r->data_len)
            r->data[r->data_len++] = '\n';
        memcpy(r->data + r->data_len, l + skip, n - skip);
        r->data_len += n - skip;
    } else if (n >= 3 && memcmp(l, "id:", 3) == 0) {
        size_t skip = n > 3 && l[3] == ' ' ? 4 : 3;
        snprintf(r->last_id, sizeof(r->last_id), "%.*s", (int)(n - skip), l + skip);
    }
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud)
{
    struct relay *r = ud;
    size_t len = size * n;

    if (strncasecmp(r->content_type, "text/event-stream", 17) == 0) {
        for (size_t i = 0; i < len; i++) {
            if (buf[i] == '\n') {
                sse_line(r, r->line ? r->line : "", r->line_len);
                r->line_len = 0;
                continue;
            }
            if (r->line_len >= LINE_MAX_BYTES * 2)
                return 0; /* an endless line: drop the stream */
            r->line = pe_xrealloc(r->line, r->line_len + 2);
            r->line[r->line_len++] = buf[i];
        }
        return len;
    }
    if (r->body_len + len > LINE_MAX_BYTES * 2)
        return 0;
    r->body = pe_xrealloc(r->body, r->body_len + len + 1);
    memcpy(r->body + r->body_len, buf, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return len;
}

/* POST msg (or GET with Last-Event-ID when resume is set). */
static long exchange(struct relay *r, const char *method, const char *resume, CURLcode *cc)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    char sid[160], pv[64], last[96];
    char *payload = NULL;
    long status = 0;

    if (c == NULL) {
        *cc = CURLE_OUT_OF_MEMORY;
        return 0;
    }
    h = curl_slist_append(h, auth_header);
    h = curl_slist_append(h, "Accept: application/json, text/event-stream");
    pthread_mutex_lock(&state_lock);
    if (session_id[0]) {
        snprintf(sid, sizeof(sid), "Mcp-Session-Id: %s", session_id);
        h = curl_slist_append(h, sid);
    }
    if (protocol_version[0]) {
        snprintf(pv, sizeof(pv), "MCP-Protocol-Version: %s", protocol_version);
        h = curl_slist_append(h, pv);
    }
    pthread_mutex_unlock(&state_lock);
    curl_easy_setopt(c, CURLOPT_URL, mcp_url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    if (resume) {
        snprintf(last, sizeof(last), "Last-Event-ID: %s", resume);
        h = curl_slist_append(h, last);
    } else if (strcmp(method, "POST") == 0) {
        payload = json_dumps(r->msg, JSON_COMPACT);
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload ? payload : "");
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    r->content_type[0] = '\0';
    *cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(payload);
    return status;
}

static void relay_answer(struct relay *r, long status, CURLcode cc)
{
    json_t *m = NULL;
    char msg[256];

    if (strncasecmp(r->content_type, "text/event-stream", 17) == 0) {
        event_done(r); /* a last event without its blank line */
        /* cut before the answer: resume from the last event */
        for (int i = 0; i < RESUME_TRIES && !r->got_answer && r->id && r->last_id[0]; i++) {
            char last[64];
            snprintf(last, sizeof(last), "%s", r->last_id);
            r->line_len = r->data_len = 0;
            status = exchange(r, "GET", last, &cc);
            event_done(r);
        }
        if (!r->got_answer && r->id)
            emit_error(r->id, -32000, "the daemon's stream ended before the answer");
        return;
    }
    if (cc != CURLE_OK) {
        snprintf(msg, sizeof(msg), "cannot reach the pocketenv daemon at %s: %s", mcp_url,
                 curl_easy_strerror(cc));
        emit_error(r->id, -32000, msg);
        return;
    }
    if (status == 202 && r->body_len == 0)
        return;
    if (r->body)
        m = json_loadb(r->body, r->body_len, 0, NULL);
    if (m && json_object_get(m, "jsonrpc")) {
        /* the transport's errors carry no id: give them the request's */
        if (r->id && json_is_null(json_object_get(m, "id")))
            json_object_set(m, "id", r->id);
        if (r->is_init && status == 200) {
            const char *v =
                json_string_value(json_object_get(json_object_get(m, "result"), "protocolVersion"));
            pthread_mutex_lock(&state_lock);
            snprintf(session_id, sizeof(session_id), "%s", r->sid);
            snprintf(protocol_version, sizeof(protocol_version), "%s", v ? v : "");
            pthread_mutex_unlock(&state_lock);
        }
        if (r->id || json_object_get(m, "method"))
            emit(m);
        else if (json_object_get(m, "error"))
            fprintf(stderr, "pocketenv mcp: %s\n",
                    json_string_value(json_object_get(json_object_get(m, "error"), "message")));
    } else {
        snprintf(msg, sizeof(msg), "the pocketenv daemon answered HTTP %ld%s%s", status,
                 m ? ": " : "", m ? json_string_value(json_object_get(m, "message")) ?: "" : "");
        emit_error(r->id, -32000, msg);
    }
    json_decref(m);
}

/* The session's own stream (GET without Last-Event-ID): notifications no
 * request carries, such as resource updates. Opened at the first
 * subscription; reopened when it breaks, a few times in a row at most. */
static void *listen_thread(void *ud)
{
    (void)ud;
    for (int fails = 0; fails < RESUME_TRIES;) {
        struct relay r = {0};
        CURLcode cc = CURLE_OK;
        long status = exchange(&r, "GET", NULL, &cc);

        event_done(&r);
        free(r.body);
        free(r.line);
        free(r.data);
        if (status == 404 || status == 405)
            break; /* the session is gone, or the daemon has no such stream */
        fails = status == 200 ? 0 : fails + 1;
        usleep(200000); /* back off before reconnecting */
    }
    return NULL;
}

static void start_listening(void)
{
    static bool listening;
    pthread_attr_t attr;
    pthread_t t;
    bool start;

    pthread_mutex_lock(&state_lock);
    start = !listening && session_id[0];
    listening = listening || start;
    pthread_mutex_unlock(&state_lock);
    if (!start)
        return;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, listen_thread, NULL) != 0)
        fprintf(stderr, "pocketenv mcp: cannot follow resource updates\n");
    pthread_attr_destroy(&attr);
}

static void *relay_thread(void *ud)
{
    struct relay *r = ud;
    CURLcode cc = CURLE_OK;
    long status = exchange(r, "POST", NULL, &cc);
    const char *method = json_string_value(json_object_get(r->msg, "method"));

    relay_answer(r, status, cc);
    if (status == 200 && method && strcmp(method, "resources/subscribe") == 0)
        start_listening();
    json_decref(r->msg);
    free(r->body);
    free(r->line);
    free(r->data);
    free(r);
    return NULL;
}

static void relay_line(const char *line, size_t len)
{
    json_error_t je;
    json_t *msg = json_loadb(line, len, 0, &je), *id, *method;
    struct relay *r;
    pthread_t t;
    pthread_attr_t attr;

    if (msg == NULL || !json_is_object(msg)) {
        emit_error(json_null(), msg ? -32600 : -32700,
                   msg ? "one JSON-RPC message per line" : "parse error: the line is not JSON");
        json_decref(msg);
        return;
    }
    id = json_object_get(msg, "id");
    method = json_object_get(msg, "method");
    r = pe_xcalloc(1, sizeof(*r));
    r->msg = msg;
    r->id = json_is_string(method) && id ? id : NULL;
    r->is_init = json_is_string(method) && strcmp(json_string_value(method), "initialize") == 0;
    if (r->is_init) { /* the session id must be known before anything else goes */
        relay_thread(r);
        return;
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, relay_thread, r) != 0)
        relay_thread(r);
    pthread_attr_destroy(&attr);
}

static int usage(void)
{
    fputs("usage: pocketenv mcp\n"
          "Serve the daemon's MCP tools (sandboxes for an agent) over stdin/stdout, as the\n"
          "user logged in (pocketenv login, or $POCKETENV_TOKEN) at $POCKETENV_API_URL.\n"
          "An agent's configuration runs it as a command; see docs/mcp.md.\n",
          stderr);
    return PE_CLI_EXIT_USAGE;
}

int pe_cmd_mcp(int argc, char **argv)
{
    pe_api a = {0};
    pe_err err = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    (void)argv;
    if (argc != 1)
        return usage();
    if (pe_api_open(&a, true, &err) < 0)
        return pe_cli_fail(&err);
    mcp_url = pe_xasprintf("%s/mcp", a.url);
    auth_header = pe_xasprintf("Authorization: Bearer %s", a.token);
    pe_api_close(&a);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    while ((n = getline(&line, &cap, stdin)) > 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n == 0)
            continue;
        if ((size_t)n > LINE_MAX_BYTES) {
            emit_error(json_null(), -32600, "message too large (at most 1 MiB)");
            continue;
        }
        relay_line(line, (size_t)n);
    }
    free(line);
    /* stdin closed: the agent is done. End the session; calls still
     * running end with it. */
    pthread_mutex_lock(&state_lock);
    if (session_id[0]) {
        struct relay r = {0};
        CURLcode cc;
        pthread_mutex_unlock(&state_lock);
        exchange(&r, "DELETE", NULL, &cc);
        free(r.body);
    } else {
        pthread_mutex_unlock(&state_lock);
    }
    fflush(stdout);
    _exit(0); /* relays still waiting on the daemon are abandoned with the session */
}
