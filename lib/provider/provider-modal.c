/* Modal (reference §8): gRPC only. A control plane at base_url (public
 * default https://api.modal.com:443, methods /modal.client.ModalClient/X)
 * and, per task, a command router whose URL and JWT the control plane
 * hands out (TaskGetCommandRouterAccess) for exec and stdio.
 *
 * gRPC here is libcurl's HTTP/2 (TLS, or h2c by prior knowledge for an
 * http:// endpoint such as the test double) with the framing written out:
 * a 5-byte prefix (compressed flag, big-endian length) before each
 * protobuf message, the status in the grpc-status/grpc-message trailers
 * that libcurl hands to the header callback. Debian has no C gRPC library
 * that runs over libcurl (grpc's C core brings its own HTTP/2 stack, event
 * engine and TLS), and the framing is all this adapter needs of gRPC:
 * every call is unary or server-streaming. The messages are protobuf-c's,
 * generated from modal.proto (ours, only the fields we use).
 *
 * Credentials: a Modal token is an id and a secret; creds.key is
 * "TOKEN_ID:TOKEN_SECRET" (or the secret alone with the id in creds.org),
 * sent as the x-modal-token-id / x-modal-token-secret metadata Modal's
 * clients send. Router calls carry the router's JWT instead.
 *
 * What Modal lacks: stop keeps nothing (Modal has no stop: a sandbox runs
 * until terminated), so stop terminates and there is no start; a PTY is an
 * exec with pty_info, but the router has no resize call, so a terminal
 * keeps the size it started with (a resize is dropped). Files go through
 * Modal's in-sandbox tool (/__modal/.bin/modal-sandbox-fs-tools, the one
 * Modal's own SDK execs) for read, write, list and remove; tar is packed
 * and unpacked here through those calls (provider.c), no tar binary being
 * assumed in the sandbox's image. Previews are Modal's tunnels, which it
 * opens only for the ports named at create (spec.ports). */
#include <ctype.h>
#include <errno.h>
#include <time.h>
#include <curl/curl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "core/util.h"
#include "modal.pb-c.h"
#include "provider-internal.h"

#define NAME "modal"
#define DEFAULT_URL "https://api.modal.com:443"
#define CP "/modal.client.ModalClient/"
#define ROUTER "/modal.task_command_router.TaskCommandRouter/"
#define APP_NAME "pocketenv"
#define DEFAULT_IMAGE "debian:bookworm-slim"
#define FS_TOOLS "/__modal/.bin/modal-sandbox-fs-tools"
/* a sandbox ends at its timeout: an hour, as other adapters keep theirs */
#define SANDBOX_TIMEOUT_S 3600
#define MSG_MAX (16u << 20)
#define STDIN_PIECE (1u << 20)
#define RETRY_MAX 3

static void md_sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* gRPC status codes we map */
enum {
    G_OK = 0,
    G_INVALID_ARGUMENT = 3,
    G_DEADLINE = 4,
    G_NOT_FOUND = 5,
    G_ALREADY_EXISTS = 6,
    G_PERMISSION_DENIED = 7,
    G_RESOURCE_EXHAUSTED = 8,
    G_FAILED_PRECONDITION = 9,
    G_OUT_OF_RANGE = 11,
    G_UNAVAILABLE = 14,
    G_UNAUTHENTICATED = 16,
};

typedef struct md_impl {
    char *token_id, *token_secret;
} md_impl;

static int md_open(pe_provider *p, pe_err *err)
{
    md_impl *m = pe_xcalloc(1, sizeof(*m));
    const char *key = p->cfg.creds.key, *colon = strchr(key, ':');

    if (p->cfg.creds.base_url == NULL)
        p->cfg.creds.base_url = pe_xstrdup(DEFAULT_URL);
    if (colon) {
        m->token_id = pe_xasprintf("%.*s", (int)(colon - key), key);
        m->token_secret = pe_xstrdup(colon + 1);
    } else {
        /* the secret alone: the id from org, or none (Modal refuses it) */
        m->token_id = pe_xstrdup(p->cfg.creds.org ? p->cfg.creds.org : "");
        m->token_secret = pe_xstrdup(key);
    }
    p->impl = m;
    (void)err;
    return 0;
}

static void md_close(pe_provider *p)
{
    md_impl *m = p->impl;

    if (m) {
        pe__secret_free(m->token_id);
        pe__secret_free(m->token_secret);
        free(m);
    }
    p->impl = NULL;
}

/* ---- one gRPC call ---- */

typedef struct md_call {
    const char *base;           /* endpoint */
    const char *method;         /* "/pkg.Service/Rpc" */
    const char *const *headers; /* metadata lines, NULL-terminated */
    const ProtobufCMessage *req;
    /* each answer message; false: stop (the error is set by the callee) */
    bool (*on_msg)(const uint8_t *msg, size_t len, void *ud);
    void *ud;
    bool idempotent;
    bool stream;          /* no overall deadline: output may take its time */
    volatile int *cancel; /* non-zero: abort */
    const char *what;
} md_call;

typedef struct md_xfer {
    const md_call *c;
    CURL *curl;
    struct curl_slist *hdrs;
    uint8_t *body;
    long http;
    bool grpc_ctype;
    int grpc_status; /* -1: none seen */
    char grpc_msg[256];
    uint8_t *buf; /* frame being read */
    size_t len, cap;
    char *junk; /* a body that is not gRPC, kept for the error */
    size_t junk_len;
    bool bad; /* a frame we refuse (compressed, too big) or on_msg said stop */
    char bad_why[128];
} md_xfer;

/* grpc-message is percent-encoded; keep printable text */
static void pct_decode(const char *in, size_t n, char *out, size_t size)
{
    size_t j = 0;

    for (size_t i = 0; i < n && j + 1 < size; i++) {
        char c = in[i];
        if (c == '%' && i + 2 < n && isxdigit((unsigned char)in[i + 1]) &&
            isxdigit((unsigned char)in[i + 2])) {
            char hex[3] = {in[i + 1], in[i + 2], 0};
            c = (char)strtol(hex, NULL, 16);
            i += 2;
        }
        out[j++] = isprint((unsigned char)c) ? c : ' ';
    }
    out[j] = '\0';
}

static size_t md_on_header(char *data, size_t size, size_t n, void *ud)
{
    md_xfer *x = ud;
    size_t len = size * n, end = len;
    const char *v;

    while (end > 0 && (data[end - 1] == '\r' || data[end - 1] == '\n'))
        end--;
    if (len > 9 && memcmp(data, "HTTP/", 5) == 0) {
        const char *sp = memchr(data, ' ', len);
        x->http = sp ? strtol(sp + 1, NULL, 10) : 0;
    } else if (end > 13 && strncasecmp(data, "content-type:", 13) == 0) {
        for (v = data + 13; v < data + end && *v == ' '; v++)
            ;
        x->grpc_ctype =
            (size_t)(data + end - v) >= 16 && strncasecmp(v, "application/grpc", 16) == 0;
    } else if (end > 12 && strncasecmp(data, "grpc-status:", 12) == 0) {
        x->grpc_status = (int)strtol(data + 12, NULL, 10);
    } else if (end > 13 && strncasecmp(data, "grpc-message:", 13) == 0) {
        for (v = data + 13; v < data + end && *v == ' '; v++)
            ;
        pct_decode(v, (size_t)(data + end - v), x->grpc_msg, sizeof(x->grpc_msg));
    }
    return len;
}

static void md_keep(md_xfer *x, const char *data, size_t n)
{
    if (x->len + n > x->cap) {
        x->cap = x->len + n > 4096 ? x->len + n : 4096;
        x->buf = pe_xrealloc(x->buf, x->cap);
    }
    memcpy(x->buf + x->len, data, n);
    x->len += n;
}

static size_t md_on_body(char *data, size_t size, size_t n, void *ud)
{
    md_xfer *x = ud;
    size_t len = size * n, left = len;

    if (!x->grpc_ctype) {
        /* not gRPC (a proxy's page, a double's garbage): kept a little */
        size_t take = x->junk_len + len > 512 ? 512 - x->junk_len : len;
        x->junk = pe_xrealloc(x->junk, x->junk_len + take + 1);
        memcpy(x->junk + x->junk_len, data, take);
        x->junk_len += take;
        x->junk[x->junk_len] = '\0';
        return x->junk_len >= 512 ? 0 : len;
    }
    while (left > 0) {
        size_t want = 5, take;
        uint32_t m;
        if (x->len < 5) {
            take = 5 - x->len < left ? 5 - x->len : left;
            md_keep(x, data, take);
            data += take;
            left -= take;
            if (x->len < 5)
                break;
        }
        m = (uint32_t)x->buf[1] << 24 | (uint32_t)x->buf[2] << 16 | (uint32_t)x->buf[3] << 8 |
            x->buf[4];
        if (x->buf[0] != 0 || m > MSG_MAX) {
            snprintf(x->bad_why, sizeof(x->bad_why), "%s",
                     x->buf[0] ? "a compressed message" : "a message too large");
            x->bad = true;
            return 0;
        }
        want = 5 + (size_t)m;
        take = want - x->len < left ? want - x->len : left;
        md_keep(x, data, take);
        data += take;
        left -= take;
        if (x->len == want) {
            if (x->c->on_msg && !x->c->on_msg(x->buf + 5, x->len - 5, x->c->ud)) {
                snprintf(x->bad_why, sizeof(x->bad_why), "a message that is not its API");
                x->bad = true;
                return 0;
            }
            x->len = 0;
        }
    }
    return len;
}

static int md_on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    md_xfer *x = ud;

    (void)a, (void)b, (void)c, (void)d;
    return x->c->cancel && *x->c->cancel ? 1 : 0;
}

static void md_xfer_free(md_xfer *x)
{
    if (x->curl)
        curl_easy_cleanup(x->curl);
    curl_slist_free_all(x->hdrs);
    free(x->body);
    free(x->buf);
    free(x->junk);
    memset(x, 0, sizeof(*x));
}

static void md_xfer_init(pe_provider *p, md_xfer *x, const md_call *c, char **url)
{
    size_t n = protobuf_c_message_get_packed_size(c->req);

    memset(x, 0, sizeof(*x));
    x->c = c;
    x->grpc_status = -1;
    x->body = pe_xmalloc(n + 5);
    x->body[0] = 0;
    x->body[1] = (uint8_t)(n >> 24);
    x->body[2] = (uint8_t)(n >> 16);
    x->body[3] = (uint8_t)(n >> 8);
    x->body[4] = (uint8_t)n;
    protobuf_c_message_pack(c->req, x->body + 5);
    *url = pe_xasprintf("%s%s", c->base, c->method);
    x->hdrs = curl_slist_append(NULL, "Content-Type: application/grpc");
    x->hdrs = curl_slist_append(x->hdrs, "TE: trailers");
    x->hdrs = curl_slist_append(x->hdrs, "Expect:");
    for (const char *const *h = c->headers; h && *h; h++)
        x->hdrs = curl_slist_append(x->hdrs, *h);
    x->curl = curl_easy_init();
    pe__curl_cloexec(x->curl);
    curl_easy_setopt(x->curl, CURLOPT_URL, *url);
    curl_easy_setopt(x->curl, CURLOPT_HTTP_VERSION,
                     strncmp(*url, "http://", 7) == 0 ? CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                                                      : CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(x->curl, CURLOPT_POST, 1L);
    curl_easy_setopt(x->curl, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(x->curl, CURLOPT_POSTFIELDSIZE, (long)(n + 5));
    curl_easy_setopt(x->curl, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(x->curl, CURLOPT_USERAGENT, "pocketenv");
    curl_easy_setopt(x->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x->curl, CURLOPT_HEADERFUNCTION, md_on_header);
    curl_easy_setopt(x->curl, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(x->curl, CURLOPT_WRITEFUNCTION, md_on_body);
    curl_easy_setopt(x->curl, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->curl, CURLOPT_XFERINFOFUNCTION, md_on_progress);
    curl_easy_setopt(x->curl, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(x->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(x->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)p->cfg.timeout_ms);
    /* a stream has no deadline: a gRPC server sends its headers with the
     * first message, and a quiet command's stderr may have none for hours;
     * keepalive notices a peer that went away */
    if (c->stream)
        curl_easy_setopt(x->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    else
        curl_easy_setopt(x->curl, CURLOPT_TIMEOUT_MS, (long)p->cfg.timeout_ms);
}

/* The secret out of a message a server may echo it in (the whole key is
 * scrubbed by pe__provider_fail). */
static void md_redact(pe_provider *p, char *msg)
{
    md_impl *m = p->impl;
    size_t k = m && m->token_secret ? strlen(m->token_secret) : 0;
    char *hit;

    if (k < 4)
        return;
    while ((hit = strstr(msg, m->token_secret)) != NULL) {
        memcpy(hit, "[redacted]", k < 10 ? k : 10);
        memmove(hit + (k < 10 ? k : 10), hit + k, strlen(hit + k) + 1);
    }
}

static int md_grpc_error(pe_provider *p, int code, const char *text, const char *what, pe_err *err)
{
    char msg[256];
    const char *sep;

    snprintf(msg, sizeof(msg), "%s", text);
    md_redact(p, msg);
    sep = msg[0] ? ": " : "";
    switch (code) {
    case G_UNAUTHENTICATED:
    case G_PERMISSION_DENIED:
        return pe__provider_fail(p, err, PE_EAUTH, NAME " rejected the API key (%s: %s)", what,
                                 msg[0] ? msg : "unauthenticated");
    case G_NOT_FOUND:
        return pe__provider_fail(p, err, PE_ENOENT, NAME ": %s: not found%s%s", what, sep, msg);
    case G_DEADLINE:
        return pe__provider_fail(p, err, PE_ETIMEDOUT, NAME " did not answer %s in time%s%s", what,
                                 sep, msg);
    case G_INVALID_ARGUMENT:
    case G_FAILED_PRECONDITION:
    case G_ALREADY_EXISTS:
    case G_OUT_OF_RANGE:
        return pe__provider_fail(p, err, PE_EINVAL, NAME " refused %s (gRPC status %d)%s%s", what,
                                 code, sep, msg);
    case G_RESOURCE_EXHAUSTED:
        return pe__provider_fail(p, err, PE_EREMOTE,
                                 NAME ": %s: rate limited or out of capacity (gRPC status %d)%s%s",
                                 what, code, sep, msg);
    }
    return pe__provider_fail(p, err, PE_EREMOTE, NAME " failed at %s (gRPC status %d)%s%s", what,
                             code, sep, msg);
}

/* How one finished transfer went: 0, or the error (retry: worth sending again). */
static int md_xfer_result(pe_provider *p, md_xfer *x, CURLcode rc, bool *retry, pe_err *err)
{
    const char *what = x->c->what;

    *retry = false;
    if (x->bad && x->bad_why[0])
        return pe__provider_fail(p, err, PE_EREMOTE, NAME ": %s: %s", what, x->bad_why);
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return pe__provider_fail(p, err, PE_ETIMEDOUT, NAME " did not answer %s within %lld ms",
                                 what, (long long)p->cfg.timeout_ms);
    if (rc == CURLE_ABORTED_BY_CALLBACK)
        return pe__provider_fail(p, err, PE_EREMOTE, NAME ": %s: cancelled", what);
    if (rc == CURLE_WRITE_ERROR && !x->grpc_ctype)
        rc = CURLE_OK; /* we stopped keeping a page that is not gRPC: judged below */
    if (rc != CURLE_OK) {
        *retry = rc == CURLE_COULDNT_CONNECT || x->c->idempotent;
        return pe__provider_fail(p, err, PE_EREMOTE, NAME ": %s: %s", what, curl_easy_strerror(rc));
    }
    if (x->http != 200 && x->grpc_status < 0) {
        pe__presp rs = {.status = x->http, .body = x->junk, .len = x->junk_len};
        *retry = x->c->idempotent && (x->http == 502 || x->http == 503 || x->http == 504);
        return pe__provider_status_error(p, &rs, what, err);
    }
    if (x->grpc_status < 0 && !x->grpc_ctype)
        return pe__provider_fail(p, err, PE_EREMOTE,
                                 NAME " answered %s with something that is not its API", what);
    if (x->grpc_status < 0 || x->len != 0)
        return pe__provider_fail(p, err, PE_EREMOTE,
                                 NAME ": %s: the answer ended without a gRPC status", what);
    if (x->grpc_status != G_OK) {
        *retry = x->grpc_status == G_UNAVAILABLE && x->c->idempotent;
        return md_grpc_error(p, x->grpc_status, x->grpc_msg, what, err);
    }
    return 0;
}

/* One call, retried (idempotent ones on UNAVAILABLE and broken
 * connections) while the call's deadline allows. */
static int md_grpc(pe_provider *p, const md_call *c, pe_err *err)
{
    int64_t deadline = pe_monotonic_ms() + p->cfg.timeout_ms;

    for (int attempt = 0;; attempt++) {
        md_xfer x;
        char *url;
        bool retry;
        CURLcode rc;
        int r;

        md_xfer_init(p, &x, c, &url);
        rc = curl_easy_perform(x.curl);
        r = md_xfer_result(p, &x, rc, &retry, err);
        md_xfer_free(&x);
        free(url);
        if (r == 0 || !retry || attempt + 1 >= RETRY_MAX ||
            pe_monotonic_ms() + (200 << attempt) > deadline)
            return r;
        md_sleep_ms(200 << attempt);
        pe_err_clear(err);
    }
}

/* A unary call: the one answer unpacked by `unpack` into *out. */
typedef struct md_unary {
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *out;
    bool got;
} md_unary;

static bool md_unary_msg(const uint8_t *msg, size_t len, void *ud)
{
    md_unary *u = ud;

    if (u->out)
        protobuf_c_message_free_unpacked(u->out, NULL);
    u->out = protobuf_c_message_unpack(u->desc, NULL, len, msg);
    u->got = u->out != NULL;
    return u->got;
}

/* A unary call on the control plane (resp_desc NULL: an empty answer). */
static int md_cp(pe_provider *p, const char *rpc, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                 bool idempotent, const char *what, pe_err *err)
{
    md_impl *m = p->impl;
    char *method = pe_xasprintf(CP "%s", rpc);
    char *id = pe_xasprintf("x-modal-token-id: %s", m->token_id);
    char *secret = pe_xasprintf("x-modal-token-secret: %s", m->token_secret);
    const char *hdrs[] = {id, secret, "x-modal-client-version: 1.0.0", NULL};
    md_unary u = {.desc = resp_desc ? resp_desc : &pe_modal__empty__descriptor};
    md_call c = {.base = p->cfg.creds.base_url,
                 .method = method,
                 .headers = hdrs,
                 .req = req,
                 .on_msg = md_unary_msg,
                 .ud = &u,
                 .idempotent = idempotent,
                 .what = what};
    int r = md_grpc(p, &c, err);

    pe__secret_free(id);
    pe__secret_free(secret);
    free(method);
    if (r == 0 && resp && !u.got)
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME " answered %s without a message", what);
    if (r == 0 && resp) {
        *resp = u.out;
        return 0;
    }
    if (u.out)
        protobuf_c_message_free_unpacked(u.out, NULL);
    return r;
}

#define MSG(x) ((ProtobufCMessage *)(x))
#define UNPACKED(x) ((ProtobufCMessage **)(x))

/* ---- lifecycle ---- */

static int md_app(pe_provider *p, char **app_id, pe_err *err)
{
    PeModal__AppGetOrCreateRequest rq = PE_MODAL__APP_GET_OR_CREATE_REQUEST__INIT;
    PeModal__AppGetOrCreateResponse *rs = NULL;

    rq.app_name = (char *)APP_NAME;
    rq.object_creation_type = 1; /* create if missing */
    if (md_cp(p, "AppGetOrCreate", MSG(&rq), &pe_modal__app_get_or_create_response__descriptor,
              UNPACKED(&rs), true, "create a sandbox", err) < 0)
        return -1;
    *app_id = rs->app_id[0] ? pe_xstrdup(rs->app_id) : NULL;
    protobuf_c_message_free_unpacked(MSG(rs), NULL);
    return *app_id ? 0 : pe__provider_fail(p, err, PE_EREMOTE, NAME " answered without an app id");
}

static int md_result_ok(pe_provider *p, const PeModal__GenericResult *res, const char *what,
                        pe_err *err)
{
    if (res->status == PE_MODAL__GENERIC_STATUS__GENERIC_SUCCESS)
        return 0;
    return pe__provider_fail(p, err, PE_EREMOTE, NAME ": %s failed (status %d)%s%.200s", what,
                             res->status, res->exception[0] ? ": " : "", res->exception);
}

/* Wait for an image build (ImageJoinStreaming, a server stream, asked
 * again while it ends without a result). */
typedef struct md_join {
    int status; /* -1: none yet */
    char exception[256];
    char last[128];
} md_join;

static bool md_join_msg(const uint8_t *msg, size_t len, void *ud)
{
    md_join *j = ud;
    PeModal__ImageJoinStreamingResponse *rs =
        pe_modal__image_join_streaming_response__unpack(NULL, len, msg);

    if (rs == NULL)
        return false;
    if (rs->entry_id[0])
        snprintf(j->last, sizeof(j->last), "%s", rs->entry_id);
    if (rs->result && rs->result->status != 0) {
        j->status = rs->result->status;
        snprintf(j->exception, sizeof(j->exception), "%s", rs->result->exception);
    }
    pe_modal__image_join_streaming_response__free_unpacked(rs, NULL);
    return true;
}

static int md_image_join(pe_provider *p, const char *image_id, pe_err *err)
{
    md_impl *m = p->impl;
    int64_t deadline = pe_monotonic_ms() + p->cfg.create_timeout_ms;
    md_join j = {.status = -1};

    while (j.status < 0) {
        PeModal__ImageJoinStreamingRequest rq = PE_MODAL__IMAGE_JOIN_STREAMING_REQUEST__INIT;
        char *id = pe_xasprintf("x-modal-token-id: %s", m->token_id);
        char *secret = pe_xasprintf("x-modal-token-secret: %s", m->token_secret);
        const char *hdrs[] = {id, secret, NULL};
        md_call c = {.base = p->cfg.creds.base_url,
                     .method = CP "ImageJoinStreaming",
                     .headers = hdrs,
                     .req = MSG(&rq),
                     .on_msg = md_join_msg,
                     .ud = &j,
                     .idempotent = true,
                     .stream = true,
                     .what = "build an image"};
        int r;
        rq.image_id = (char *)image_id;
        rq.timeout = 55;
        rq.last_entry_id = j.last;
        r = md_grpc(p, &c, err);
        pe__secret_free(id);
        pe__secret_free(secret);
        if (r < 0)
            return -1;
        if (j.status < 0 && pe_monotonic_ms() > deadline)
            return pe__provider_fail(p, err, PE_ETIMEDOUT,
                                     NAME ": image %s was not built in %lld s", image_id,
                                     (long long)p->cfg.create_timeout_ms / 1000);
    }
    if (j.status != PE_MODAL__GENERIC_STATUS__GENERIC_SUCCESS)
        return pe__provider_fail(p, err, PE_EREMOTE, NAME ": building the image failed%s%.200s",
                                 j.exception[0] ? ": " : "", j.exception);
    return 0;
}

static int md_image(pe_provider *p, const char *app_id, const char *ref, char **image_id,
                    pe_err *err)
{
    PeModal__ImageGetOrCreateRequest rq = PE_MODAL__IMAGE_GET_OR_CREATE_REQUEST__INIT;
    PeModal__ImageSpec spec = PE_MODAL__IMAGE_SPEC__INIT;
    PeModal__ImageGetOrCreateResponse *rs = NULL;
    char *from = pe_xasprintf("FROM %s", ref), *cmds[] = {from};
    int r;

    spec.n_dockerfile_commands = 1;
    spec.dockerfile_commands = cmds;
    rq.image = &spec;
    rq.app_id = (char *)app_id;
    r = md_cp(p, "ImageGetOrCreate", MSG(&rq), &pe_modal__image_get_or_create_response__descriptor,
              UNPACKED(&rs), true, "create an image", err);
    free(from);
    if (r < 0)
        return -1;
    if (rs->image_id[0] == '\0') {
        protobuf_c_message_free_unpacked(MSG(rs), NULL);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered without an image id");
    }
    *image_id = pe_xstrdup(rs->image_id);
    if (rs->result && rs->result->status != 0)
        r = md_result_ok(p, rs->result, "building the image", err);
    else
        r = md_image_join(p, *image_id, err);
    protobuf_c_message_free_unpacked(MSG(rs), NULL);
    if (r < 0) {
        free(*image_id);
        *image_id = NULL;
    }
    return r;
}

static int md_terminate(pe_provider *p, const char *id, pe_err *err)
{
    PeModal__SandboxTerminateRequest rq = PE_MODAL__SANDBOX_TERMINATE_REQUEST__INIT;

    rq.sandbox_id = (char *)id;
    return md_cp(p, "SandboxTerminate", MSG(&rq), NULL, NULL, true, "terminate a sandbox", err);
}

/* The sandbox's task, once it runs (0: not yet; -1: it ended or failed). */
static int md_task(pe_provider *p, const char *id, float wait_s, char **task_id, pe_err *err)
{
    PeModal__SandboxGetTaskIdRequest rq = PE_MODAL__SANDBOX_GET_TASK_ID_REQUEST__INIT;
    PeModal__SandboxGetTaskIdResponse *rs = NULL;
    int r = 0;

    rq.sandbox_id = (char *)id;
    rq.timeout = wait_s;
    rq.wait_until_ready = true;
    if (md_cp(p, "SandboxGetTaskId", MSG(&rq), &pe_modal__sandbox_get_task_id_response__descriptor,
              UNPACKED(&rs), true, "get a sandbox's task", err) < 0)
        return -1;
    if (rs->task_result && rs->task_result->status != 0)
        r = pe_err_set(err, PE_EINVAL, 0, NAME ": sandbox %s has ended (status %d)%s%.200s", id,
                       rs->task_result->status, rs->task_result->exception[0] ? ": " : "",
                       rs->task_result->exception);
    else if (rs->task_id[0]) {
        *task_id = pe_xstrdup(rs->task_id);
        r = 1;
    }
    protobuf_c_message_free_unpacked(MSG(rs), NULL);
    return r;
}

static int md_probe_running(pe_provider *p, const char *id, void *ud, pe_err *err)
{
    char *task = NULL;
    int r = md_task(p, id, 0, &task, err);

    (void)ud;
    free(task);
    return r;
}

static int md_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    PeModal__SandboxCreateRequest rq = PE_MODAL__SANDBOX_CREATE_REQUEST__INIT;
    PeModal__SandboxDefinition def = PE_MODAL__SANDBOX_DEFINITION__INIT;
    PeModal__Resources res = PE_MODAL__RESOURCES__INIT;
    PeModal__StringMap envs = PE_MODAL__STRING_MAP__INIT;
    PeModal__SandboxCreateResponse *rs = NULL;
    PeModal__StringMap__ContentsEntry *entries = NULL, **ptrs = NULL;
    PeModal__PortSpecs open = PE_MODAL__PORT_SPECS__INIT;
    PeModal__PortSpec *ports = NULL, **port_ptrs = NULL;
    char *app = NULL, *image = NULL;
    size_t n = 0;
    int r;

    if (md_app(p, &app, err) < 0 ||
        md_image(p, app, spec->image ? spec->image : DEFAULT_IMAGE, &image, err) < 0) {
        free(app);
        return -1;
    }
    for (char *const *e = spec->env; e && *e; e++)
        n++;
    entries = pe_xcalloc(n + 1, sizeof(*entries));
    ptrs = pe_xcalloc(n + 1, sizeof(*ptrs));
    n = 0;
    for (char *const *e = spec->env; e && *e; e++) {
        char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        pe_modal__string_map__contents_entry__init(&entries[n]);
        entries[n].key = pe_xasprintf("%.*s", (int)(eq - *e), *e);
        entries[n].value = eq + 1;
        ptrs[n] = &entries[n];
        n++;
    }
    envs.n_contents = n;
    envs.contents = ptrs;
    res.milli_cpu = (uint32_t)spec->cpu_millis;
    res.memory_mb = (uint32_t)(spec->memory_bytes >> 20);
    res.ephemeral_disk_mb = (uint32_t)(spec->disk_bytes >> 20);
    def.image_id = image;
    def.resources = &res;
    def.timeout_secs = SANDBOX_TIMEOUT_S;
    def.environment_variables = &envs;
    if (spec->n_ports > 0) {
        /* a tunnel for each port asked, with TLS at Modal's edge; ports are
         * opened here only (no call opens one later) */
        ports = pe_xcalloc(spec->n_ports, sizeof(*ports));
        port_ptrs = pe_xcalloc(spec->n_ports, sizeof(*port_ptrs));
        for (size_t i = 0; i < spec->n_ports; i++) {
            pe_modal__port_spec__init(&ports[i]);
            ports[i].port = spec->ports[i];
            port_ptrs[i] = &ports[i];
        }
        open.n_ports = spec->n_ports;
        open.ports = port_ptrs;
        def.open_ports = &open;
    }
    rq.app_id = app;
    rq.definition = &def;
    /* not idempotent: a second call makes a second sandbox */
    r = md_cp(p, "SandboxCreate", MSG(&rq), &pe_modal__sandbox_create_response__descriptor,
              UNPACKED(&rs), false, "create a sandbox", err);
    for (size_t i = 0; i < n; i++)
        free(entries[i].key);
    free(entries);
    free(ptrs);
    free(ports);
    free(port_ptrs);
    free(app);
    free(image);
    if (r < 0)
        return -1;
    if (rs->sandbox_id[0] == '\0' || strlen(rs->sandbox_id) > 128) {
        protobuf_c_message_free_unpacked(MSG(rs), NULL);
        return pe__provider_fail(p, err, PE_EREMOTE, NAME " answered create without a sandbox id");
    }
    *id = pe_xstrdup(rs->sandbox_id);
    protobuf_c_message_free_unpacked(MSG(rs), NULL);
    return pe__provider_create_settle(p, spec, id, "running", md_probe_running, NULL, err);
}

static int md_status(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err)
{
    PeModal__SandboxWaitRequest rq = PE_MODAL__SANDBOX_WAIT_REQUEST__INIT;
    PeModal__SandboxWaitResponse *rs = NULL;

    rq.sandbox_id = (char *)id;
    rq.timeout = 0; /* a look, not a wait */
    if (md_cp(p, "SandboxWait", MSG(&rq), &pe_modal__sandbox_wait_response__descriptor,
              UNPACKED(&rs), true, "get a sandbox", err) < 0)
        return -1;
    if (rs->result && rs->result->status != 0) {
        static const char *const words[] = {"unknown",         "succeeded", "failed",
                                            "terminated",      "timeout",   "init-failure",
                                            "internal-failure"};
        int s = rs->result->status;
        snprintf(st->raw, sizeof(st->raw), "%s",
                 s >= 0 && s < (int)PE_ARRAY_LEN(words) ? words[s] : "ended");
        st->state = PE_PSTATE_STOPPED;
    } else {
        snprintf(st->raw, sizeof(st->raw), "running");
        st->state = PE_PSTATE_RUNNING;
    }
    protobuf_c_message_free_unpacked(MSG(rs), NULL);
    return 0;
}

/* ---- previews: tunnels ---- */

/* The tunnel of a port opened at create: https://HOST[:PORT], public (a
 * Modal tunnel takes no credential). A plain http control plane (a local
 * endpoint, the test double) has plain tunnels, as it has a plain router. */
static int md_preview(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                      pe_err *err)
{
    PeModal__SandboxGetTunnelsRequest rq = PE_MODAL__SANDBOX_GET_TUNNELS_REQUEST__INIT;
    PeModal__SandboxGetTunnelsResponse *rs = NULL;
    const char *scheme = strncmp(p->cfg.creds.base_url, "http://", 7) == 0 ? "http" : "https";
    int r = -1;

    rq.sandbox_id = (char *)id;
    rq.timeout = 10;
    if (md_cp(p, "SandboxGetTunnels", MSG(&rq), &pe_modal__sandbox_get_tunnels_response__descriptor,
              UNPACKED(&rs), true, "get a sandbox's tunnels", err) < 0)
        return -1;
    if (rs->result && rs->result->status != 0 &&
        rs->result->status != PE_MODAL__GENERIC_STATUS__GENERIC_SUCCESS) {
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME ": get a sandbox's tunnels: status %d",
                              rs->result->status);
        goto out;
    }
    for (size_t i = 0; i < rs->n_tunnels; i++) {
        const PeModal__TunnelData *t = rs->tunnels[i];
        bool host_ok = t->host[0] != '\0' && strlen(t->host) < 256;
        if (t->container_port != port)
            continue;
        for (const char *c = t->host; host_ok && *c; c++)
            host_ok = isalnum((unsigned char)*c) || *c == '.' || *c == '-';
        if (!host_ok || t->port == 0 || t->port > 65535) {
            r = pe__provider_fail(p, err, PE_EREMOTE, NAME " answered a tunnel without a host");
            goto out;
        }
        memset(out, 0, sizeof(*out));
        if (t->port == 443)
            snprintf(out->url, sizeof(out->url), "%s://%s/", scheme, t->host);
        else
            snprintf(out->url, sizeof(out->url), "%s://%s:%u/", scheme, t->host, t->port);
        r = 0;
        goto out;
    }
    r = pe_err_set(err, PE_ENOTCAP, 0,
                   "not supported by " NAME ": preview of port %u (Modal opens a tunnel only for "
                   "the ports asked at create)",
                   port);
out:
    protobuf_c_message_free_unpacked(MSG(rs), NULL);
    return r;
}

/* ---- the command router ---- */

typedef struct md_router {
    char *task_id;
    char *url;  /* scheme://host:port */
    char *auth; /* "authorization: Bearer JWT" (a secret) */
} md_router;

static void md_router_free(md_router *rt)
{
    free(rt->task_id);
    free(rt->url);
    pe__secret_free(rt->auth);
    memset(rt, 0, sizeof(*rt));
}

static int md_router_get(pe_provider *p, const char *id, md_router *rt, pe_err *err)
{
    PeModal__TaskGetCommandRouterAccessRequest rq =
        PE_MODAL__TASK_GET_COMMAND_ROUTER_ACCESS_REQUEST__INIT;
    PeModal__TaskGetCommandRouterAccessResponse *rs = NULL;
    const char *u;
    size_t n;
    int r;

    memset(rt, 0, sizeof(*rt));
    r = md_task(p, id, 10, &rt->task_id, err);
    if (r == 0)
        r = pe_err_set(err, PE_EINVAL, 0, NAME ": sandbox %s is not running yet", id);
    if (r < 0)
        return -1;
    rq.task_id = rt->task_id;
    if (md_cp(p, "TaskGetCommandRouterAccess", MSG(&rq),
              &pe_modal__task_get_command_router_access_response__descriptor, UNPACKED(&rs), true,
              "reach a sandbox's command router", err) < 0) {
        md_router_free(rt);
        return -1;
    }
    u = rs->url;
    if (strncmp(u, "https://", 8) != 0 || rs->jwt[0] == '\0') {
        protobuf_c_message_free_unpacked(MSG(rs), NULL);
        md_router_free(rt);
        return pe__provider_fail(p, err, PE_EREMOTE,
                                 NAME " answered a command router that is not https");
    }
    n = strlen(u);
    while (n > 8 && u[n - 1] == '/')
        n--;
    /* the router speaks TLS when the control plane does; a plain http
     * control plane (a local endpoint, the test double) has a plain router
     * too, as Modal's SDK dials loopback routers without TLS */
    if (strncmp(p->cfg.creds.base_url, "http://", 7) == 0)
        rt->url = pe_xasprintf("http://%.*s", (int)(n - 8), u + 8);
    else
        rt->url = pe_xasprintf("%.*s", (int)n, u);
    rt->auth = pe_xasprintf("authorization: Bearer %s", rs->jwt);
    protobuf_c_message_free_unpacked(MSG(rs), NULL);
    return 0;
}

static int md_rcall(pe_provider *p, const md_router *rt, const char *rpc,
                    const ProtobufCMessage *req, bool (*on_msg)(const uint8_t *, size_t, void *),
                    void *ud, bool idempotent, const char *what, pe_err *err)
{
    char *method = pe_xasprintf(ROUTER "%s", rpc);
    const char *hdrs[] = {rt->auth, NULL};
    md_call c = {.base = rt->url,
                 .method = method,
                 .headers = hdrs,
                 .req = req,
                 .on_msg = on_msg,
                 .ud = ud,
                 .idempotent = idempotent,
                 .what = what};
    int r = md_grpc(p, &c, err);

    free(method);
    return r;
}

static void md_exec_id(char out[33])
{
    unsigned char rnd[16];

    randombytes_buf(rnd, sizeof(rnd));
    sodium_bin2hex(out, 33, rnd, sizeof(rnd));
}

static int md_exec_begin(pe_provider *p, const md_router *rt, const char *exec_id,
                         const pe_provider_exec_opts *o, pe_err *err)
{
    PeModal__TaskExecStartRequest rq = PE_MODAL__TASK_EXEC_START_REQUEST__INIT;
    PeModal__PTYInfo pty = PE_MODAL__PTYINFO__INIT;
    PeModal__TaskExecStartRequest__EnvEntry *entries, **ptrs;
    size_t n = 0, argc = 0;
    int r;

    for (char *const *e = o->env; e && *e; e++)
        n++;
    while (o->argv[argc])
        argc++;
    entries = pe_xcalloc(n + 1, sizeof(*entries));
    ptrs = pe_xcalloc(n + 1, sizeof(*ptrs));
    n = 0;
    for (char *const *e = o->env; e && *e; e++) {
        char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        pe_modal__task_exec_start_request__env_entry__init(&entries[n]);
        entries[n].key = pe_xasprintf("%.*s", (int)(eq - *e), *e);
        entries[n].value = eq + 1;
        ptrs[n] = &entries[n];
        n++;
    }
    rq.task_id = rt->task_id;
    rq.exec_id = (char *)exec_id;
    rq.n_command_args = argc;
    rq.command_args = (char **)o->argv;
    rq.stdout_config = 1; /* pipe */
    rq.stderr_config = 1;
    if (o->tty) {
        /* the terminal's output is stdout alone; its size is fixed here */
        pty.enabled = true;
        pty.winsz_rows = o->rows ? o->rows : 24;
        pty.winsz_cols = o->cols ? o->cols : 80;
        pty.env_term = (char *)"xterm-256color";
        pty.env_colorterm = (char *)"truecolor";
        pty.pty_type = 2; /* shell */
        /* a terminal may sit idle: a quiet keyboard must not end it */
        pty.no_terminate_on_idle_stdin = true;
        rq.pty_info = &pty;
    }
    /* Modal ends the process itself at its timeout (we have no kill call) */
    rq.timeout_secs = o->timeout > 0 ? (uint32_t)(o->timeout + 0.999) : 0;
    if (o->workdir)
        rq.workdir = (char *)o->workdir;
    rq.n_env = n;
    rq.env = ptrs;
    /* the exec id makes a retry the same exec */
    r = md_rcall(p, rt, "TaskExecStart", MSG(&rq), NULL, NULL, true, "exec", err);
    for (size_t i = 0; i < n; i++)
        free(entries[i].key);
    free(entries);
    free(ptrs);
    return r;
}

static int md_stdin_write(pe_provider *p, const md_router *rt, const char *exec_id, uint64_t offset,
                          const void *data, size_t len, bool eof, pe_err *err)
{
    PeModal__TaskExecStdinWriteRequest rq = PE_MODAL__TASK_EXEC_STDIN_WRITE_REQUEST__INIT;

    rq.task_id = rt->task_id;
    rq.exec_id = (char *)exec_id;
    rq.offset = offset;
    rq.data.data = (uint8_t *)data;
    rq.data.len = len;
    rq.eof = eof;
    /* the offset makes a retry write each byte once */
    return md_rcall(p, rt, "TaskExecStdinWrite", MSG(&rq), NULL, NULL, true, "write to stdin", err);
}

static int md_exec_wait(pe_provider *p, const md_router *rt, const char *exec_id, int *code,
                        pe_err *err)
{
    PeModal__TaskExecWaitRequest rq = PE_MODAL__TASK_EXEC_WAIT_REQUEST__INIT;
    md_unary u = {.desc = &pe_modal__task_exec_wait_response__descriptor};
    PeModal__TaskExecWaitResponse *rs;
    int r;

    rq.task_id = rt->task_id;
    rq.exec_id = (char *)exec_id;
    r = md_rcall(p, rt, "TaskExecWait", MSG(&rq), md_unary_msg, &u, true, "wait for a process",
                 err);
    rs = (PeModal__TaskExecWaitResponse *)u.out;
    if (r == 0 && rs == NULL)
        r = pe__provider_fail(p, err, PE_EREMOTE, NAME " answered a wait without an exit status");
    if (r == 0) {
        if (rs->status_case == PE_MODAL__TASK_EXEC_WAIT_RESPONSE__STATUS_SIGNAL)
            *code = 128 + rs->signal;
        else if (rs->status_case == PE_MODAL__TASK_EXEC_WAIT_RESPONSE__STATUS_CODE)
            *code = rs->code;
        else
            r = pe__provider_fail(p, err, PE_EREMOTE, NAME " answered a wait without an exit code");
    }
    if (u.out)
        protobuf_c_message_free_unpacked(u.out, NULL);
    return r;
}

/* Both output streams of one process read at once (two server streams),
 * each message handed to out(fd). */
typedef struct md_sink {
    void (*out)(void *ud, int fd, const uint8_t *data, size_t len);
    void *ud;
    int fd;
} md_sink;

static bool md_stdio_msg(const uint8_t *msg, size_t len, void *ud)
{
    md_sink *s = ud;
    PeModal__TaskExecStdioReadResponse *rs =
        pe_modal__task_exec_stdio_read_response__unpack(NULL, len, msg);

    if (rs == NULL)
        return false;
    if (rs->data.len)
        s->out(s->ud, s->fd, rs->data.data, rs->data.len);
    pe_modal__task_exec_stdio_read_response__free_unpacked(rs, NULL);
    return true;
}

/* n: 2 (stdout and stderr), or 1 (stdout: a terminal's only output) */
static int md_read_output(pe_provider *p, const md_router *rt, const char *exec_id,
                          md_sink sinks[2], int n, volatile int *cancel, pe_err *err)
{
    PeModal__TaskExecStdioReadRequest rq[2] = {PE_MODAL__TASK_EXEC_STDIO_READ_REQUEST__INIT,
                                               PE_MODAL__TASK_EXEC_STDIO_READ_REQUEST__INIT};
    const char *hdrs[] = {rt->auth, NULL};
    md_call c[2];
    md_xfer x[2];
    char *url[2];
    CURLM *multi = curl_multi_init();
    int running = 0, r = 0;

    /* one connection per stream: libcurl 7.88 multiplexing the second
     * stream onto a fresh h2c (prior knowledge) connection failed with an
     * HTTP/2 framing error against the double; which side is at fault is
     * not settled, and two connections cost little */
    curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_NOTHING);
    for (int i = 0; i < n; i++) {
        rq[i].task_id = rt->task_id;
        rq[i].exec_id = (char *)exec_id;
        rq[i].file_descriptor = i; /* the router's numbering: 0 stdout, 1 stderr */
        c[i] = (md_call){.base = rt->url,
                         .method = ROUTER "TaskExecStdioRead",
                         .headers = hdrs,
                         .req = MSG(&rq[i]),
                         .on_msg = md_stdio_msg,
                         .ud = &sinks[i],
                         .stream = true,
                         .cancel = cancel,
                         .what = "exec"};
        md_xfer_init(p, &x[i], &c[i], &url[i]);
        curl_multi_add_handle(multi, x[i].curl);
    }
    do {
        CURLMcode mc = curl_multi_perform(multi, &running);
        if (mc == CURLM_OK && running)
            mc = curl_multi_poll(multi, NULL, 0, 200, NULL);
        if (mc != CURLM_OK)
            break;
    } while (running);
    for (;;) {
        int left;
        CURLMsg *m = curl_multi_info_read(multi, &left);
        bool retry;
        if (m == NULL)
            break;
        if (m->msg != CURLMSG_DONE)
            continue;
        for (int i = 0; i < n; i++)
            if (m->easy_handle == x[i].curl && r == 0)
                r = md_xfer_result(p, &x[i], m->data.result, &retry, err);
    }
    for (int i = 0; i < n; i++) {
        curl_multi_remove_handle(multi, x[i].curl);
        md_xfer_free(&x[i]);
        free(url[i]);
    }
    curl_multi_cleanup(multi);
    return r;
}

/* ---- exec: the stream ---- */

typedef struct md_exec {
    md_router rt;
    char exec_id[33];
    bool tty;
    uint64_t in_off;
    /* a write to stdin failed: the input is lost, so the stream ends with
     * in_error (set before in_failed; the side thread writes, run reads) */
    int in_failed;
    char in_error[PE_ERR_MSG_MAX];
    volatile int killed;
} md_exec;

static void md_exec_free(void *ud)
{
    md_exec *x = ud;

    md_router_free(&x->rt);
    free(x);
}

static void md_stream_out(void *ud, int fd, const uint8_t *data, size_t len)
{
    pe__stream_output(ud, fd, data, len);
}

static int md_run(struct pe_provider_stream *s)
{
    md_exec *x = s->ud;
    md_sink sinks[2] = {{md_stream_out, s, 1}, {md_stream_out, s, 2}};
    pe_err err;
    int code;

    if (md_read_output(s->p, &x->rt, x->exec_id, sinks, x->tty ? 1 : 2, &s->cancel, &err) < 0) {
        if (x->killed)
            pe__stream_exit(s, 137);
        else if (__atomic_load_n(&x->in_failed, __ATOMIC_ACQUIRE))
            snprintf(s->error, sizeof(s->error), "%s", x->in_error);
        else
            snprintf(s->error, sizeof(s->error), "%s", err.msg);
        return 0;
    }
    if (md_exec_wait(s->p, &x->rt, x->exec_id, &code, &err) < 0)
        snprintf(s->error, sizeof(s->error), "%s", err.msg);
    else
        pe__stream_exit(s, code);
    return 0;
}

static int md_input(struct pe_provider_stream *s, const unsigned char *data, size_t len)
{
    md_exec *x = s->ud;
    pe_err err;

    if (__atomic_load_n(&x->in_failed, __ATOMIC_ACQUIRE))
        return 0;
    if (md_stdin_write(s->p, &x->rt, x->exec_id, x->in_off, data, len, len == 0, &err) == 0) {
        x->in_off += len;
        return 0;
    }
    /* the bytes are lost (a later write's offset would be refused, and the
     * process would wait for them): end the stream with the reason rather
     * than leave it waiting for input that never comes */
    snprintf(x->in_error, sizeof(x->in_error), "%s", err.msg);
    __atomic_store_n(&x->in_failed, 1, __ATOMIC_RELEASE);
    s->cancel = 1;
    return 0;
}

/* The router has no signal call: we stop reading (the exec's own timeout,
 * sent at start, ends it remotely) and report a kill. */
static void md_kill(struct pe_provider_stream *s)
{
    md_exec *x = s->ud;

    x->killed = 1;
    s->cancel = 1;
}

static const pe__stream_ops md_exec_ops = {.run_http = md_run,
                                           .on_input = md_input,
                                           .on_kill = md_kill,
                                           .free_ud = md_exec_free,
                                           .http_side = true};

static int md_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                         pe_provider_proc *proc, pe_err *err)
{
    md_exec *x = pe_xcalloc(1, sizeof(*x));

    md_exec_id(x->exec_id);
    x->tty = o->tty;
    if (md_router_get(p, id, &x->rt, err) < 0 || md_exec_begin(p, &x->rt, x->exec_id, o, err) < 0) {
        md_exec_free(x);
        return -1;
    }
    /* no stdin: EOF now, so a command that reads it does not wait forever
     * (a terminal's keyboard is its stdin) */
    if (!o->tty && !o->stdin_pipe &&
        md_stdin_write(p, &x->rt, x->exec_id, 0, NULL, 0, true, err) < 0) {
        md_exec_free(x);
        return -1;
    }
    return pe__stream_start(p, &md_exec_ops, x, NULL, o->tty, o->stdin_pipe, proc, err);
}

/* ---- files: Modal's in-sandbox tool ---- */

typedef struct md_buf {
    char *data;
    size_t len, max;
    bool toobig;
} md_buf;

static void md_buf_out(void *ud, int fd, const uint8_t *data, size_t len)
{
    md_buf *b = &((md_buf *)ud)[fd - 1];

    if (b->len + len > b->max) {
        b->toobig = true;
        len = b->max - b->len;
    }
    b->data = pe_xrealloc(b->data, b->len + len + 1);
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

/* Run the fs tool with one JSON command (and stdin), keep its output. */
static int md_tool(pe_provider *p, const char *id, json_t *cmd, const void *in, size_t in_len,
                   size_t max, md_buf out[2], int *code, const char *what, pe_err *err)
{
    char *text = json_dumps(cmd, JSON_COMPACT);
    char tool[] = FS_TOOLS, *argv[] = {tool, text, NULL};
    pe_provider_exec_opts o = {.argv = argv};
    md_sink sinks[2] = {{md_buf_out, out, 1}, {md_buf_out, out, 2}};
    md_router rt;
    char exec_id[33];
    size_t off = 0;
    int r;

    out[0] = (md_buf){.max = max};
    out[1] = (md_buf){.max = 64 << 10};
    md_exec_id(exec_id);
    r = md_router_get(p, id, &rt, err);
    if (r == 0)
        r = md_exec_begin(p, &rt, exec_id, &o, err);
    while (r == 0 && off < in_len) {
        size_t n = in_len - off < STDIN_PIECE ? in_len - off : STDIN_PIECE;
        r = md_stdin_write(p, &rt, exec_id, off, (const char *)in + off, n, false, err);
        off += n;
    }
    if (r == 0)
        r = md_stdin_write(p, &rt, exec_id, off, NULL, 0, true, err);
    if (r == 0)
        r = md_read_output(p, &rt, exec_id, sinks, 2, NULL, err);
    if (r == 0)
        r = md_exec_wait(p, &rt, exec_id, code, err);
    md_router_free(&rt);
    free(text);
    if (r < 0) {
        free(out[0].data);
        free(out[1].data);
        out[0].data = out[1].data = NULL;
        return pe_err_prefix(err, "%s", what);
    }
    return 0;
}

/* The tool's error (a JSON line on stderr: error_kind, message) as ours. */
static int md_tool_error(pe_provider *p, md_buf out[2], int code, const char *what,
                         const char *path, pe_err *err)
{
    json_t *v = out[1].data ? json_loadb(out[1].data, out[1].len, 0, NULL) : NULL;
    const char *kind = json_string_value(json_object_get(v, "error_kind"));
    const char *msg = json_string_value(json_object_get(v, "message"));
    int r;

    if (kind && strcmp(kind, "NotFound") == 0)
        r = pe__provider_fail(p, err, PE_ENOENT, NAME ": %s: %s: not found", what, path);
    else
        r = pe__provider_fail(p, err, PE_EINVAL, NAME ": %s: %s: %s%s%.200s (exit %d)", what, path,
                              kind ? kind : "failed", msg ? ": " : "", msg ? msg : "", code);
    json_decref(v);
    free(out[0].data);
    free(out[1].data);
    return r;
}

static int md_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                        size_t *len, pe_err *err)
{
    json_t *cmd = json_pack("{s:{s:s}}", "ReadFile", "path", path);
    md_buf out[2];
    int code, r = md_tool(p, id, cmd, NULL, 0, max, out, &code, "read a file", err);

    json_decref(cmd);
    if (r < 0)
        return -1;
    if (code != 0)
        return md_tool_error(p, out, code, "read a file", path, err);
    free(out[1].data);
    if (out[0].toobig) {
        free(out[0].data);
        return pe_err_set(err, PE_EINVAL, 0, NAME ": read a file: %s: larger than %zu bytes", path,
                          max);
    }
    *data = out[0].data ? out[0].data : pe_xstrdup("");
    *len = out[0].len;
    return 0;
}

static int md_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                         size_t len, unsigned mode, pe_err *err)
{
    json_t *cmd = json_pack("{s:{s:s}}", "WriteFile", "path", path);
    md_buf out[2];
    int code, r = md_tool(p, id, cmd, data, len, 64 << 10, out, &code, "write a file", err);

    (void)mode; /* the tool keeps the sandbox's default mode */
    json_decref(cmd);
    if (r < 0)
        return -1;
    if (code != 0)
        return md_tool_error(p, out, code, "write a file", path, err);
    free(out[0].data);
    free(out[1].data);
    return 0;
}

static int md_file_remove(pe_provider *p, const char *id, const char *path, bool recursive,
                          pe_err *err)
{
    json_t *cmd = json_pack("{s:{s:s, s:b}}", "Remove", "path", path, "recursive", recursive);
    md_buf out[2];
    int code, r = md_tool(p, id, cmd, NULL, 0, 64 << 10, out, &code, "remove a file", err);

    json_decref(cmd);
    if (r < 0)
        return -1;
    if (code != 0)
        return md_tool_error(p, out, code, "remove a file", path, err);
    free(out[0].data);
    free(out[1].data);
    return 0;
}

/* ListFiles answers a JSON array of {name, type: file|directory|symlink,
 * size, mode, ...} (the entry Modal's SDK parses). */
static int md_file_list(pe_provider *p, const char *id, const char *path, pe_provider_dirent **ents,
                        size_t *n, pe_err *err)
{
    json_t *cmd = json_pack("{s:{s:s}}", "ListFiles", "path", path), *v, *e;
    md_buf out[2];
    size_t i;
    int code, r = md_tool(p, id, cmd, NULL, 0, 16 << 20, out, &code, "list files", err);

    json_decref(cmd);
    if (r < 0)
        return -1;
    if (code != 0)
        return md_tool_error(p, out, code, "list files", path, err);
    free(out[1].data);
    v = out[0].toobig || out[0].data == NULL ? NULL : json_loadb(out[0].data, out[0].len, 0, NULL);
    free(out[0].data);
    if (!json_is_array(v)) {
        json_decref(v);
        return pe__provider_fail(p, err, PE_EREMOTE,
                                 NAME ": list files: %s: an answer that is not its API", path);
    }
    *ents = pe_xcalloc(json_array_size(v) + 1, sizeof(**ents));
    *n = 0;
    json_array_foreach(v, i, e)
    {
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *type = json_string_value(json_object_get(e, "type"));
        pe_provider_dirent *d = &(*ents)[*n];
        if (name == NULL || name[0] == '\0' || strlen(name) >= sizeof(d->name) ||
            strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue; /* a name that would climb or nest: not one entry of path */
        snprintf(d->name, sizeof(d->name), "%s", name);
        d->is_dir = type && strcmp(type, "directory") == 0;
        d->size = (uint64_t)json_integer_value(json_object_get(e, "size"));
        d->mode = (unsigned)json_integer_value(json_object_get(e, "mode")) & 07777;
        (*n)++;
    }
    json_decref(v);
    return 0;
}

const pe_provider_ops pe__provider_modal = {
    .name = NAME,
    .caps = PE_CAP_PTY | PE_CAP_STDIN | PE_CAP_FILE_LIST | PE_CAP_FILE_REMOVE | PE_CAP_PREVIEW,
    .open = md_open,
    .close = md_close,
    .create = md_create,
    /* Modal has no stop: stop terminates, and nothing starts it again */
    .stop = md_terminate,
    .remove = md_terminate,
    .status = md_status,
    .exec_start = md_exec_start,
    .file_read = md_file_read,
    .file_write = md_file_write,
    .file_list = md_file_list,
    .file_remove = md_file_remove,
    .preview = md_preview,
};
