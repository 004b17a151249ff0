/* HTTP calls to a provider's API: deadlines, retries, error mapping
 * (provider-internal.h).
 *
 * One curl easy handle per call: calls run on worker threads at the same
 * time and a handle is not shareable; connection reuse matters less than
 * never blocking one call behind another. The credential travels only in
 * a header built here; curl's own error text can name the URL (never the
 * header), and what reaches pe_err is scrubbed of the key anyway, in case
 * a provider echoes it back. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <sodium.h>

#include "core/util.h"
#include "provider-internal.h"

#define RETRY_MAX 4
#define RETRY_AFTER_MAX_MS 5000

typedef struct sink {
    const pe__preq *rq;
    char *buf;
    size_t len, cap, max;
    bool toobig, stopped;
    char ctype[128];
    long status;
    int64_t head_deadline; /* streams: the answer's head must come by then */
    bool head_late;
    bool delivered; /* a stream handed on some of its body: never send it again */
} sink;

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    sink *s = ud;
    size_t len = size * n;

    if (s->rq->on_data) {
        /* only a 2xx body streams; an error body is kept for its message */
        if (s->status >= 200 && s->status < 300) {
            s->delivered = true;
            if (!s->rq->on_data(data, len, s->rq->ud)) {
                s->stopped = true;
                return 0;
            }
            return len;
        }
    }
    if (s->len + len > s->max) {
        s->toobig = true;
        return 0;
    }
    if (s->len + len + 1 > s->cap) {
        s->cap = (s->len + len + 1) * 2;
        if (s->cap > s->max + 1)
            s->cap = s->max + 1;
        s->buf = pe_xrealloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    s->buf[s->len] = '\0';
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    sink *s = ud;
    size_t len = size * n;

    if (len > 9 && memcmp(data, "HTTP/", 5) == 0) {
        /* a new answer (after a redirect or 100-continue) */
        const char *sp = memchr(data, ' ', len);
        s->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        s->ctype[0] = '\0';
    } else if (len > 13 && strncasecmp(data, "content-type:", 13) == 0) {
        size_t i = 13, j;
        while (i < len && data[i] == ' ')
            i++;
        j = len;
        while (j > i && (data[j - 1] == '\r' || data[j - 1] == '\n'))
            j--;
        snprintf(s->ctype, sizeof(s->ctype), "%.*s", (int)(j - i), data + i);
    }
    return len;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    sink *s = ud;

    if (s->head_deadline && s->status == 0 && pe_monotonic_ms() > s->head_deadline) {
        s->head_late = true;
        return 1;
    }
    return s->rq->cancel && *s->rq->cancel ? 1 : 0;
}

void pe__presp_free(pe__presp *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

char *pe__bearer(pe_provider *p)
{
    return pe_xasprintf("Authorization: Bearer %s", p->cfg.creds.key ? p->cfg.creds.key : "");
}

void pe__secret_free(char *s)
{
    if (s) {
        sodium_memzero(s, strlen(s));
        free(s);
    }
}

/* Remove every occurrence of the key from msg (a provider may echo it). */
static void scrub(pe_provider *p, char *msg)
{
    const char *key = p->cfg.creds.key;
    size_t klen = key ? strlen(key) : 0;
    char *hit;

    if (klen < 4)
        return;
    while ((hit = strstr(msg, key)) != NULL) {
        memcpy(hit, "[redacted]", klen < 10 ? klen : 10);
        memmove(hit + (klen < 10 ? klen : 10), hit + klen, strlen(hit + klen) + 1);
    }
}

int pe__provider_fail(pe_provider *p, pe_err *err, int code, const char *fmt, ...)
{
    char msg[PE_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    scrub(p, msg);
    return pe_err_set(err, code, 0, "%s", msg);
}

/* The provider's own words from an error body: "message", "error" (a
 * string, or an object with "message"), cut to one printable line. */
static void error_text(const pe__presp *rs, char *out, size_t size)
{
    json_t *v = rs->body ? json_loadb(rs->body, rs->len, 0, NULL) : NULL;
    const char *m = NULL;
    json_t *e;

    out[0] = '\0';
    if (json_is_object(v)) {
        e = json_object_get(v, "error");
        if (json_is_string(json_object_get(v, "message")))
            m = json_string_value(json_object_get(v, "message"));
        else if (json_is_object(e) && json_is_string(json_object_get(e, "message")))
            m = json_string_value(json_object_get(e, "message"));
        else if (json_is_string(e))
            m = json_string_value(e);
    }
    if (m)
        snprintf(out, size, "%.200s", m);
    for (char *c = out; *c; c++)
        if (!isprint((unsigned char)*c))
            *c = ' ';
    json_decref(v);
}

int pe__provider_status_error(pe_provider *p, const pe__presp *rs, const char *what, pe_err *err)
{
    const char *name = p->ops->name;
    char text[256];

    error_text(rs, text, sizeof(text));
    if (rs->status == 401 || rs->status == 403)
        return pe__provider_fail(p, err, PE_EAUTH, "%s rejected the API key (%s: %ld%s%s)", name,
                                 what, rs->status, text[0] ? " " : "", text);
    if (rs->status == 404)
        return pe__provider_fail(p, err, PE_ENOENT, "%s: %s: not found%s%s", name, what,
                                 text[0] ? ": " : "", text);
    if (rs->status == 429)
        return pe__provider_fail(p, err, PE_EREMOTE, "%s: %s: rate limited (429)%s%s", name, what,
                                 text[0] ? ": " : "", text);
    if (rs->status >= 400 && rs->status < 500)
        return pe__provider_fail(p, err, PE_EINVAL, "%s refused %s (%ld)%s%s", name, what,
                                 rs->status, text[0] ? ": " : "", text);
    return pe__provider_fail(p, err, PE_EREMOTE, "%s failed at %s (HTTP %ld)%s%s", name, what,
                             rs->status, text[0] ? ": " : "", text);
}

static bool retryable_status(long status, bool idempotent)
{
    return status == 429 || (idempotent && (status == 502 || status == 503 || status == 504));
}

static bool retryable_curl(CURLcode rc, bool idempotent)
{
    if (rc == CURLE_COULDNT_CONNECT)
        return true; /* nothing reached the provider */
    return idempotent && (rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR ||
                          rc == CURLE_SEND_ERROR || rc == CURLE_PARTIAL_FILE);
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Our sockets are close-on-exec from birth: the daemon execs helpers from
 * other threads at any moment, and they must not inherit a provider's
 * connection. */
static curl_socket_t open_cloexec(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

void pe__curl_cloexec(CURL *c)
{
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_cloexec);
}

static CURL *prepare(pe_provider *p, const pe__preq *rq, sink *s, struct curl_slist **hdrs,
                     int64_t timeout_ms, char *errbuf)
{
    CURL *c = curl_easy_init();
    char *auth = rq->no_key || p->cfg.creds.key == NULL ? NULL
                 : rq->key_header                       ? pe_xasprintf("%s: %s", rq->key_header,
                                                 p->cfg.creds.key ? p->cfg.creds.key : "")
                                                        : pe__bearer(p);

    if (c == NULL) {
        pe__secret_free(auth);
        return NULL;
    }
    *hdrs = auth ? curl_slist_append(NULL, auth) : NULL;
    pe__secret_free(auth);
    if (rq->content_type) {
        char *ct = pe_xasprintf("Content-Type: %s", rq->content_type);
        *hdrs = curl_slist_append(*hdrs, ct);
        free(ct);
    }
    *hdrs = curl_slist_append(*hdrs, "Expect:");
    for (const char *const *h = rq->headers; h && *h; h++)
        *hdrs = curl_slist_append(*hdrs, *h);
    curl_easy_setopt(c, CURLOPT_URL, rq->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    pe__curl_cloexec(c);
    if (p->ops->curl_setup)
        p->ops->curl_setup(p, c);
    /* a stream lasts as long as its process: only its head has a deadline */
    if (!rq->stream)
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    else
        s->head_deadline = pe_monotonic_ms() + timeout_ms;
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms < 10000 ? timeout_ms : 10000));
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    if (rq->mime)
        curl_easy_setopt(c, CURLOPT_MIMEPOST, rq->mime);
    else if (rq->body || (rq->method && strcmp(rq->method, "POST") == 0)) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
    }
    if (rq->method)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq->method);
    return c;
}

/* Seconds of a Retry-After the answer carried, in ms, capped. */
static int64_t retry_after_ms(CURL *c)
{
    struct curl_header *h = NULL;
    long v;
    char *end;

    if (curl_easy_header(c, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return 0;
    v = strtol(h->value, &end, 10);
    if (end == h->value || v < 0)
        return 0;
    return v * 1000 > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : v * 1000;
}

int pe__provider_http(pe_provider *p, const pe__preq *rq, pe__presp *rs, const char *what,
                      pe_err *err)
{
    int64_t timeout = rq->timeout_ms ? rq->timeout_ms : p->cfg.timeout_ms;
    int64_t deadline = pe_monotonic_ms() + timeout;

    memset(rs, 0, sizeof(*rs));
    for (int attempt = 1;; attempt++) {
        sink s = {.rq = rq, .max = rq->max ? rq->max : PE_PROVIDER_BODY_MAX};
        struct curl_slist *hdrs = NULL;
        char errbuf[CURL_ERROR_SIZE] = "";
        int64_t left = deadline - pe_monotonic_ms(), wait = 0;
        CURL *c;
        CURLcode rc;

        if (left <= 0)
            return pe__provider_fail(p, err, PE_ETIMEDOUT, "%s did not answer %s within %lld s",
                                     p->ops->name, what, (long long)(timeout + 999) / 1000);
        c = prepare(p, rq, &s, &hdrs, left, errbuf);
        if (c == NULL)
            return pe_err_set(err, PE_ESYS, ENOMEM, "%s: %s", p->ops->name, what);
        rc = curl_easy_perform(c);
        if (rc == CURLE_OK || s.stopped)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &rs->status);
        if (rc == CURLE_OK && retryable_status(rs->status, rq->idempotent) && attempt < RETRY_MAX)
            wait = retry_after_ms(c) ? retry_after_ms(c) : 100 << attempt;
        curl_easy_cleanup(c);
        curl_slist_free_all(hdrs);
        if (rc != CURLE_OK && !s.stopped) {
            free(s.buf);
            if (s.toobig)
                return pe__provider_fail(p, err, PE_EREMOTE, "%s: %s: answer larger than %zu bytes",
                                         p->ops->name, what, s.max);
            if (rq->cancel && *rq->cancel && !s.head_late)
                return pe__provider_fail(p, err, PE_EREMOTE, "%s: %s: cancelled", p->ops->name,
                                         what);
            if (rc == CURLE_OPERATION_TIMEDOUT || s.head_late)
                return pe__provider_fail(p, err, PE_ETIMEDOUT, "%s did not answer %s within %lld s",
                                         p->ops->name, what, (long long)(timeout + 999) / 1000);
            if (retryable_curl(rc, rq->idempotent) && !s.delivered && attempt < RETRY_MAX &&
                deadline - pe_monotonic_ms() > 200) {
                sleep_ms(100 << attempt);
                continue;
            }
            return pe__provider_fail(p, err, PE_EREMOTE, "%s: %s: %s", p->ops->name, what,
                                     errbuf[0] ? errbuf : curl_easy_strerror(rc));
        }
        if (wait && deadline - pe_monotonic_ms() > wait) {
            free(s.buf);
            sleep_ms(wait);
            continue;
        }
        rs->body = s.buf ? s.buf : pe_xstrdup("");
        rs->len = s.len;
        snprintf(rs->content_type, sizeof(rs->content_type), "%s", s.ctype);
        if (rs->status < 200 || rs->status > 299)
            return pe__provider_status_error(p, rs, what, err);
        return 0;
    }
}

json_t *pe__provider_json(pe_provider *p, const pe__presp *rs, int type, const char *what,
                          pe_err *err)
{
    json_t *v = rs->body ? json_loadb(rs->body, rs->len, 0, NULL) : NULL;

    if (v == NULL || (int)json_typeof(v) != type) {
        json_decref(v);
        pe__provider_fail(p, err, PE_EREMOTE,
                          "%s answered %s with something that is not its API (%s)", p->ops->name,
                          what, rs->content_type[0] ? rs->content_type : "no content type");
        return NULL;
    }
    return v;
}

char *pe__provider_url(pe_provider *p, const char *fmt, ...)
{
    char *path = NULL, *url;
    const char *base = p->cfg.creds.base_url;
    size_t blen = strlen(base);
    va_list ap;

    va_start(ap, fmt);
    if (vasprintf(&path, fmt, ap) < 0)
        abort();
    va_end(ap);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    url = pe_xasprintf("%.*s%s", (int)blen, base, path);
    free(path);
    return url;
}

char *pe__url_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0), *r;

    if (e == NULL)
        abort();
    r = pe_xstrdup(e);
    curl_free(e);
    return r;
}

int pe__preview_fill(pe_provider *p, const char *tmpl, const char *id, const char *key,
                     uint16_t port, pe_provider_preview_link *out, pe_err *err)
{
    cleanup_free char *eid = pe__url_escape(id), *ekey = key ? pe__url_escape(key) : NULL;
    size_t used = 0;
    char num[8];

    snprintf(num, sizeof(num), "%u", port);
    for (const char *t = tmpl; *t && used < sizeof(out->url); t++) {
        const char *put = NULL;
        if (strncmp(t, "{port}", 6) == 0)
            put = num;
        else if (strncmp(t, "{id}", 4) == 0)
            put = eid;
        else if (strncmp(t, "{key}", 5) == 0 && ekey == NULL)
            return pe__provider_fail(p, err, PE_EREMOTE,
                                     "%s gave no tunnel key for the preview of sandbox %s",
                                     p->ops->name, id);
        else if (strncmp(t, "{key}", 5) == 0)
            put = ekey;
        if (put == NULL) {
            out->url[used++] = *t;
            continue;
        }
        used += (size_t)snprintf(out->url + used, sizeof(out->url) - used, "%s", put);
        t = strchr(t, '}');
    }
    if (used >= sizeof(out->url))
        return pe__provider_fail(p, err, PE_EREMOTE,
                                 "%s: the preview URL of sandbox %s is too long", p->ops->name, id);
    out->url[used] = '\0';
    out->proxy = true;
    return 0;
}

char *pe__b64_encode(const void *data, size_t len)
{
    size_t n = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
    char *out = pe_xmalloc(n);

    sodium_bin2base64(out, n, data, len, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

unsigned char *pe__b64_decode(const char *s, size_t slen, size_t *len)
{
    unsigned char *out = pe_xmalloc(slen / 4 * 3 + 3);

    if (sodium_base642bin(out, slen / 4 * 3 + 3, s, slen, "\r\n", len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

int pe__provider_json_req(pe_provider *p, const pe__preq *base, json_t *body, int type,
                          json_t **out, const char *what, pe_err *err)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    pe__preq rq = *base;
    pe__presp rs;
    int r;

    if (text) {
        rq.content_type = rq.content_type ? rq.content_type : "application/json";
        rq.body = text;
        rq.body_len = strlen(text);
    }
    r = pe__provider_http(p, &rq, &rs, what, err);
    if (r == 0 && out && (*out = pe__provider_json(p, &rs, type, what, err)) == NULL)
        r = -1;
    pe__presp_free(&rs);
    free(text);
    return r;
}

int pe__provider_json_call(pe_provider *p, const char *method, const char *url,
                           const char *const *headers, json_t *body, bool idempotent, int type,
                           json_t **out, const char *what, pe_err *err)
{
    pe__preq rq = {.method = method, .url = url, .headers = headers, .idempotent = idempotent};

    return pe__provider_json_req(p, &rq, body, type, out, what, err);
}

json_t *pe__env_object(char *const *env)
{
    json_t *o = json_object();

    for (char *const *e = env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq) {
            char *k = pe_xasprintf("%.*s", (int)(eq - *e), *e);
            json_object_set_new(o, k, json_string(eq + 1));
            free(k);
        }
    }
    return o;
}

int pe__provider_poll(pe_provider *p, const char *id, const char *want, pe__probe_fn probe,
                      void *ud, pe_err *err)
{
    int64_t deadline = pe_monotonic_ms() + p->cfg.create_timeout_ms;

    for (int i = 0;; i++) {
        int r = probe(p, id, ud, err);
        if (r != 0)
            return r > 0 ? 0 : -1;
        if (pe_monotonic_ms() > deadline)
            return pe_err_set(err, PE_ETIMEDOUT, 0,
                              "%s: sandbox %s did not become %s within %lld s", p->ops->name, id,
                              want, (long long)p->cfg.create_timeout_ms / 1000);
        sleep_ms(i < 5 ? 100 : 500);
    }
}

int pe__provider_create_settle(pe_provider *p, const pe_provider_spec *spec, char **id,
                               const char *want, pe__probe_fn probe, void *ud, pe_err *err)
{
    pe_err ignored;

    if (spec->made)
        spec->made(spec->made_ud, *id);
    if (pe__provider_poll(p, *id, want, probe, ud, err) == 0)
        return 0;
    p->ops->remove(p, *id, &ignored);
    free(*id);
    *id = NULL;
    return pe_err_prefix(err, "create a sandbox");
}

/* 'x' with ' as '\'' : one shell word. */
static void quote(char **cmd, const char *word)
{
    size_t n = strlen(*cmd);
    size_t extra = 3;

    for (const char *c = word; *c; c++)
        extra += *c == '\'' ? 4 : 1;
    *cmd = pe_xrealloc(*cmd, n + extra + 1);
    (*cmd)[n++] = '\'';
    for (const char *c = word; *c; c++) {
        if (*c == '\'') {
            memcpy(*cmd + n, "'\\''", 4);
            n += 4;
        } else {
            (*cmd)[n++] = *c;
        }
    }
    (*cmd)[n++] = '\'';
    (*cmd)[n++] = ' ';
    (*cmd)[n] = '\0';
}

static bool is_shell(const char *s)
{
    return strcmp(s, "sh") == 0 || strcmp(s, "bash") == 0 || strcmp(s, "/bin/sh") == 0 ||
           strcmp(s, "/bin/bash") == 0;
}

char *pe__shell_line(const pe_provider_exec_opts *o)
{
    char *cmd = pe_xstrdup("");

    for (char *const *e = o->env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        char *k = pe_xasprintf("export %.*s=", (int)(eq - *e), *e), *j;
        quote(&k, eq + 1);
        j = pe_xasprintf("%s%s; ", cmd, k);
        free(k);
        free(cmd);
        cmd = j;
    }
    if (o->workdir) {
        char *c = pe_xstrdup("cd "), *j;
        quote(&c, o->workdir);
        j = pe_xasprintf("%s%s; ", cmd, c);
        free(c);
        free(cmd);
        cmd = j;
    }
    if (o->argv[0] && o->argv[1] && o->argv[2] && !o->argv[3] && is_shell(o->argv[0]) &&
        strcmp(o->argv[1], "-c") == 0) {
        char *j = pe_xasprintf("%s%s", cmd, o->argv[2]);
        free(cmd);
        return j;
    }
    for (char *const *a = o->argv; *a; a++)
        quote(&cmd, *a);
    return cmd;
}
