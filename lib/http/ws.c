/* WebSocket connections after the upgrade: wslay frames them, our loop
 * drives the socket.
 *
 * server.c answers the handshake (101) and creates the pe_http_ws at once,
 * so a handler can queue messages before libmicrohttpd hands the socket
 * over (pe__ws_attach); from then on MHD only holds the connection's slot
 * until we give it back with MHD_upgrade_action(CLOSE).
 *
 * Threading and lifetime: loop thread only. Nothing here frees a
 * pe_http_ws on a call stack that started in the owner's code: sending only
 * queues and asks for EPOLLOUT, and the end of a connection (error, close
 * handshake done, linger timeout) is always reached from one of our own
 * watchers, which then calls on_close (unless the owner let go with
 * pe_http_ws_close) and frees. Limits (STYLE rule 8): messages over
 * max_message are refused (1009); the output queue is the owner's to
 * bound with pe_http_ws_pending.
 *
 * Protocol errors: RFC 6455 asks for a close frame with the reason's code
 * before the connection is dropped. wslay sends one for what its event
 * layer finds (unmasked frames, bad opcodes, bad close codes, invalid
 * UTF-8, messages over the limit) but not for what its frame layer
 * refuses (a broken length, a fragmented or oversized control frame),
 * where it just fails. So every frame header is checked here first, as the
 * bytes are handed to wslay (struct frame_check, recv_cb): a frame that
 * breaks a rule never reaches wslay; we send the close frame with the
 * rule's code (1002, or 1009 for a length over max_message, even one of
 * 2^63 - 1 bytes) and read and drop what follows, as for any protocol
 * error. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <wslay/wslay.h>

#include "core/log.h"
#include "core/util.h"
#include "http/server-internal.h"

#define DEFAULT_MAX_MESSAGE (1024 * 1024)
/* After pe_http_ws_close, how long the peer has to take what is queued
 * and answer our close frame with its own. */
#define LINGER_NS (10ull * 1000000000ull)
/* After we closed on a protocol error (and so stopped reading frames), how
 * long we read and drop what the peer still sends before closing. */
#define DRAIN_NS (2ull * 1000000000ull)

/* Frame boundaries and header rules, fed the bytes as they arrive: the
 * header is collected (up to 14 bytes) and checked, then the payload is
 * counted through. Pure, see check_bytes. */
struct frame_check {
    uint8_t hdr[14];
    size_t hlen;          /* header bytes collected so far */
    uint64_t payload;     /* payload bytes of the current frame still to come */
    uint64_t message;     /* bytes of the fragmented data message so far */
    bool in_message;      /* a data message's first fragment came without FIN */
    uint64_t max_message; /* 1009 beyond */
};

struct pe_http_ws {
    pe_http_server *srv;
    struct frame_check check;
    uint16_t proto_code; /* a rule broken (1002, 1009): close with it */
    bool io_failed;      /* the socket failed (EOF, reset), not a frame */
    wslay_event_context_ptr ctx;
    int fd; /* -1 until attached, and after the end */
    pe_ev_io *io;
    uint32_t watching;
    pe_ev_timer *linger;
    struct MHD_UpgradeResponseHandle *urh;
    char *extra; /* bytes MHD read past the handshake: frames already */
    size_t extra_len, extra_off;
    pe_http_ws_callbacks cb;
    void *ud;
    bool user_closed; /* the owner let go: no more callbacks */
    bool in_recv;     /* inside wslay_event_recv: messages are being delivered */
    bool ended;
    bool draining; /* our close is out, our side shut down: dropping input */
    /* wslay sends control frames ahead of queued messages: a graceful close
     * is queued only once the messages before it are out. */
    bool close_pending;
    uint16_t close_code;
    char close_reason[124];
    pe_http_ws *next, *prev; /* the server's list */
};

/* The header is complete: 0, or the close code of the rule it breaks. */
static uint16_t header_verdict(struct frame_check *fc, uint64_t len)
{
    const uint8_t *h = fc->hdr;
    unsigned op = h[0] & 0x0f, lcode = h[1] & 0x7f;
    bool fin = h[0] & 0x80, control = op & 0x08;

    if (h[0] & 0x70)
        return WSLAY_CODE_PROTOCOL_ERROR; /* RSV bits: no extension was agreed */
    if (!(h[1] & 0x80))
        return WSLAY_CODE_PROTOCOL_ERROR; /* clients must mask */
    if ((lcode == 126 && len < 126) || (lcode == 127 && len < 65536) ||
        (lcode == 127 && (len >> 63)))
        return WSLAY_CODE_PROTOCOL_ERROR; /* not the shortest length form, or top bit set */
    if (control) {
        if (op > WSLAY_PONG || !fin || len > 125 || (op == WSLAY_CONNECTION_CLOSE && len == 1))
            return WSLAY_CODE_PROTOCOL_ERROR;
        return 0;
    }
    if (op > WSLAY_BINARY_FRAME || (op == WSLAY_CONTINUATION_FRAME) != fc->in_message)
        return WSLAY_CODE_PROTOCOL_ERROR; /* reserved opcode, or fragments out of order */
    if (len > fc->max_message || fc->message > fc->max_message - len)
        return WSLAY_CODE_MESSAGE_TOO_BIG;
    fc->message = fin ? 0 : fc->message + len;
    fc->in_message = !fin;
    return 0;
}

/* The size of the header being collected: 2 bytes, then the extended
 * length (0, 2 or 8) and the masking key (4) that they announce. */
static size_t header_size(const struct frame_check *fc)
{
    unsigned lcode;

    if (fc->hlen < 2)
        return 2;
    lcode = fc->hdr[1] & 0x7f;
    return 2 + (lcode == 126 ? 2 : lcode == 127 ? 8 : 0) + ((fc->hdr[1] & 0x80) ? 4 : 0);
}

static uint64_t header_length(const struct frame_check *fc)
{
    unsigned lcode = fc->hdr[1] & 0x7f;
    uint64_t len = 0;

    if (lcode < 126)
        return lcode;
    for (size_t i = 0; i < (lcode == 126 ? 2u : 8u); i++)
        len = len << 8 | fc->hdr[2 + i];
    return len;
}

/* Walk buf[from, to) of the stream, buf[0, from) being the first bytes
 * of a header held back from the previous call (fc->hdr). *ok is how many
 * bytes of buf may go to wslay: those before a header that is not whole
 * yet (wslay's frame layer refuses a bad header from its first bytes
 * without a close code, so it only ever sees whole, checked headers) or
 * before a header that breaks a rule. Returns 0, or that rule's code. */
static uint16_t check_bytes(struct frame_check *fc, const uint8_t *buf, size_t from, size_t to,
                            size_t *ok)
{
    size_t i = from, start = 0;

    while (i < to) {
        if (fc->payload > 0) {
            uint64_t take = to - i < fc->payload ? to - i : fc->payload;
            fc->payload -= take;
            i += (size_t)take;
            continue;
        }
        if (fc->hlen == 0)
            start = i;
        fc->hdr[fc->hlen++] = buf[i++];
        if (fc->hlen < header_size(fc))
            continue;
        fc->hlen = 0;
        fc->payload = header_length(fc);
        {
            uint16_t code = header_verdict(fc, fc->payload);
            if (code) {
                *ok = start;
                return code;
            }
        }
    }
    *ok = fc->hlen > 0 ? start : to;
    return 0;
}

static ssize_t read_more(pe_http_ws *ws, uint8_t *buf, size_t len)
{
    size_t n;

    if (ws->extra_off < ws->extra_len) {
        n = ws->extra_len - ws->extra_off < len ? ws->extra_len - ws->extra_off : len;
        memcpy(buf, ws->extra + ws->extra_off, n);
        ws->extra_off += n;
        return (ssize_t)n;
    }
    return recv(ws->fd, buf, len, 0);
}

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    pe_http_ws *ws = ud;
    size_t held = ws->check.hlen, ok;
    ssize_t n;

    /* After a broken frame nothing more reaches wslay. (wslay compacts
     * its buffer before it reads, so there is always room for the at most
     * 13 held-back bytes and more; if not, it asks again later.) */
    if (ws->proto_code || len <= held) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    memcpy(buf, ws->check.hdr, held);
    n = read_more(ws, buf + held, len - held);
    if (n > 0) {
        ws->proto_code = check_bytes(&ws->check, buf, held, held + (size_t)n, &ok);
        if (ok > 0)
            return (ssize_t)ok;
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK); /* a header still partial, or bad */
        return -1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    } else {
        ws->io_failed = true; /* EOF or reset */
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    }
    return -1;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    pe_http_ws *ws = ud;
    ssize_t n = send(ws->fd, data, len, MSG_NOSIGNAL | (flags & WSLAY_MSG_MORE ? MSG_MORE : 0));

    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EINTR) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    } else {
        ws->io_failed = true;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    }
    return -1;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud)
{
    pe_http_ws *ws = ud;

    if (ws->user_closed || ws->cb.on_message == NULL)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        ws->cb.on_message(ws, arg->opcode == WSLAY_BINARY_FRAME, (const char *)arg->msg,
                          arg->msg_length, ws->ud);
}

static void ws_unlink(pe_http_ws *ws)
{
    pe_http_ws **head = pe__http_ws_list(ws->srv);

    if (ws->prev)
        ws->prev->next = ws->next;
    else if (*head == ws)
        *head = ws->next;
    if (ws->next)
        ws->next->prev = ws->prev;
    ws->next = ws->prev = NULL;
}

static void ws_free(pe_http_ws *ws)
{
    ws_unlink(ws);
    pe_ev_timer_stop(ws->linger);
    wslay_event_context_free(ws->ctx);
    free(ws->extra);
    free(ws);
}

/* The close code of a finished connection: the one we sent (a protocol
 * error we detected, or our own close), else the peer's, else 1006. */
static unsigned end_code(pe_http_ws *ws)
{
    if (wslay_event_get_close_sent(ws->ctx))
        return wslay_event_get_status_code_sent(ws->ctx);
    if (wslay_event_get_close_received(ws->ctx))
        return wslay_event_get_status_code_received(ws->ctx);
    return WSLAY_CODE_ABNORMAL_CLOSURE;
}

/* Give the socket back to MHD (which closes it), tell the owner, free. */
static void ws_end(pe_http_ws *ws)
{
    unsigned code = end_code(ws);

    if (ws->ended)
        return;
    ws->ended = true;
    pe_ev_io_stop(ws->io);
    ws->io = NULL;
    if (ws->urh) {
        MHD_upgrade_action(ws->urh, MHD_UPGRADE_ACTION_CLOSE);
        ws->urh = NULL;
        ws->fd = -1;
        pe__http_run(ws->srv);
    }
    if (!ws->user_closed && ws->cb.on_close)
        ws->cb.on_close(ws, code, ws->ud);
    ws_free(ws);
}

static void ws_watch(pe_http_ws *ws)
{
    uint32_t want = 0;

    if (wslay_event_want_read(ws->ctx))
        want |= EPOLLIN;
    if (wslay_event_want_write(ws->ctx))
        want |= EPOLLOUT;
    if (want != ws->watching && ws->io) {
        pe_ev_io_modify(ws->io, want, NULL);
        ws->watching = want;
    }
}

static void on_linger(pe_ev_timer *t, void *ud)
{
    ws_end(ud);
}

/* Closing a socket whose peer's bytes we have not read makes the kernel
 * send a reset, and a reset can destroy our close frame in the peer's
 * receive queue before the peer reads it: a client that sent an oversized
 * or broken frame would see a bare reset instead of 1009 or 1002. So when
 * we close without the peer's close (a protocol error), we shut our side
 * down and read and drop its bytes until it closes, for DRAIN_NS at most. */
static bool start_drain(pe_http_ws *ws)
{
    pe_err err;

    if (ws->fd < 0 || !wslay_event_get_close_sent(ws->ctx) ||
        wslay_event_get_close_received(ws->ctx) || shutdown(ws->fd, SHUT_WR) != 0)
        return false;
    pe_ev_timer_stop(ws->linger);
    ws->linger = pe_ev_timer_start(pe__http_loop(ws->srv), DRAIN_NS, 0, on_linger, ws, &err);
    if (ws->linger == NULL)
        return false;
    ws->draining = true;
    ws->watching = EPOLLIN;
    pe_ev_io_modify(ws->io, ws->watching, NULL);
    return true;
}

static void drain(pe_http_ws *ws)
{
    char buf[16384];
    ssize_t n;

    while ((n = recv(ws->fd, buf, sizeof(buf), 0)) > 0)
        ;
    if (n == 0 || (errno != EAGAIN && errno != EINTR))
        ws_end(ws);
}

/* A broken frame (ws->proto_code): stop reading frames and queue our
 * close with its code; it goes out next (wslay sends control frames
 * ahead of queued messages), then the drain below runs. */
static void protocol_error(pe_http_ws *ws)
{
    wslay_event_shutdown_read(ws->ctx);
    if (!wslay_event_get_close_sent(ws->ctx))
        wslay_event_queue_close(ws->ctx, ws->proto_code, NULL, 0);
}

static void on_io(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    pe_http_ws *ws = ud;
    bool had_output = wslay_event_get_queued_msg_count(ws->ctx) > 0;

    if (ws->draining) {
        drain(ws);
        return;
    }
    if (wslay_event_want_read(ws->ctx) &&
        (events & (EPOLLIN | EPOLLERR | EPOLLHUP) || ws->extra_off < ws->extra_len)) {
        ws->in_recv = true;
        int r = wslay_event_recv(ws->ctx);
        ws->in_recv = false;
        /* A failure that is not the socket's: wslay refused something
         * that check_bytes let through. Still a broken frame: say so. */
        if (r < 0 && !ws->io_failed && ws->proto_code == 0)
            ws->proto_code = WSLAY_CODE_PROTOCOL_ERROR;
        if (r < 0 && ws->io_failed) {
            ws_end(ws);
            return;
        }
        if (ws->proto_code)
            protocol_error(ws);
    }
    if (wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx) < 0) {
        ws_end(ws);
        return;
    }
    if (ws->close_pending && wslay_event_get_queued_msg_count(ws->ctx) == 0) {
        ws->close_pending = false;
        wslay_event_queue_close(ws->ctx, ws->close_code, (const uint8_t *)ws->close_reason,
                                strlen(ws->close_reason));
        if (wslay_event_send(ws->ctx) < 0) {
            ws_end(ws);
            return;
        }
    }
    if (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx)) {
        if (!start_drain(ws))
            ws_end(ws);
        return;
    }
    ws_watch(ws);
    if (had_output && wslay_event_get_queued_msg_count(ws->ctx) == 0 && !ws->user_closed &&
        ws->cb.on_drain)
        ws->cb.on_drain(ws, ws->ud);
}

/* Bound the closing handshake; only once attached (before, the pending
 * upgrade still points at ws). */
static void arm_linger(pe_http_ws *ws)
{
    pe_err err;

    if (ws->linger || ws->fd < 0)
        return;
    ws->linger = pe_ev_timer_start(pe__http_loop(ws->srv), LINGER_NS, 0, on_linger, ws, &err);
    if (ws->linger == NULL)
        pe_log_warn("websocket: %s", err.msg);
}

/* Something was queued: have the loop write it (never here, see top). */
static void want_output(pe_http_ws *ws)
{
    if (ws->io && !(ws->watching & EPOLLOUT) && !ws->in_recv) {
        ws->watching |= EPOLLOUT;
        pe_ev_io_modify(ws->io, ws->watching, NULL);
    }
}

pe_http_ws *pe__ws_new(pe_http_server *srv, const pe_http_ws_callbacks *cb, size_t max_message,
                       void *ud)
{
    static const struct wslay_event_callbacks wcb = {
        .recv_callback = recv_cb,
        .send_callback = send_cb,
        .on_msg_recv_callback = on_msg,
    };
    pe_http_ws *ws = pe_xcalloc(1, sizeof(*ws));
    pe_http_ws **head = pe__http_ws_list(srv);

    ws->srv = srv;
    ws->fd = -1;
    ws->cb = *cb;
    ws->ud = ud;
    if (wslay_event_context_server_init(&ws->ctx, &wcb, ws) != 0)
        abort(); /* allocation failure */
    ws->check.max_message = max_message ? max_message : DEFAULT_MAX_MESSAGE;
    wslay_event_config_set_max_recv_msg_length(ws->ctx, ws->check.max_message);
    ws->next = *head;
    if (ws->next)
        ws->next->prev = ws;
    *head = ws;
    return ws;
}

void pe__ws_attach(pe_http_ws *ws, int fd, const char *extra, size_t extra_len,
                   struct MHD_UpgradeResponseHandle *urh)
{
    pe_err err;

    ws->fd = fd;
    ws->urh = urh;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (extra_len > 0) {
        ws->extra = pe_xmalloc(extra_len);
        memcpy(ws->extra, extra, extra_len);
        ws->extra_len = extra_len;
    }
    /* EPOLLOUT fires at once on a fresh socket: the first round (extra
     * bytes, queued messages) runs from the loop, not inside MHD_run. */
    ws->watching = EPOLLIN | EPOLLOUT;
    ws->io = pe_ev_io_start(pe__http_loop(ws->srv), fd, ws->watching, on_io, ws, &err);
    if (ws->io == NULL) {
        pe_log_warn("websocket: %s", err.msg);
        ws_end(ws);
        return;
    }
    if (ws->user_closed)
        arm_linger(ws);
}

void pe__ws_abort(pe_http_ws *ws)
{
    ws->ended = true;
    if (!ws->user_closed && ws->cb.on_close)
        ws->cb.on_close(ws, WSLAY_CODE_ABNORMAL_CLOSURE, ws->ud);
    ws_free(ws);
}

void pe__ws_close_all(pe_http_server *srv)
{
    pe_http_ws **head = pe__http_ws_list(srv);
    pe_http_ws *ws = *head, *next;

    for (; ws; ws = next) {
        next = ws->next;
        if (ws->fd < 0)
            continue; /* not attached: MHD's shutdown aborts it */
        /* Best effort, the socket closes next: the owner's last messages
         * and its own close (wslay sends a close before queued messages),
         * else a bare "going away". */
        if (!ws->user_closed) {
            wslay_event_queue_close(ws->ctx, WSLAY_CODE_GOING_AWAY, NULL, 0);
        } else if (ws->close_pending) {
            wslay_event_send(ws->ctx);
            wslay_event_queue_close(ws->ctx, ws->close_code, (const uint8_t *)ws->close_reason,
                                    strlen(ws->close_reason));
        }
        wslay_event_send(ws->ctx);
        ws_end(ws);
    }
}

int pe_http_ws_send(pe_http_ws *ws, bool binary, const void *data, size_t len)
{
    struct wslay_event_msg msg = {
        .opcode = binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME,
        .msg = data,
        .msg_length = len,
    };

    if (ws->user_closed || ws->ended || wslay_event_queue_msg(ws->ctx, &msg) != 0)
        return -1;
    want_output(ws);
    return 0;
}

size_t pe_http_ws_pending(const pe_http_ws *ws)
{
    return wslay_event_get_queued_msg_length(ws->ctx);
}

void pe_http_ws_close(pe_http_ws *ws, unsigned code, const char *reason)
{
    size_t rlen = reason ? strlen(reason) : 0;

    if (ws == NULL || ws->user_closed)
        return;
    ws->user_closed = true;
    if (rlen > sizeof(ws->close_reason) - 1)
        rlen = sizeof(ws->close_reason) - 1;
    memcpy(ws->close_reason, reason ? reason : "", rlen);
    ws->close_reason[rlen] = '\0';
    ws->close_code = (uint16_t)code;
    if (wslay_event_get_queued_msg_count(ws->ctx) == 0)
        wslay_event_queue_close(ws->ctx, ws->close_code, (const uint8_t *)ws->close_reason, rlen);
    else
        ws->close_pending = true;
    want_output(ws);
    arm_linger(ws);
}

void pe_http_ws_abort(pe_http_ws *ws, unsigned code, const char *reason)
{
    size_t rlen = reason ? strlen(reason) : 0;

    if (ws == NULL || ws->user_closed)
        return;
    ws->user_closed = true;
    if (rlen > 120)
        rlen = 120;
    /* A control frame: wslay sends it before the queued messages, and
     * nothing after it. */
    wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)reason, rlen);
    want_output(ws);
    arm_linger(ws);
}
