/* XRPC client of the CLI: see api.h. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
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

/* ---- progress ---- */

/* The progress line of a long transfer, drawn on stderr only when it is a
 * terminal, so that scripts and agents get clean output:
 *   sent     [##########          ]  52%  1.3 MiB / 2.5 MiB   size known
 *   received 1.3 MiB                                          size unknown
 * The line is redrawn at most every PROGRESS_INTERVAL_MS, and once more when
 * the transfer completes so that 100% is seen. Hand-written: Debian has no
 * C library for a progress bar and libcurl's own meter is a table. */
#define PROGRESS_INTERVAL_MS 100

static const char *const size_units[] = {"B", "KiB", "MiB", "GiB", "TiB"};

/* The unit bytes reads best in: the largest that keeps the number >= 1. */
static int size_unit(int64_t bytes)
{
    int u = 0;

    while (u + 1 < (int)PE_ARRAY_LEN(size_units) && bytes >= (int64_t)1 << (10 * (u + 1)))
        u++;
    return u;
}

static void format_size(char *out, size_t n, int64_t bytes, int unit)
{
    if (unit == 0)
        snprintf(out, n, "%lld B", (long long)bytes);
    else
        snprintf(out, n, "%.1f %s", (double)bytes / (double)((int64_t)1 << (10 * unit)),
                 size_units[unit]);
}

static void progress_draw(const pe_progress *p, int64_t now, int64_t total)
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
    fflush(stderr);
}

void pe_progress_init(pe_progress *p, const char *what, bool quiet)
{
    p->what = what;
    p->on = !quiet && isatty(STDERR_FILENO);
    p->drawn = false;
    p->last_ms = 0;
    p->last_now = -1;
}

void pe_progress_show(pe_progress *p, int64_t now, int64_t total)
{
    int64_t ms = pe_monotonic_ms();

    if (!p->on || (now == 0 && total <= 0) || now == p->last_now)
        return; /* nothing to show yet, or nothing new */
    if (p->last_now >= 0 && ms - p->last_ms < PROGRESS_INTERVAL_MS && !(total > 0 && now >= total))
        return;
    progress_draw(p, now, total);
    p->drawn = true;
    p->last_ms = ms;
    p->last_now = now;
}

void pe_progress_end(pe_progress *p)
{
    if (p->on && p->drawn)
        fputs("\r\033[K", stderr);
    p->drawn = false;
}

/* ---- streams to and from raw routes ---- */

#define ERROR_ANSWER_MAX 65536

/* One raw transfer on its own thread: curl_easy_perform blocks, and the
 * archive on the other side of the pipe is written (or read) by the
 * caller meanwhile; the pipe's buffer is the backpressure both ways. */
struct pe_api_stream {
    pe_api *a;
    pthread_t thread;
    bool upload;
    int fd; /* the thread's end of the pipe; closed when the transfer ends */
    _Atomic bool abort;
    char *url, *auth;
    struct curl_slist *headers;
    char curl_err[CURL_ERROR_SIZE];
    CURLcode rc;
    buf answer; /* upload: the JSON answer; download: an error's answer */
    pe_progress *prog;
    bool started; /* the thread runs */
};

static size_t stream_read(char *p, size_t size, size_t n, void *ud)
{
    pe_api_stream *s = ud;
    ssize_t got;

    do
        got = read(s->fd, p, size * n);
    while (got < 0 && errno == EINTR);
    if (got < 0 || s->abort)
        return CURL_READFUNC_ABORT;
    return (size_t)got;
}

static bool answer_ok(pe_api_stream *s)
{
    long status = 0;

    curl_easy_getinfo(s->a->curl, CURLINFO_RESPONSE_CODE, &status);
    return status >= 200 && status < 300;
}

static size_t stream_write(char *p, size_t size, size_t n, void *ud)
{
    pe_api_stream *s = ud;
    size_t len = size * n, done = 0;

    if (s->upload || !answer_ok(s)) { /* an answer to keep, not the archive */
        if (s->answer.len + len > ERROR_ANSWER_MAX)
            return 0;
        s->answer.data = pe_xrealloc(s->answer.data, s->answer.len + len + 1);
        memcpy(s->answer.data + s->answer.len, p, len);
        s->answer.len += len;
        s->answer.data[s->answer.len] = '\0';
        return len;
    }
    while (done < len) {
        ssize_t w = write(s->fd, p + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) /* the reader gave up: its error is the one to tell */
            return 0;
        done += (size_t)w;
    }
    return len;
}

static int stream_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                           curl_off_t ulnow)
{
    pe_api_stream *s = ud;

    if (s->prog && answer_ok(s))
        pe_progress_show(s->prog, dlnow, dltotal);
    return 0;
}

static void *stream_main(void *ud)
{
    pe_api_stream *s = ud;

    s->rc = curl_easy_perform(s->a->curl);
    close(pe_steal_fd(&s->fd)); /* EOF (download) or EPIPE (upload) for the caller */
    return NULL;
}

static int stream_begin(pe_api *a, const char *path, bool upload, pe_progress *prog,
                        pe_api_stream **out, int *fd, pe_err *err)
{
    pe_api_stream *s = pe_xcalloc(1, sizeof(*s));
    CURL *c = a->curl;
    int p[2];

    if (pipe2(p, O_CLOEXEC) < 0) {
        free(s);
        return pe_err_sys(err, "pipe");
    }
    s->a = a;
    s->upload = upload;
    s->prog = prog;
    s->fd = upload ? p[0] : p[1];
    *fd = upload ? p[1] : p[0];
    s->url = pe_xasprintf("%s%s", a->url, path);
    s->auth = prepare(a, s->url, &s->answer, s->curl_err, &s->headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    if (upload) {
        s->headers = curl_slist_append(s->headers, "Content-Type: application/gzip");
        s->headers = curl_slist_append(s->headers, "Transfer-Encoding: chunked");
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, stream_read);
        curl_easy_setopt(c, CURLOPT_READDATA, s);
    } else if (prog) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, stream_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, s->headers);
    if (pthread_create(&s->thread, NULL, stream_main, s) != 0) {
        close(*fd);
        pe_api_stream_end(s, NULL, NULL);
        return pe_err_set(err, PE_ESYS, 0, "cannot start a thread");
    }
    s->started = true;
    *out = s;
    return 0;
}

int pe_api_upload_begin(pe_api *a, const char *path, pe_api_stream **s, int *fd, pe_err *err)
{
    return stream_begin(a, path, true, NULL, s, fd, err);
}

int pe_api_download_begin(pe_api *a, const char *path, pe_progress *prog, pe_api_stream **s,
                          int *fd, pe_err *err)
{
    return stream_begin(a, path, false, prog, s, fd, err);
}

void pe_api_stream_abort(pe_api_stream *s)
{
    s->abort = true;
}

static void upload_cut(pe_api *a, pe_err *err)
{
    curl_off_t sent = 0;
    char size[32];

    curl_easy_getinfo(a->curl, CURLINFO_SIZE_UPLOAD_T, &sent);
    format_size(size, sizeof(size), sent, size_unit(sent));
    pe_err_set(err, PE_API_ECUT, 0,
               "the daemon stopped taking the upload after %s: the copy is larger than its "
               "--cp-max, or it is shutting down",
               size);
}

int pe_api_stream_end(pe_api_stream *s, json_t **out, pe_err *err)
{
    pe_api *a = s->a;
    int r = 0;

    if (out)
        *out = NULL;
    if (s->started) {
        pthread_join(s->thread, NULL);
        r = performed(a, s->rc, s->curl_err, s->headers, s->auth, err);
        /* Cut short after the daemon answered (a refusal while the body was
         * still going): its answer says why. */
        if (r < 0 && s->answer.len > 0 &&
            curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &a->status) == CURLE_OK &&
            a->status >= 300)
            r = 0;
        /* Or it stopped reading and closed before its answer could be read
         * (past its cap it cuts the connection): say what that means. */
        else if (r < 0 && s->upload && s->rc == CURLE_SEND_ERROR)
            upload_cut(a, err);
    } else {
        curl_slist_free_all(s->headers);
        if (s->auth)
            explicit_bzero(s->auth, strlen(s->auth));
    }
    if (!s->started) {
        r = -1;
    } else if (r == 0 && (a->status < 200 || a->status >= 300)) {
        json_t *j = s->answer.len ? json_loadb(s->answer.data, s->answer.len, 0, NULL) : NULL;
        answer_error(a, j, err);
        json_decref(j);
        r = -1;
    } else if (r == 0 && out && s->upload) {
        *out = json_loadb(s->answer.data ? s->answer.data : "", s->answer.len, 0, NULL);
        if (*out == NULL)
            r = pe_err_set(err, PE_EINVAL, 0, "the daemon's answer is not JSON");
    }
    if (s->fd >= 0)
        close(s->fd);
    free(s->answer.data);
    free(s->url);
    free(s->auth);
    free(s);
    return r;
}
