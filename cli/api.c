/* XRPC client of the CLI: see api.h. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "api.h"
#include "core/fs.h"
#include "core/util.h"

#define ANSWER_MAX (64u << 20) /* exec output is capped at 1 MiB per stream */
#define TOKEN_FILE_MAX 65536

typedef struct buf {
    char *data;
    size_t len;
    bool too_big;
} buf;

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    buf *b = ud;
    size_t len = size * n;

    if (b->len + len > ANSWER_MAX) {
        b->too_big = true;
        return 0; /* aborts the transfer */
    }
    b->data = pe_xrealloc(b->data, b->len + len + 1);
    memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = '\0';
    return len;
}

char *pe_api_token_path(void)
{
    const char *home = getenv("HOME");

    return home && *home ? pe_xasprintf("%s/.pocketenv/token.json", home) : NULL;
}

static char *read_token(pe_err *err)
{
    const char *env = getenv("POCKETENV_TOKEN");
    cleanup_free char *path = NULL;
    char *text = NULL;
    json_t *j;
    char *tok = NULL;

    if (env && *env)
        return pe_xstrdup(env);
    path = pe_api_token_path();
    if (path == NULL || pe_fs_read_file(path, TOKEN_FILE_MAX, &text, NULL, err) < 0) {
        if (path == NULL || err->errnum == ENOENT)
            pe_err_clear(err); /* else there, but unreadable: say so */
        return NULL;
    }
    j = json_loads(text, 0, NULL);
    free(text);
    if (json_is_string(json_object_get(j, "token")))
        tok = pe_xstrdup(json_string_value(json_object_get(j, "token")));
    else
        pe_err_set(err, PE_API_ELOGIN, 0, "%s holds no token", path);
    json_decref(j);
    return tok;
}

int pe_api_open(pe_api *a, bool need_token, pe_err *err)
{
    const char *url = getenv("POCKETENV_API_URL");
    size_t n;

    memset(a, 0, sizeof(*a));
    a->url = pe_xstrdup(url && *url ? url : PE_API_DEFAULT_URL);
    n = strlen(a->url);
    while (n > 0 && a->url[n - 1] == '/')
        a->url[--n] = '\0';
    pe_err_clear(err);
    a->token = read_token(err);
    if (need_token && a->token == NULL) {
        pe_api_close(a);
        if (err->msg[0]) {
            char why[sizeof(err->msg)];
            snprintf(why, sizeof(why), "%s", err->msg);
            return pe_err_set(err, PE_API_ELOGIN, 0,
                              "not logged in: %s; run 'pocketenv login --token TOKEN' (or set "
                              "POCKETENV_TOKEN)",
                              why);
        }
        return pe_err_set(err, PE_API_ELOGIN, 0,
                          "not logged in: run 'pocketenv login --token TOKEN' (or set "
                          "POCKETENV_TOKEN)");
    }
    pe_err_clear(err);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || (a->curl = curl_easy_init()) == NULL) {
        pe_api_close(a);
        return pe_err_set(err, PE_ESYS, 0, "cannot initialise libcurl");
    }
    return 0;
}

void pe_api_close(pe_api *a)
{
    if (a->curl)
        curl_easy_cleanup(a->curl);
    free(a->url);
    if (a->token) {
        explicit_bzero(a->token, strlen(a->token));
        free(a->token);
    }
    memset(a, 0, sizeof(*a));
}

/* "?k=v&..." with each value escaped. */
static char *query_string(CURL *c, json_t *params)
{
    const char *k;
    json_t *v;
    size_t len = 0;
    char *q = pe_xstrdup("");

    json_object_foreach(params, k, v)
    {
        char num[32], *ek, *ev, *next;
        const char *s = num;

        if (json_is_string(v))
            s = json_string_value(v);
        else if (json_is_integer(v))
            snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
        else if (json_is_boolean(v))
            s = json_is_true(v) ? "true" : "false";
        else
            continue;
        ek = curl_easy_escape(c, k, 0);
        ev = curl_easy_escape(c, s, 0);
        next = pe_xasprintf("%s%c%s=%s", q, len ? '&' : '?', ek, ev);
        curl_free(ek);
        curl_free(ev);
        free(q);
        q = next;
        len = strlen(q);
    }
    return q;
}

/* err from the XRPC error answer j (a->status set), in the words a user
 * acts on when the token is missing, refused or expired. */
static void answer_error(pe_api *a, json_t *j, pe_err *err)
{
    const char *name = json_string_value(json_object_get(j, "error"));
    const char *msg = json_string_value(json_object_get(j, "message"));
    bool expired = name && strcmp(name, "ExpiredToken") == 0;

    snprintf(a->error_name, sizeof(a->error_name), "%s", name ? name : "");
    pe_err_set(err, PE_API_EHTTP, 0, "%s", msg ? msg : name ? name : "request failed");
    if (expired)
        pe_err_prefix(err, "your token has expired; log in again");
    else if (a->status == 401)
        pe_err_prefix(err, "not logged in (%s)", a->token ? "token refused" : "no token");
}

/* What every request starts with: a fresh handle for url, the answer into
 * b, libcurl's error text into curl_err, and the token's header (returned,
 * for the caller to wipe and free) in *headers. */
static char *prepare(pe_api *a, const char *url, buf *b, char *curl_err,
                     struct curl_slist **headers)
{
    CURL *c = a->curl;
    char *auth = a->token ? pe_xasprintf("Authorization: Bearer %s", a->token) : NULL;

    a->status = 0;
    a->error_name[0] = '\0';
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (auth)
        *headers = curl_slist_append(*headers, auth);
    return auth;
}

/* After the request: free its headers, wipe the token's, and set err if
 * the daemon could not be reached, else a->status. */
static int performed(pe_api *a, CURLcode rc, const char *curl_err, struct curl_slist *headers,
                     char *auth, pe_err *err)
{
    curl_slist_free_all(headers);
    if (auth)
        explicit_bzero(auth, strlen(auth));
    if (rc != CURLE_OK)
        return pe_err_set(err, PE_API_ECONNECT, 0, "cannot reach the Pocketenv daemon at %s: %s",
                          a->url, curl_err[0] ? curl_err : curl_easy_strerror(rc));
    curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &a->status);
    return 0;
}

int pe_api_call(pe_api *a, const char *nsid, json_t *params, json_t *body, json_t **out,
                pe_err *err)
{
    CURL *c = a->curl;
    cleanup_free char *q = params ? query_string(c, params) : pe_xstrdup("");
    cleanup_free char *url = pe_xasprintf("%s/xrpc/%s%s", a->url, nsid, q);
    cleanup_free char *payload = NULL;
    struct curl_slist *headers = NULL;
    char curl_err[CURL_ERROR_SIZE] = "";
    buf b = {0};
    cleanup_free char *auth = prepare(a, url, &b, curl_err, &headers);
    json_t *j = NULL;
    CURLcode rc;
    int r;

    *out = NULL;
    /* exec may run for the daemon's --exec-timeout (300 s by default) */
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 900L);
    if (body) {
        payload = json_dumps(body, JSON_COMPACT);
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    rc = curl_easy_perform(c);
    r = performed(a, rc, curl_err, headers, auth, err);
    if (b.too_big || r < 0) {
        free(b.data);
        if (b.too_big) /* on_data stopped the transfer: not a connection problem */
            return pe_err_set(err, PE_EINVAL, 0, "%s: answer larger than %u MiB", nsid,
                              ANSWER_MAX >> 20);
        return -1;
    }
    if (b.len > 0)
        j = json_loadb(b.data, b.len, 0, NULL);
    free(b.data);
    if (a->status >= 200 && a->status < 300) {
        if (b.len > 0 && j == NULL)
            return pe_err_set(err, PE_EINVAL, 0, "%s: the daemon's answer is not JSON", nsid);
        *out = j;
        return 0;
    }
    answer_error(a, j, err);
    json_decref(j);
    return -1;
}

/* ---- raw routes ---- */

/* The progress line of a raw transfer, drawn on stderr only when it is a
 * terminal, so that scripts and agents get clean output:
 *   sent     [##########          ]  52%  1.3 MiB / 2.5 MiB   size known
 *   received 1.3 MiB                                          size unknown
 * libcurl calls back many times a second; the line is redrawn at most every
 * PROGRESS_INTERVAL_MS, and once more when the transfer completes so that
 * 100% is seen. Hand-written: Debian has no C library for a progress bar and
 * libcurl's own meter is a table, not a line. */
#define PROGRESS_INTERVAL_MS 100

typedef struct progress {
    const char *what; /* "sent" or "received" */
    bool upload;
    int64_t last_ms;     /* when the line was last drawn */
    curl_off_t last_now; /* bytes it showed, -1 before the first */
} progress;

static const char *const size_units[] = {"B", "KiB", "MiB", "GiB", "TiB"};

/* The unit bytes reads best in: the largest that keeps the number >= 1. */
static int size_unit(curl_off_t bytes)
{
    int u = 0;

    while (u + 1 < (int)PE_ARRAY_LEN(size_units) && bytes >= (curl_off_t)1 << (10 * (u + 1)))
        u++;
    return u;
}

static void format_size(char *out, size_t n, curl_off_t bytes, int unit)
{
    if (unit == 0)
        snprintf(out, n, "%lld B", (long long)bytes);
    else
        snprintf(out, n, "%.1f %s", (double)bytes / (double)((curl_off_t)1 << (10 * unit)),
                 size_units[unit]);
}

static void progress_draw(const progress *p, curl_off_t now, curl_off_t total)
{
    struct winsize ws;
    char line[512], done[32], all[32], tail[96];
    int cols = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80;
    /* Never the last column: a terminal that wraps there breaks the \r redraw. */
    int width = cols - 1 < (int)sizeof(line) - 1 ? cols - 1 : (int)sizeof(line) - 1;
    int n, bar, fill;

    if (total <= 0) {
        format_size(done, sizeof(done), now, size_unit(now));
        n = snprintf(line, sizeof(line), "%-8s %s", p->what, done);
    } else {
        /* Both sizes in the total's unit, the first padded to the second's
         * width: the bar keeps one length for the whole transfer. */
        format_size(done, sizeof(done), now, size_unit(total));
        format_size(all, sizeof(all), total, size_unit(total));
        snprintf(tail, sizeof(tail), "]  %3d%%  %*s / %s",
                 now >= total ? 100 : (int)(now * 100 / total), (int)strlen(all), done, all);
        n = snprintf(line, sizeof(line), "%-8s [", p->what);
        bar = width - n - (int)strlen(tail);
        if (bar < 5) { /* too narrow for a bar: the numbers alone */
            n = snprintf(line, sizeof(line), "%-8s %s", p->what, tail + 3);
        } else {
            fill = now >= total ? bar : (int)(now * bar / total);
            memset(line + n, '#', (size_t)fill);
            memset(line + n + fill, ' ', (size_t)(bar - fill));
            n += bar;
            n += snprintf(line + n, sizeof(line) - (size_t)n, "%s", tail);
        }
    }
    fprintf(stderr, "\r%.*s\033[K", n < width ? n : width, line);
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    progress *p = ud;
    curl_off_t total = p->upload ? ultotal : dltotal;
    curl_off_t now = p->upload ? ulnow : dlnow;
    int64_t ms = pe_monotonic_ms();

    if ((now == 0 && total == 0) || now == p->last_now)
        return 0; /* nothing to show yet, or nothing new */
    if (p->last_now >= 0 && ms - p->last_ms < PROGRESS_INTERVAL_MS && !(total > 0 && now >= total))
        return 0;
    progress_draw(p, now, total);
    p->last_ms = ms;
    p->last_now = now;
    return 0;
}

static int raw(pe_api *a, const char *path, const void *data, size_t len, buf *b, pe_err *err)
{
    CURL *c = a->curl;
    cleanup_free char *url = pe_xasprintf("%s%s", a->url, path);
    struct curl_slist *headers = NULL;
    char curl_err[CURL_ERROR_SIZE] = "";
    cleanup_free char *auth = prepare(a, url, b, curl_err, &headers);
    bool tty = isatty(STDERR_FILENO);
    progress prog = {data ? "sent" : "received", data != NULL, 0, -1};
    CURLcode rc;

    if (data) {
        headers = curl_slist_append(headers, "Content-Type: application/gzip");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    if (tty) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, &prog);
    }
    rc = curl_easy_perform(c);
    if (tty)
        fputs("\r\033[K", stderr);
    if (performed(a, rc, curl_err, headers, auth, err) < 0)
        return -1;
    if (a->status >= 200 && a->status < 300)
        return 0;
    {
        json_t *j = b->len ? json_loadb(b->data, b->len, 0, NULL) : NULL;
        answer_error(a, j, err);
        json_decref(j);
    }
    return -1;
}

int pe_api_post_raw(pe_api *a, const char *path, const void *data, size_t len, json_t **out,
                    pe_err *err)
{
    buf b = {0};
    int r = raw(a, path, data ? data : "", len, &b, err);

    *out = NULL;
    if (r == 0) {
        *out = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
        if (*out == NULL)
            r = pe_err_set(err, PE_EINVAL, 0, "%s: the daemon's answer is not JSON", path);
    }
    free(b.data);
    return r;
}

int pe_api_get_raw(pe_api *a, const char *path, char **data, size_t *len, pe_err *err)
{
    buf b = {0};
    int r = raw(a, path, NULL, 0, &b, err);

    if (r < 0) {
        free(b.data);
        return -1;
    }
    *data = b.data;
    *len = b.len;
    return 0;
}
