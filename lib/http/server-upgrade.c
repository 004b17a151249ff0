/* Answers that outlive on_access: streams (Server-Sent Events and the
 * like: the body is pulled by libmicrohttpd through stream_read, and the
 * connection parked while nothing is queued), the WebSocket handshake
 * (the framing is ws.c's) and raw upgrades (a proxy relays the bytes).
 * Loop thread only. */
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/util.h"
#include "http/server-conn.h"

#define STREAM_BLOCK (64 * 1024)

/* ---- streams ------------------------------------------------------------ */

static void stream_unlink(struct pe_http_stream *st)
{
    pe_http_server *s = st->srv;

    if (st->prev)
        st->prev->next = st->next;
    else if (s->streams == st)
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->next = st->prev = NULL;
}

/* The connection is over: tell the owner once, unless it let go. */
void pe__http_stream_gone(struct pe_http_stream *st)
{
    if (st->c) {
        st->c->stream = NULL;
        st->c = NULL;
    }
    if (st->gone)
        return;
    st->gone = true;
    stream_unlink(st);
    if (!st->user_closed && st->cb.on_close)
        st->cb.on_close(st, st->ud);
}

static void stream_unpark(struct pe_http_stream *st)
{
    if (!st->parked || st->c == NULL)
        return;
    st->parked = false;
    MHD_resume_connection(st->c->mc);
    pe__http_kick(st->srv);
}

/* MHD pulls the body: hand it what is queued, or park the connection
 * (suspend) until the next write, so an idle stream costs no wakeups. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct pe_http_stream *st = cls;
    size_t n;

    if (st->len > st->off) {
        n = st->len - st->off < max ? st->len - st->off : max;
        memcpy(buf, st->buf + st->off, n);
        st->off += n;
        if (st->off == st->len) {
            st->off = st->len = 0;
            if (!st->user_closed && !st->gone && st->cb.on_drain)
                st->cb.on_drain(st, st->ud);
        }
        return (ssize_t)n;
    }
    if (st->user_closed || st->ending || st->c == NULL)
        return MHD_CONTENT_READER_END_OF_STREAM;
    st->parked = true;
    MHD_suspend_connection(st->c->mc);
    return 0;
}

static void stream_free(void *cls)
{
    struct pe_http_stream *st = cls;

    pe__http_stream_gone(st);
    free(st->buf);
    free(st);
}

pe_http_stream *pe_http_respond_stream(pe_http_request *req, unsigned status,
                                       const char *content_type, const char *const *headers,
                                       const pe_http_stream_callbacks *cb, void *ud)
{
    struct conn *c = pe__http_conn_of(req);
    struct pe_http_stream *st;
    struct MHD_Response *r;

    if (!pe__http_check_handler_answer(c))
        return NULL;
    st = pe_xcalloc(1, sizeof(*st));
    st->srv = c->srv;
    st->c = c;
    st->cb = *cb;
    st->ud = ud;
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, st,
                                          stream_free);
    if (r == NULL)
        abort(); /* allocation failure */
    if (content_type)
        MHD_add_response_header(r, "Content-Type", content_type);
    pe__http_add_headers(r, headers);
    c->resp = r;
    c->status = status;
    c->stream = st;
    st->next = c->srv->streams;
    if (st->next)
        st->next->prev = st;
    c->srv->streams = st;
    pe__http_answered(c);
    return st;
}

int pe_http_stream_write(pe_http_stream *st, const void *data, size_t len)
{
    if (st->user_closed || st->c == NULL)
        return -1;
    if (st->off > 0 && st->off == st->len)
        st->off = st->len = 0;
    if (st->len + len > st->cap) {
        if (st->off > 0) { /* compact before growing */
            memmove(st->buf, st->buf + st->off, st->len - st->off);
            st->len -= st->off;
            st->off = 0;
        }
        if (st->len + len > st->cap) {
            st->cap = (st->len + len) * 2;
            st->buf = pe_xrealloc(st->buf, st->cap);
        }
    }
    memcpy(st->buf + st->len, data, len);
    st->len += len;
    stream_unpark(st);
    return 0;
}

size_t pe_http_stream_pending(const pe_http_stream *st)
{
    return st->len - st->off;
}

void pe_http_stream_close(pe_http_stream *st)
{
    if (st == NULL || st->user_closed)
        return;
    st->user_closed = true;
    if (st->c == NULL)
        return; /* already gone: freed with its response */
    stream_unpark(st);
}

/* ---- WebSocket handshake (the framing is ws.c's) ------------------------ */

static void on_upgrade(void *cls, struct MHD_Connection *mc, void *con_cls, const char *extra_in,
                       size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    struct conn *c = con_cls;

    if (c)
        c->ws = NULL;
    pe__ws_attach(cls, sock, extra_in, extra_in_size, urh);
}

/* Sec-WebSocket-Accept: base64(SHA-1(key + the RFC's GUID)). */
static void ws_accept_key(const char *key, char out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE) + 1])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    struct sha1_ctx ctx;
    uint8_t digest[SHA1_DIGEST_SIZE];

    sha1_init(&ctx);
    sha1_update(&ctx, strlen(key), (const uint8_t *)key);
    sha1_update(&ctx, sizeof(guid) - 1, (const uint8_t *)guid);
    sha1_digest(&ctx, sizeof(digest), digest);
    base64_encode_raw(out, sizeof(digest), digest);
    out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
}

static bool has_token(const char *list, const char *token)
{
    size_t n = strlen(token);

    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (strncasecmp(p, token, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ' '))
            return true;
        p = strchr(p, ',');
    }
    return false;
}

pe_http_ws *pe_http_upgrade_ws(pe_http_request *req, const pe_http_ws_callbacks *cb,
                               size_t max_message, void *ud)
{
    static const char *const need_ws[] = {"Upgrade", "websocket", NULL};
    static const char *const need_13[] = {"Sec-WebSocket-Version", "13", NULL};
    struct conn *c = pe__http_conn_of(req);
    const char *upgrade = pe_http_header(req, "Upgrade");
    const char *connection = pe_http_header(req, "Connection");
    const char *key = pe_http_header(req, "Sec-WebSocket-Key");
    const char *version = pe_http_header(req, "Sec-WebSocket-Version");
    char accept[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE) + 1];
    struct MHD_Response *r;
    pe_http_ws *ws;

    if (!pe__http_check_handler_answer(c))
        return NULL;
    if (upgrade == NULL || strcasecmp(upgrade, "websocket") != 0) {
        static const char msg[] = "{\"error\":\"UpgradeRequired\",\"message\":\"WebSocket only\"}";
        pe_http_respond(req, 426, JSON_TYPE, msg, sizeof(msg) - 1, need_ws);
        return NULL;
    }
    if (strcmp(c->hreq.method, "GET") != 0 || !has_token(connection, "upgrade") || key == NULL ||
        strlen(key) != 24 || version == NULL || strcmp(version, "13") != 0) {
        static const char msg[] = "{\"error\":\"InvalidRequest\","
                                  "\"message\":\"bad WebSocket handshake\"}";
        pe_http_respond(req, 400, JSON_TYPE, msg, sizeof(msg) - 1, need_13);
        return NULL;
    }
    ws_accept_key(key, accept);
    ws = pe__ws_new(c->srv, cb, max_message, ud);
    r = MHD_create_response_for_upgrade(on_upgrade, ws);
    if (r == NULL)
        abort(); /* allocation failure */
    MHD_add_response_header(r, "Upgrade", "websocket");
    MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
    c->resp = r;
    c->status = 101;
    c->ws = ws;
    pe__http_answered(c);
    return ws;
}

/* ---- raw upgrades (a proxy relays the bytes itself) --------------------- */

static void raw_unlink(struct pe_http_raw *raw)
{
    pe_http_server *s = raw->srv;

    if (raw->prev)
        raw->prev->next = raw->next;
    else if (s->raws == raw)
        s->raws = raw->next;
    if (raw->next)
        raw->next->prev = raw->prev;
    raw->next = raw->prev = NULL;
}

static void on_raw_upgrade(void *cls, struct MHD_Connection *mc, void *con_cls,
                           const char *extra_in, size_t extra_in_size, MHD_socket sock,
                           struct MHD_UpgradeResponseHandle *urh)
{
    struct pe_http_raw *raw = cls;
    struct conn *c = con_cls;

    if (c)
        c->raw = NULL;
    raw->urh = urh;
    raw->cb.on_socket(raw, sock, extra_in, extra_in_size, raw->ud);
}

pe_http_raw *pe_http_upgrade_raw(pe_http_request *req, const char *const *headers,
                                 const pe_http_raw_callbacks *cb, void *ud)
{
    struct conn *c = pe__http_conn_of(req);
    struct pe_http_raw *raw;
    struct MHD_Response *r;

    if (!pe__http_check_handler_answer(c))
        return NULL;
    raw = pe_xcalloc(1, sizeof(*raw));
    raw->srv = c->srv;
    raw->cb = *cb;
    raw->ud = ud;
    r = MHD_create_response_for_upgrade(on_raw_upgrade, raw);
    if (r == NULL)
        abort(); /* allocation failure */
    pe__http_add_headers(r, headers);
    raw->next = c->srv->raws;
    if (raw->next)
        raw->next->prev = raw;
    c->srv->raws = raw;
    c->resp = r;
    c->status = 101;
    c->raw = raw;
    pe__http_answered(c);
    return raw;
}

void pe_http_raw_close(pe_http_raw *raw)
{
    pe_http_server *s;

    if (raw == NULL)
        return;
    s = raw->srv;
    raw_unlink(raw);
    if (raw->urh) {
        MHD_upgrade_action(raw->urh, MHD_UPGRADE_ACTION_CLOSE);
        pe__http_kick(s);
    }
    free(raw);
}

/* The owner is told (on_close) and must stop using the socket; the server
 * then gives it back to MHD. */
void pe__http_raw_end(struct pe_http_raw *raw)
{
    raw_unlink(raw);
    raw->next = raw->prev = NULL;
    if (raw->cb.on_close)
        raw->cb.on_close(raw, raw->ud);
    if (raw->urh)
        MHD_upgrade_action(raw->urh, MHD_UPGRADE_ACTION_CLOSE);
    free(raw);
}
