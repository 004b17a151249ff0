/* Test helper: one AT Protocol OAuth sign-in through lib/auth's client
 * (include/pocketenv/atproto.h), driven by tests/integration/test_atproto.py.
 *
 *   atproto-login [--plc URL] [--allow-http] [--dns IPV4:PORT|off]
 *                 [--connect-to H:P:A:P]... --redirect URI --scope SCOPE HANDLE
 *
 * Starts the sign-in and prints {"authorize_url","did","pds","issuer"}, then
 * reads commands from stdin, one a line, each answered with one JSON line
 * ({"error","message"} on failure):
 *   callback URL      the redirect the browser got: finish the sign-in
 *   callback-raw STATE ISS CODE   the same with the parts given apart
 *   get NSID?QUERY    a DPoP-authenticated GET on the user's PDS
 *   refresh / revoke  the session's tokens
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pocketenv/atproto.h"

#define CONNECT_TO_MAX 16

static void say(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);
    puts(s ? s : "{}");
    fflush(stdout);
    free(s);
    json_decref(v);
}

static void say_err(const pe_err *err)
{
    say(json_pack("{s:i, s:s}", "error", err->code, "message", err->msg));
}

/* The value of key in the URL's query, unescaped (caller frees), or NULL. */
static char *query_param(const char *url, const char *key)
{
    CURLU *u = curl_url();
    char *q = NULL, *found = NULL;
    size_t klen = strlen(key);

    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_QUERY, &q, 0) == CURLUE_OK) {
        for (char *p = q; p && *p && !found;) {
            char *amp = strchr(p, '&');
            size_t n = amp ? (size_t)(amp - p) : strlen(p);
            if (n > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
                int outlen = 0;
                char *v = curl_easy_unescape(NULL, p + klen + 1, (int)(n - klen - 1), &outlen);
                found = v ? strdup(v) : NULL;
                curl_free(v);
            }
            p = amp ? amp + 1 : NULL;
        }
    }
    curl_free(q);
    curl_url_cleanup(u);
    return found;
}

static void session_out(const pe_atproto_session *s)
{
    say(json_pack("{s:b, s:s, s:s, s:b, s:i}", "ok", 1, "sub", s->did, "scope", s->scope,
                  "has_refresh", s->refresh_token != NULL, "expires_in", (int)s->expires_in));
}

static void finish(const pe_atproto_client *c, pe_atproto_login *l, pe_atproto_session *s,
                   const char *state, const char *iss, const char *code)
{
    pe_err err = {0};
    if (pe_atproto_login_finish(c, l, state, iss, code, s, &err) < 0)
        say_err(&err);
    else
        session_out(s);
}

static void command(const pe_atproto_client *c, pe_atproto_login *l, pe_atproto_session *s,
                    char *line)
{
    pe_err err = {0};

    line[strcspn(line, "\r\n")] = '\0';
    if (strncmp(line, "callback ", 9) == 0) {
        char *state = query_param(line + 9, "state"), *iss = query_param(line + 9, "iss"),
             *code = query_param(line + 9, "code");
        finish(c, l, s, state, iss, code);
        free(state);
        free(iss);
        free(code);
    } else if (strncmp(line, "callback-raw ", 13) == 0) {
        char *state = strtok(line + 13, " "), *iss = strtok(NULL, " "), *code = strtok(NULL, " ");
        finish(c, l, s, state, iss, code);
    } else if (strncmp(line, "get ", 4) == 0) {
        long status = 0;
        char *body = NULL;
        if (pe_atproto_pds_get(c, l, s, line + 4, &status, &body, &err) < 0)
            say_err(&err);
        else
            say(json_pack("{s:i, s:s}", "status", (int)status, "body", body));
        free(body);
    } else if (strcmp(line, "refresh") == 0) {
        if (pe_atproto_refresh(c, l, s, &err) < 0)
            say_err(&err);
        else
            session_out(s);
    } else if (strcmp(line, "revoke") == 0) {
        if (pe_atproto_revoke(c, l, s, &err) < 0)
            say_err(&err);
        else
            say(json_pack("{s:b}", "ok", 1));
    } else {
        say(json_pack("{s:i, s:s}", "error", PE_EINVAL, "message", "unknown command"));
    }
}

int main(int argc, char **argv)
{
    const char *connect_to[CONNECT_TO_MAX + 1] = {0};
    /* Private addresses allowed: the tests' servers are on loopback. */
    pe_atproto_client c = {
        .net = {.connect_to = connect_to, .timeout_ms = 10000, .allow_private = true}};
    pe_atproto_session s = {0};
    pe_atproto_login *l = NULL;
    pe_err err = {0};
    char line[8192];
    size_t nconn = 0;
    int i = 1;

    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--allow-http") == 0)
            c.net.allow_http = true;
        else if (strcmp(argv[i], "--deny-private") == 0)
            c.net.allow_private = false;
        else if (strcmp(argv[i], "--plc") == 0)
            c.net.plc_url = argv[++i];
        else if (strcmp(argv[i], "--dns") == 0)
            c.net.dns_server = argv[++i];
        else if (strcmp(argv[i], "--redirect") == 0)
            c.redirect_uri = argv[++i];
        else if (strcmp(argv[i], "--scope") == 0)
            c.scope = argv[++i];
        else if (strcmp(argv[i], "--connect-to") == 0 && nconn < CONNECT_TO_MAX)
            connect_to[nconn++] = argv[++i];
        else
            return 2;
    }
    if (i + 1 != argc || c.redirect_uri == NULL || c.scope == NULL)
        return 2;
    if (pe_atproto_login_start(&c, argv[i], &l, &err) < 0) {
        say_err(&err);
        return 1;
    }
    say(json_pack("{s:s, s:s, s:s, s:s}", "authorize_url", l->authorize_url, "did", l->id.did,
                  "pds", l->id.pds, "issuer", l->as.issuer));
    while (fgets(line, sizeof line, stdin) != NULL)
        command(&c, l, &s, line);
    pe_atproto_session_clear(&s);
    pe_atproto_login_free(l);
    return 0;
}
