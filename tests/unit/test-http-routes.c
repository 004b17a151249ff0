/* Routes outside /xrpc, streams and WebSockets of lib/http, end to end in
 * process: the loop runs on a thread, the test speaks raw HTTP/1.1 and
 * hand-built WebSocket frames to 127.0.0.1 (so that broken frames can be
 * sent on purpose). Loopback only. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "task.h"
#include "pocketenv/http.h"

struct fixture {
    pe_ev_loop *loop;
    pe_http_server *srv;
    pthread_t th;
    unsigned port;
};

static struct fixture fx;

/* ---- handlers (loop thread) ---------------------------------------------- */

/* Echo what the request looked like. */
static void h_echo(pe_http_request *req, void *ud)
{
    static const char *const hdrs[] = {"X-Route", "echo", NULL};
    const char *q = pe_http_query(req, "q");
    const char *h = pe_http_header(req, "X-Test");
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    fprintf(f, "%s %s rest=%s q=%s h=%s auth=%s body=%zu:%s", req->method, req->path, req->rest,
            q ? q : "-", h ? h : "-", req->authorization ? req->authorization : "-", req->body_len,
            req->body);
    fclose(f);
    pe_http_respond(req, strcmp(req->rest, "teapot") == 0 ? 418 : 200, "text/plain", out, len,
                    hdrs);
    free(out);
}

static void h_longer(pe_http_request *req, void *ud)
{
    pe_http_respond(req, 200, "text/plain", "longer", 6, NULL);
}

static void deferred_done(void *ud)
{
    pe_http_respond_error(ud, 404, "NotFound", "later");
}

static void h_defer(pe_http_request *req, void *ud)
{
    pe_http_defer(req);
    pe_ev_submit(fx.loop, NULL, deferred_done, req, NULL);
}

/* Streams: write "tick N\n" from a timer, close after 3; /stream/forever
 * never closes, and records the client going away. */
struct ticker {
    pe_http_stream *st;
    pe_ev_timer *t;
    int n, max;
};

static volatile int stream_closed_seen;

#define FOREVER "GET /stream/forever HTTP/1.1\r\nHost: x\r\n\r\n"

static void tick(pe_ev_timer *t, void *ud)
{
    struct ticker *tk = ud;
    char line[32];
    int n = snprintf(line, sizeof(line), "tick %d\n", tk->n++);

    if (pe_http_stream_write(tk->st, line, (size_t)n) < 0)
        return;
    if (tk->max && tk->n == tk->max) {
        pe_http_stream_close(tk->st);
        pe_ev_timer_stop(t);
        free(tk);
    }
}

static void stream_closed(pe_http_stream *st, void *ud)
{
    struct ticker *tk = ud;

    stream_closed_seen = 1;
    pe_ev_timer_stop(tk->t);
    free(tk);
}

static void h_stream(pe_http_request *req, void *ud)
{
    static const pe_http_stream_callbacks cb = {.on_close = stream_closed};
    static const char *const hdrs[] = {"Cache-Control", "no-cache", NULL};
    struct ticker *tk = calloc(1, sizeof(*tk));

    tk->max = strcmp(req->rest, "forever") == 0 ? 0 : 3;
    tk->st = pe_http_respond_stream(req, 200, "text/event-stream", hdrs, &cb, tk);
    pe_http_stream_write(tk->st, ": hello\n", 8);
    tk->t = pe_ev_timer_start(fx.loop, 10000000, 10000000, tick, tk, NULL);
}

/* WebSocket echo: each message back with its type; "close" closes 4000. */
static void ws_msg(pe_http_ws *ws, bool binary, const char *data, size_t len, void *ud)
{
    if (len == 5 && memcmp(data, "close", 5) == 0) {
        pe_http_ws_close(ws, 4000, "bye");
        return;
    }
    pe_http_ws_send(ws, binary, data, len);
}

static void ws_closed(pe_http_ws *ws, unsigned code, void *ud)
{
}

static void h_ws(pe_http_request *req, void *ud)
{
    static const pe_http_ws_callbacks cb = {.on_message = ws_msg, .on_close = ws_closed};
    pe_http_ws *ws = pe_http_upgrade_ws(req, &cb, 1000, NULL);

    if (ws)
        pe_http_ws_send(ws, false, "hello", 5); /* queued before the socket arrives */
}

/* ---- fixture ------------------------------------------------------------- */

/* Host routes: every header and query argument, in order. */
static void each_line(const char *name, const char *value, void *ud)
{
    fprintf(ud, "%s=%s;", name, value ? value : "(null)");
}

static void h_host(pe_http_request *req, void *ud)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    fprintf(f, "host-route %s rest=%s q:", req->path, req->rest);
    pe_http_query_each(req, each_line, f);
    fprintf(f, " h:");
    pe_http_header_each(req, each_line, f);
    fclose(f);
    pe_http_respond(req, 200, "text/plain", out, len, NULL);
    free(out);
}

/* Raw upgrades: say "raw!" on the socket, then let go (or keep it open
 * for "/raw/keep", to be ended by the server's shutdown). */
static volatile int raw_closed_seen;

static void raw_socket(pe_http_raw *raw, int fd, const char *extra, size_t extra_len, void *ud)
{
    ASSERT(write(fd, "raw!", 4) == 4);
    if (ud == NULL)
        pe_http_raw_close(raw);
}

static void raw_closed(pe_http_raw *raw, void *ud)
{
    raw_closed_seen = 1;
}

static void h_raw(pe_http_request *req, void *ud)
{
    static const char *const hdrs[] = {"Upgrade", "test", NULL};
    static const pe_http_raw_callbacks cb = {.on_socket = raw_socket, .on_close = raw_closed};

    ASSERT(pe_http_upgrade_raw(req, hdrs, &cb, strcmp(req->rest, "keep") == 0 ? &fx : NULL) !=
           NULL);
}

/* Head callbacks (route /up/<what>): decide before the body.
 *   deny  answer 401 unless "Authorization: Bearer ok", else read the body
 *   hold  hold; the test thread answers (held_verdict 403) or lets it in
 *   file  the body (or its multipart part "file") into a temporary file
 *   holdfile  both: into a file, after a hold
 * The handler says what it got. Per-request state counts its frees. */
static volatile int up_handled, up_freed, up_heads;
static pe_http_request *volatile held_req;
static volatile int held_verdict; /* 0: continue, else a status */

struct upload {
    int fd;
};

static void upload_free(void *p)
{
    struct upload *u = p;

    close(u->fd);
    free(u);
    up_freed++;
}

static bool to_file(pe_http_request *req)
{
    struct upload *u = calloc(1, sizeof(*u));
    pe_err err = {0};

    u->fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    ASSERT(u->fd >= 0);
    pe_http_set_data(req, u, upload_free);
    if (pe_http_body_to_fd(req, u->fd, 40u << 20, "file", &err) == 0)
        return true;
    pe_http_respond_error(req, 400, "InvalidRequest", err.msg);
    return false;
}

static void h_up_head(pe_http_request *req, void *ud)
{
    const char *what = req->rest;

    up_heads++;
    if (strcmp(what, "deny") == 0) {
        if (req->authorization == NULL || strcmp(req->authorization, "Bearer ok") != 0)
            pe_http_respond_error(req, 401, "AuthenticationRequired", "who are you?");
        return; /* nothing: the body is read into memory */
    }
    if ((strncmp(what, "file", 4) == 0 || strcmp(what, "holdfile") == 0) && !to_file(req))
        return;
    if (strncmp(what, "hold", 4) == 0) {
        pe_http_defer(req);
        held_req = req;
        return;
    }
    pe_http_continue(req);
}

/* Posted to the loop by the test thread: end the hold. */
static void release_held(void *ud)
{
    pe_http_request *req = held_req;

    held_req = NULL;
    if (held_verdict)
        pe_http_respond_error(req, (unsigned)held_verdict, "Forbidden", "not yours");
    else
        pe_http_continue(req);
}

static void h_up(pe_http_request *req, void *ud)
{
    struct upload *u = pe_http_data(req);

    if (strcmp(req->rest, "filetake") == 0) { /* the handler keeps the state */
        u = pe_http_take_data(req);
        ASSERT(pe_http_data(req) == NULL);
        upload_free(u);
        pe_http_respond(req, 200, "text/plain", "taken", 5, NULL);
        return;
    }
    char out[256], first[17] = "";
    struct stat st;
    int n;

    up_handled++;
    if (u) {
        ssize_t got = pread(u->fd, first, 16, 0);
        first[got > 0 ? got : 0] = '\0';
        ASSERT(fstat(u->fd, &st) == 0);
        n = snprintf(out, sizeof(out), "file %zu %lld missing=%d first=%s", req->body_len,
                     (long long)st.st_size, req->form_part_missing, first);
    } else {
        n = snprintf(out, sizeof(out), "memory %zu", req->body_len);
    }
    pe_http_respond(req, 200, "text/plain", out, (size_t)n, NULL);
}

static void *loop_main(void *arg)
{
    pe_ev_run(fx.loop, NULL);
    return NULL;
}

static void start(void)
{
    pe_http_config cfg;
    pe_err err = {0};

    pe_http_config_init(&cfg);
    cfg.port = 0;
    cfg.timeout_s = 5;
    fx.loop = pe_ev_loop_new(2, 0, &err);
    ASSERT(fx.loop != NULL);
    fx.srv = pe_http_server_new(fx.loop, &cfg, &err);
    if (fx.srv == NULL)
        TEST_FAIL("server: %s", err.msg);
    fx.port = pe_http_server_port(fx.srv);
    ASSERT_EQ_INT(pe_http_route(fx.srv, "/e/", 64, h_echo, NULL, &err), 0);
    ASSERT_EQ_INT(pe_http_route(fx.srv, "/e/longer/", 0, h_longer, NULL, &err), 0);
    ASSERT_EQ_INT(pe_http_route(fx.srv, "/defer", 0, h_defer, NULL, &err), 0);
    ASSERT_EQ_INT(pe_http_route(fx.srv, "/stream/", 0, h_stream, NULL, &err), 0);
    ASSERT_EQ_INT(pe_http_route(fx.srv, "/ws", 0, h_ws, NULL, &err), 0);
    ASSERT_EQ_INT(pe_http_route(fx.srv, "relative", 0, h_ws, NULL, &err), -1);
    ASSERT_EQ_INT(pe_http_route(fx.srv, "/raw/", 0, h_raw, NULL, &err), 0);
    ASSERT_EQ_INT(pe_http_route_host(fx.srv, ".preview.test", 0, h_host, NULL, &err), 0);
    ASSERT_EQ_INT(pe_http_route_host(fx.srv, "preview.test", 0, h_host, NULL, &err), -1);
    ASSERT_EQ_INT(pe_http_route(fx.srv, "/up/", 1 << 20, h_up, NULL, &err), 0);
    ASSERT_EQ_INT(pe_http_route_head(fx.srv, "/up/", h_up_head, &err), 0);
    ASSERT_EQ_INT(pe_http_route_head(fx.srv, "/none/", h_up_head, &err), -1);
    up_handled = up_freed = up_heads = 0;
    held_req = NULL;
    held_verdict = 0;
    ASSERT_EQ_INT(pthread_create(&fx.th, NULL, loop_main, NULL), 0);
}

static void stop(void)
{
    pe_ev_stop(fx.loop);
    pthread_join(fx.th, NULL);
    pe_http_server_free(fx.srv);
    pe_ev_loop_free(fx.loop);
}

/* ---- raw client ---------------------------------------------------------- */

static int connect_server(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fx.port)};
    struct timeval tv = {.tv_sec = 10};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ASSERT(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        TEST_FAIL("connect: %s", strerror(errno));
    return fd;
}

static void send_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

static size_t recv_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;

    while (len + 1 < cap) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return len;
}

static char resp[64 * 1024];

static const char *request(const char *head, const char *body)
{
    char buf[16384];
    int fd = connect_server();
    int n = snprintf(buf, sizeof(buf), "%sConnection: close\r\nContent-Length: %zu\r\n\r\n%s", head,
                     strlen(body), body);

    send_all(fd, buf, (size_t)n);
    recv_all(fd, resp, sizeof(resp));
    close(fd);
    return resp;
}

static int status_of(const char *r)
{
    if (strncmp(r, "HTTP/1.1 ", 9) != 0)
        return 0;
    return (r[9] - '0') * 100 + (r[10] - '0') * 10 + (r[11] - '0');
}

static const char *body_of(const char *r)
{
    const char *b = strstr(r, "\r\n\r\n");
    return b ? b + 4 : "";
}

/* Read up to the end of the response head; returns bytes after it in *rest. */
static void read_head(int fd, char *head, size_t cap)
{
    size_t len = 0;

    while (len + 1 < cap) {
        ssize_t n = recv(fd, head + len, 1, 0);
        if (n <= 0)
            break;
        len++;
        head[len] = '\0';
        if (len >= 4 && memcmp(head + len - 4, "\r\n\r\n", 4) == 0)
            return;
    }
    head[len] = '\0';
}

/* ---- WebSocket client ---------------------------------------------------- */

static int ws_connect(const char *path, char *head, size_t cap)
{
    char buf[1024];
    int fd = connect_server();
    int n = snprintf(buf, sizeof(buf),
                     "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path);

    send_all(fd, buf, (size_t)n);
    read_head(fd, head, cap);
    return fd;
}

/* One frame, masked as a client must (mask false: broken on purpose). */
static void ws_send_frame(int fd, int fin, int opcode, const void *data, size_t len, bool mask)
{
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    uint8_t *f = malloc(len + 14);
    size_t h = 0;

    f[h++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (len < 126) {
        f[h++] = (uint8_t)((mask ? 0x80 : 0) | len);
    } else if (len < 65536) {
        f[h++] = (uint8_t)((mask ? 0x80 : 0) | 126);
        f[h++] = (uint8_t)(len >> 8);
        f[h++] = (uint8_t)len;
    } else {
        f[h++] = (uint8_t)((mask ? 0x80 : 0) | 127);
        for (int i = 7; i >= 0; i--)
            f[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (mask) {
        memcpy(f + h, key, 4);
        h += 4;
    }
    for (size_t i = 0; i < len; i++)
        f[h + i] = (uint8_t)(((const uint8_t *)data)[i] ^ (mask ? key[i % 4] : 0));
    send_all(fd, f, h + len);
    free(f);
}

static bool recv_exact(int fd, void *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = recv(fd, (char *)buf + got, len - got, 0);
        if (n <= 0)
            return false;
        got += (size_t)n;
    }
    return true;
}

/* Next frame from the server: opcode (-1 at EOF), payload in buf. */
static int ws_recv_frame(int fd, char *buf, size_t cap, size_t *len)
{
    uint8_t h[2], ext[8];
    uint64_t n;

    if (!recv_exact(fd, h, 2))
        return -1;
    n = h[1] & 0x7f;
    ASSERT((h[1] & 0x80) == 0); /* servers never mask */
    if (n == 126) {
        ASSERT(recv_exact(fd, ext, 2));
        n = (uint64_t)ext[0] << 8 | ext[1];
    } else if (n == 127) {
        ASSERT(recv_exact(fd, ext, 8));
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | ext[i];
    }
    ASSERT(n < cap);
    ASSERT(recv_exact(fd, buf, (size_t)n));
    buf[n] = '\0';
    *len = (size_t)n;
    return h[0] & 0x0f;
}

/* Read frames until a close frame; its code (-1 at EOF without one). */
static int ws_close_code(int fd)
{
    char buf[70000];
    size_t len;
    int op;

    while ((op = ws_recv_frame(fd, buf, sizeof(buf), &len)) >= 0)
        if (op == 8)
            return len >= 2 ? ((uint8_t)buf[0] << 8 | (uint8_t)buf[1]) : 1005;
    return -1;
}

/* ---- cases --------------------------------------------------------------- */

TEST_CASE(routes_prefix_query_headers_body)
{
    const char *r;

    start();
    r = request("POST /e/abc?q=x%20y HTTP/1.1\r\nHost: x\r\nX-Test: 1\r\n"
                "Authorization: Bearer tok\r\n",
                "raw body");
    ASSERT_EQ_INT(status_of(r), 200);
    ASSERT_CONTAINS(r, "X-Route: echo");
    ASSERT_CONTAINS(r, "Content-Type: text/plain");
    ASSERT_EQ_STR(body_of(r), "POST /e/abc rest=abc q=x y h=1 auth=Bearer tok body=8:raw body");
    ASSERT_EQ_INT(status_of(request("GET /e/teapot HTTP/1.1\r\nHost: x\r\n", "")), 418);
    ASSERT_CONTAINS(body_of(resp), "body=0:");
    r = request("GET /e/longer/x HTTP/1.1\r\nHost: x\r\n", "");
    ASSERT_EQ_STR(body_of(r), "longer");
    /* built-in routes stay, unknown paths are 404 */
    ASSERT_EQ_INT(status_of(request("GET /healthz HTTP/1.1\r\nHost: x\r\n", "")), 200);
    ASSERT_EQ_INT(status_of(request("GET /nope HTTP/1.1\r\nHost: x\r\n", "")), 404);
    r = request("GET /defer HTTP/1.1\r\nHost: x\r\n", "");
    ASSERT_EQ_INT(status_of(r), 404);
    ASSERT_EQ_STR(body_of(r), "{\"error\":\"NotFound\",\"message\":\"later\"}");
    stop();
}

TEST_CASE(route_body_limit_413)
{
    char body[200];

    start();
    memset(body, 'a', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    ASSERT_EQ_INT(status_of(request("POST /e/x HTTP/1.1\r\nHost: x\r\n", body)), 413);
    ASSERT_CONTAINS(body_of(resp), "PayloadTooLarge");
    body[64] = '\0'; /* exactly the limit is fine */
    ASSERT_EQ_INT(status_of(request("POST /e/x HTTP/1.1\r\nHost: x\r\n", body)), 200);
    {
        /* chunked: no Content-Length, the limit hits while reading */
        static const char chunked[] = "POST /e/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                      "Transfer-Encoding: chunked\r\n\r\n"
                                      "40\r\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                      "aaaaaaaaaa\r\n2\r\nbb\r\n0\r\n\r\n";
        int fd = connect_server();
        send_all(fd, chunked, sizeof(chunked) - 1);
        recv_all(fd, resp, sizeof(resp));
        close(fd);
        ASSERT_EQ_INT(status_of(resp), 413);
    }
    ASSERT_EQ_INT(status_of(request("GET /healthz HTTP/1.1\r\nHost: x\r\n", "")), 200);
    stop();
}

TEST_CASE(stream_chunks_then_end)
{
    const char *r;

    start();
    r = request("GET /stream/x HTTP/1.1\r\nHost: x\r\n", "");
    ASSERT_EQ_INT(status_of(r), 200);
    ASSERT_CONTAINS(r, "Content-Type: text/event-stream");
    ASSERT_CONTAINS(r, "Cache-Control: no-cache");
    ASSERT_CONTAINS(r, "Transfer-Encoding: chunked");
    ASSERT_CONTAINS(body_of(r), ": hello\n");
    ASSERT_CONTAINS(body_of(r), "tick 0\n");
    ASSERT_CONTAINS(body_of(r), "tick 2\n");
    ASSERT(strstr(body_of(r), "tick 3") == NULL);
    ASSERT_CONTAINS(body_of(r), "\r\n0\r\n\r\n"); /* the chunked body ended */
    stop();
}

TEST_CASE(stream_client_gone_is_noticed)
{
    char head[4096];
    int fd;

    start();
    fd = connect_server();
    send_all(fd, FOREVER, strlen(FOREVER));
    read_head(fd, head, sizeof(head));
    ASSERT_EQ_INT(status_of(head), 200);
    ASSERT(recv(fd, head, sizeof(head), 0) > 0);
    close(fd);
    /* the next ticks hit the closed socket; on_close runs on the loop */
    for (int i = 0; i < 500 && !stream_closed_seen; i++)
        usleep(10000);
    ASSERT_EQ_INT(stream_closed_seen, 1);
    stop();
}

TEST_CASE(stream_server_shutdown_ends_it)
{
    char head[4096];
    int fd;

    start();
    fd = connect_server();
    send_all(fd, FOREVER, strlen(FOREVER));
    read_head(fd, head, sizeof(head));
    ASSERT_EQ_INT(status_of(head), 200);
    stop();
    ASSERT_EQ_INT(stream_closed_seen, 1);
    close(fd);
}

TEST_CASE(ws_echo_text_binary_fragmented_ping)
{
    char head[4096], buf[70000];
    size_t len;
    int fd;

    start();
    fd = ws_connect("/ws", head, sizeof(head));
    ASSERT_EQ_INT(status_of(head), 101);
    ASSERT_CONTAINS(head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    ASSERT_EQ_INT(ws_recv_frame(fd, buf, sizeof(buf), &len), 1);
    ASSERT_EQ_STR(buf, "hello");
    ws_send_frame(fd, 1, 1, "héllo", 6, true);
    ASSERT_EQ_INT(ws_recv_frame(fd, buf, sizeof(buf), &len), 1);
    ASSERT_EQ_STR(buf, "héllo");
    ws_send_frame(fd, 1, 2, "\x00\x01\xff", 3, true);
    ASSERT_EQ_INT(ws_recv_frame(fd, buf, sizeof(buf), &len), 2);
    ASSERT_EQ_INT(len, 3);
    ASSERT(memcmp(buf, "\x00\x01\xff", 3) == 0);
    /* fragments, with a ping in between */
    ws_send_frame(fd, 0, 1, "ab", 2, true);
    ws_send_frame(fd, 1, 9, "p", 1, true);
    ws_send_frame(fd, 1, 0, "cd", 2, true);
    ASSERT_EQ_INT(ws_recv_frame(fd, buf, sizeof(buf), &len), 10);
    ASSERT_EQ_STR(buf, "p");
    ASSERT_EQ_INT(ws_recv_frame(fd, buf, sizeof(buf), &len), 1);
    ASSERT_EQ_STR(buf, "abcd");
    /* a message of exactly the limit passes */
    memset(buf, 'x', 1000);
    ws_send_frame(fd, 1, 2, buf, 1000, true);
    ASSERT_EQ_INT(ws_recv_frame(fd, buf, sizeof(buf), &len), 2);
    ASSERT_EQ_INT(len, 1000);
    /* the server's close */
    ws_send_frame(fd, 1, 1, "close", 5, true);
    ASSERT_EQ_INT(ws_close_code(fd), 4000);
    close(fd);
    /* client-initiated close is echoed */
    fd = ws_connect("/ws", head, sizeof(head));
    ws_send_frame(fd, 1, 8, "\x03\xe8", 2, true);
    ASSERT_EQ_INT(ws_close_code(fd), 1000);
    close(fd);
    ASSERT_EQ_INT(status_of(request("GET /healthz HTTP/1.1\r\nHost: x\r\n", "")), 200);
    stop();
}

/* After the close handshake (or the linger without one) the socket is
 * really closed: the client reads EOF. */
TEST_CASE(ws_socket_closed_after_close)
{
    char head[4096], buf[256];
    size_t len;
    int fd;

    start();
    fd = ws_connect("/ws", head, sizeof(head));
    ASSERT_EQ_INT(ws_recv_frame(fd, buf, sizeof(buf), &len), 1);
    ws_send_frame(fd, 1, 1, "close", 5, true);
    ASSERT_EQ_INT(ws_recv_frame(fd, buf, sizeof(buf), &len), 8);
    ws_send_frame(fd, 1, 8, "\x0f\xa0", 2, true); /* answer: the server closes at once */
    ASSERT_EQ_INT(recv(fd, buf, sizeof(buf), 0), 0);
    close(fd);
    stop();
}

TEST_CASE(ws_bad_handshake)
{
    start();
    ASSERT_EQ_INT(status_of(request("GET /ws HTTP/1.1\r\nHost: x\r\n", "")), 426);
    ASSERT_CONTAINS(resp, "Upgrade: websocket");
    ASSERT_EQ_INT(status_of(request("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
                                    "")),
                  400);
    ASSERT_EQ_INT(status_of(request("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                    "Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
                                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                                    "")),
                  400);
    ASSERT_CONTAINS(resp, "Sec-WebSocket-Version: 13");
    stop();
}

/* Broken input closes with the RFC's code, and the server stays up. */
TEST_CASE(ws_broken_frames_close_codes)
{
    char head[4096], big[2000];
    int fd;

    start();
    fd = ws_connect("/ws", head, sizeof(head));
    ws_send_frame(fd, 1, 1, "unmasked", 8, false);
    ASSERT_EQ_INT(ws_close_code(fd), 1002);
    close(fd);

    fd = ws_connect("/ws", head, sizeof(head));
    ws_send_frame(fd, 1, 3, "x", 1, true); /* reserved opcode */
    ASSERT_EQ_INT(ws_close_code(fd), 1002);
    close(fd);

    fd = ws_connect("/ws", head, sizeof(head));
    ws_send_frame(fd, 1, 0, "x", 1, true); /* continuation of nothing */
    ASSERT_EQ_INT(ws_close_code(fd), 1002);
    close(fd);

    fd = ws_connect("/ws", head, sizeof(head));
    ws_send_frame(fd, 1, 1, "ok \xc3\x28 no", 8, true);
    ASSERT_EQ_INT(ws_close_code(fd), 1007);
    close(fd);

    fd = ws_connect("/ws", head, sizeof(head));
    memset(big, 'x', sizeof(big));
    ws_send_frame(fd, 1, 2, big, sizeof(big), true);
    ASSERT_EQ_INT(ws_close_code(fd), 1009);
    close(fd);

    fd = ws_connect("/ws", head, sizeof(head));
    ws_send_frame(fd, 0, 2, big, 600, true); /* too big only once reassembled */
    ws_send_frame(fd, 1, 0, big, 600, true);
    ASSERT_EQ_INT(ws_close_code(fd), 1009);
    close(fd);

    ASSERT_EQ_INT(status_of(request("GET /healthz HTTP/1.1\r\nHost: x\r\n", "")), 200);
    stop();
}

/* A frame given byte by byte (header as written, then a payload masked with
 * the zero key), to break what ws_send_frame always gets right. */
static void ws_send_raw(int fd, const void *head, size_t hlen, const void *payload, size_t plen)
{
    static const uint8_t zero_key[4];

    send_all(fd, head, hlen);
    send_all(fd, zero_key, 4);
    if (plen)
        send_all(fd, payload, plen);
}

/* Every protocol error gets its close frame (RFC 6455 section 7.4.1) before
 * the server closes: 1002 for a broken frame, 1007 for bad UTF-8, 1009
 * for a length over the limit. */
TEST_CASE(ws_protocol_errors_answered_with_a_close_frame)
{
    static const struct {
        const char *what;
        uint8_t head[10];
        size_t hlen;
        const char *payload;
        size_t plen;
        int code;
    } cases[] = {
        {"fragmented ping", {0x09, 0x81}, 2, "p", 1, 1002},
        {"fragmented close", {0x08, 0x82}, 2, "\x03\xe8", 2, 1002},
        {"ping of 126 bytes", {0x89, 0xfe, 0x00, 0x7e}, 4, NULL, 126, 1002},
        {"16-bit length for 5 bytes", {0x82, 0xfe, 0x00, 0x05}, 4, "abcde", 5, 1002},
        {"64-bit length for 5 bytes", {0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 5}, 10, "abcde", 5, 1002},
        {"64-bit length, top bit set",
         {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 5},
         10,
         "abcde",
         5,
         1002},
        {"close with 1 byte", {0x88, 0x81}, 2, "\x03", 1, 1002},
        {"close code 999", {0x88, 0x82}, 2, "\x03\xe7", 2, 1002},
        {"close code 1005", {0x88, 0x82}, 2, "\x03\xed", 2, 1002},
        {"close code 1006", {0x88, 0x82}, 2, "\x03\xee", 2, 1002},
        {"close code 5000", {0x88, 0x82}, 2, "\x13\x88", 2, 1002},
        {"close reason not UTF-8", {0x88, 0x84}, 2, "\x03\xe8\xc3\x28", 4, 1007},
        {"RSV1 set", {0xc2, 0x81}, 2, "x", 1, 1002},
        {"reserved control opcode", {0x8b, 0x81}, 2, "x", 1, 1002},
        {"2^63-1 bytes declared",
         {0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
         10,
         NULL,
         0,
         1009},
    };
    static char zeros[200];
    char head[4096];
    int fd;

    start();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fd = ws_connect("/ws", head, sizeof(head));
        ASSERT_EQ_INT(status_of(head), 101);
        ws_send_raw(fd, cases[i].head, cases[i].hlen, cases[i].payload ? cases[i].payload : zeros,
                    cases[i].plen);
        {
            int code = ws_close_code(fd);
            if (code != cases[i].code)
                TEST_FAIL("%s: close code %d, want %d", cases[i].what, code, cases[i].code);
        }
        close(fd);
    }
    /* a new message while a fragmented one is unfinished */
    fd = ws_connect("/ws", head, sizeof(head));
    ws_send_frame(fd, 0, 1, "ab", 2, true);
    ws_send_frame(fd, 1, 1, "cd", 2, true);
    ASSERT_EQ_INT(ws_close_code(fd), 1002);
    close(fd);
    /* invalid UTF-8 split across fragments, and a sequence cut by the end */
    fd = ws_connect("/ws", head, sizeof(head));
    ws_send_frame(fd, 0, 1, "a\xc3", 2, true);
    ws_send_frame(fd, 1, 0, "(", 1, true);
    ASSERT_EQ_INT(ws_close_code(fd), 1007);
    close(fd);
    fd = ws_connect("/ws", head, sizeof(head));
    ws_send_frame(fd, 1, 1, "a\xe2\x82", 3, true);
    ASSERT_EQ_INT(ws_close_code(fd), 1007);
    close(fd);
    ASSERT_EQ_INT(status_of(request("GET /healthz HTTP/1.1\r\nHost: x\r\n", "")), 200);
    stop();
}

TEST_CASE(ws_many_and_abrupt_disconnects)
{
    char head[4096], buf[256];
    size_t len;
    int fds[50];

    start();
    for (int i = 0; i < 50; i++) {
        fds[i] = ws_connect("/ws", head, sizeof(head));
        ASSERT_EQ_INT(status_of(head), 101);
    }
    for (int i = 0; i < 50; i += 2)
        close(fds[i]); /* no close frame */
    for (int i = 1; i < 50; i += 2) {
        ASSERT_EQ_INT(ws_recv_frame(fds[i], buf, sizeof(buf), &len), 1);
        ws_send_frame(fds[i], 1, 1, "x", 1, true);
        ASSERT_EQ_INT(ws_recv_frame(fds[i], buf, sizeof(buf), &len), 1);
        ASSERT_EQ_STR(buf, "x");
    }
    stop(); /* closes the rest with 1001 */
    for (int i = 1; i < 50; i += 2) {
        ASSERT_EQ_INT(ws_close_code(fds[i]), 1001);
        close(fds[i]);
    }
}

TEST_CASE(host_route_wins_over_paths)
{
    const char *r;

    start();
    r = request("GET /xrpc/x?b=2&a&c=x%20y HTTP/1.1\r\nHost: 80-box.PREVIEW.test:8789\r\n"
                "X-One: 1\r\n",
                "");
    ASSERT_EQ_INT(status_of(r), 200);
    ASSERT_EQ_STR(body_of(r),
                  "host-route /xrpc/x rest=/xrpc/x q:b=2;a=(null);c=x y; "
                  "h:Host=80-box.PREVIEW.test:8789;X-One=1;Connection=close;Content-Length=0;");
    /* the bare suffix, or another host, is an ordinary request */
    ASSERT_EQ_INT(status_of(request("GET /healthz HTTP/1.1\r\nHost: preview.test\r\n", "")), 200);
    ASSERT_EQ_INT(status_of(request("GET /healthz HTTP/1.1\r\nHost: .preview.test\r\n", "")), 200);
    ASSERT_EQ_INT(status_of(request("GET /e/x HTTP/1.1\r\nHost: a.preview.testx\r\n", "")), 200);
    stop();
}

TEST_CASE(raw_upgrade_hands_over_the_socket)
{
    char head[4096], buf[16];
    int fd;
    size_t n;

    start();
    fd = connect_server();
    send_all(
        fd, "GET /raw/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n",
        strlen("GET /raw/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n"));
    read_head(fd, head, sizeof(head));
    ASSERT_EQ_INT(status_of(head), 101);
    ASSERT_CONTAINS(head, "Upgrade: test");
    n = recv_all(fd, buf, sizeof(buf) - 1);
    buf[n] = '\0';
    ASSERT_EQ_STR(buf, "raw!"); /* then EOF: the server closed it */
    close(fd);
    /* One kept open ends with the server: on_close, socket closed. */
    raw_closed_seen = 0;
    fd = connect_server();
    send_all(
        fd, "GET /raw/keep HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n",
        strlen(
            "GET /raw/keep HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n"));
    read_head(fd, head, sizeof(head));
    ASSERT(recv_exact(fd, buf, 4));
    stop();
    ASSERT_EQ_INT(raw_closed_seen, 1);
    ASSERT_EQ_INT((int)recv(fd, buf, sizeof(buf), 0), 0);
    close(fd);
}

/* ---- head callbacks ------------------------------------------------------ */

static void wait_until(volatile int *v, int want, const char *what)
{
    for (int i = 0; i < 1000 && *v != want; i++)
        usleep(10000);
    if (*v != want)
        TEST_FAIL("timed out waiting for %s (%d, want %d)", what, *v, want);
}

static void wait_held(void)
{
    for (int i = 0; i < 1000 && held_req == NULL; i++)
        usleep(10000);
    ASSERT(held_req != NULL);
}

/* One whole answer (head and Content-Length bytes), the connection left open. */
static const char *read_response(int fd)
{
    const char *cl;
    size_t head_len, want;

    read_head(fd, resp, sizeof(resp));
    head_len = strlen(resp);
    cl = strstr(resp, "Content-Length: ");
    want = cl ? strtoul(cl + 16, NULL, 10) : 0;
    ASSERT(head_len + want < sizeof(resp));
    ASSERT(recv_exact(fd, resp + head_len, want));
    resp[head_len + want] = '\0';
    return resp;
}

/* Push pattern bytes without blocking until the peer stops taking them
 * (nothing for a whole second) or limit is reached. */
static size_t send_until_blocked(int fd, size_t limit)
{
    static char block[65536];
    size_t sent = 0;
    int fl = fcntl(fd, F_GETFL);

    for (size_t i = 0; i < sizeof(block); i++)
        block[i] = "0123456789abcdef"[i % 16];
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    while (sent < limit) {
        size_t n = limit - sent < sizeof(block) ? limit - sent : sizeof(block);
        ssize_t w = send(fd, block, n, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            continue;
        }
        ASSERT(w < 0 && errno == EAGAIN);
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 1000) == 0)
            break; /* the peer has not read for a second: blocked */
    }
    fcntl(fd, F_SETFL, fl);
    return sent;
}

static void send_pattern(int fd, size_t len)
{
    static char block[65536];

    for (size_t i = 0; i < sizeof(block); i++)
        block[i] = "0123456789abcdef"[i % 16];
    while (len > 0) {
        size_t n = len < sizeof(block) ? len : sizeof(block);
        send_all(fd, block, n);
        len -= n;
    }
}

static void send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

static int send_head(const char *head)
{
    int fd = connect_server();

    send_all(fd, head, strlen(head));
    return fd;
}

/* A route's head callback answers before a byte of the body is read: a
 * client declaring a huge body and sending none gets its answer at once;
 * a small declared body is read and dropped to keep the connection. */
TEST_CASE(head_callback_answers_before_the_body)
{
    int fd;

    start();
    fd = send_head("POST /up/deny HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n");
    recv_all(fd, resp, sizeof(resp)); /* EOF: the server closed after its answer */
    close(fd);
    ASSERT_EQ_INT(status_of(resp), 401);
    ASSERT_CONTAINS(resp, "Connection: close");
    ASSERT_CONTAINS(body_of(resp), "\"error\":\"AuthenticationRequired\"");
    fd = send_head("POST /up/deny HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "10\r\n0123456789abcdef\r\n");
    recv_all(fd, resp, sizeof(resp));
    close(fd);
    ASSERT_EQ_INT(status_of(resp), 401);
    /* a small declared body is read and dropped: the connection goes on */
    fd = send_head("POST /up/deny HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                   "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    recv_all(fd, resp, sizeof(resp));
    close(fd);
    ASSERT_EQ_INT(status_of(resp), 401);
    ASSERT(strstr(resp, "Connection: close") == strstr(resp, "HTTP/1.1 200")
               ? true
               : strstr(strstr(resp, "HTTP/1.1 200"), "Connection: close") != NULL);
    ASSERT_CONTAINS(resp, "HTTP/1.1 200 OK");
    ASSERT_EQ_INT(up_handled, 0);
    /* with the token the body is read and the handler runs */
    ASSERT_EQ_INT(status_of(request("POST /up/deny HTTP/1.1\r\nHost: x\r\n"
                                    "Authorization: Bearer ok\r\n",
                                    "hello")),
                  200);
    ASSERT_EQ_STR(body_of(resp), "memory 5");
    ASSERT_EQ_INT(up_handled, 1);
    stop();
}

/* While a head callback holds a request, libmicrohttpd reads nothing of
 * its body: the client can only fill the socket buffers. Once let in, the
 * body streams to the file. */
TEST_CASE(held_request_reads_no_body_until_released)
{
    const size_t total = 32u << 20;
    size_t sent;
    int fd;

    start();
    fd = send_head("POST /up/holdfile HTTP/1.1\r\nHost: x\r\nContent-Length: 33554432\r\n\r\n");
    wait_held();
    sent = send_until_blocked(fd, total);
    if (sent >= total)
        TEST_FAIL("the whole body (%zu bytes) was taken while the request was held", sent);
    held_verdict = 0;
    pe_ev_post(fx.loop, release_held, NULL);
    send_pattern(fd, total - sent);
    read_response(fd);
    ASSERT_EQ_INT(status_of(resp), 200);
    ASSERT_EQ_STR(body_of(resp), "file 33554432 33554432 missing=0 first=0123456789abcdef");
    close(fd);
    wait_until(&up_freed, 1, "the request's state to be freed");
    stop();
}

/* A deferred answer leaves the connection usable for the next request. */
TEST_CASE(deferred_keep_alive)
{
    int fd;

    start();
    fd = send_head("GET /defer HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ_INT(status_of(read_response(fd)), 404);
    send_str(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if (status_of(read_response(fd)) != 200)
        TEST_FAIL("after the deferred answer: %s", resp);
    close(fd);
    stop();
}

/* A held request answered without its body: at once for a declared body
 * (connection closed), and the connection kept when there is none. */
TEST_CASE(held_request_answered_without_its_body)
{
    int fd;

    start();
    fd = send_head("POST /up/hold HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n");
    wait_held();
    held_verdict = 403;
    pe_ev_post(fx.loop, release_held, NULL);
    recv_all(fd, resp, sizeof(resp));
    close(fd);
    ASSERT_EQ_INT(status_of(resp), 403);
    ASSERT_CONTAINS(resp, "Connection: close");
    fd = send_head("GET /up/hold HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_held();
    pe_ev_post(fx.loop, release_held, NULL);
    ASSERT_EQ_INT(status_of(read_response(fd)), 403);
    ASSERT(strstr(resp, "Connection: close") == NULL);
    send_str(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if (status_of(read_response(fd)) != 200)
        TEST_FAIL("after the held answer: %s", resp);
    close(fd);
    ASSERT_EQ_INT(up_handled, 0);
    stop();
}

static const char *post_raw(const char *head, const char *body, size_t len)
{
    char buf[1024];
    int fd = connect_server();
    int n =
        snprintf(buf, sizeof(buf), "%sConnection: close\r\nContent-Length: %zu\r\n\r\n", head, len);

    send_all(fd, buf, (size_t)n);
    send_all(fd, body, len);
    recv_all(fd, resp, sizeof(resp));
    close(fd);
    return resp;
}

#define MULTIPART_HEAD(path)                                                                       \
    "POST " path " HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"

/* pe_http_body_to_fd: a multipart/form-data body's "file" part, decoded
 * as it comes (binary, with boundary look-alikes), the raw body otherwise;
 * limits before and while reading. */
TEST_CASE(body_to_file)
{
    static char body[300 * 1024], data[200 * 1024];
    char want[128];
    size_t n = 0;

    start();
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 7 + i / 256);
    memcpy(data, "tar.gz-like-data", 16);
    /* look-alikes that are not a delimiter (which is CRLF "--XyZ") */
    memcpy(data + 5000, "x--XyZ-- not the end\r\n--Xy\r\n-", 30);
    n += (size_t)snprintf(body + n, sizeof(body) - n,
                          "--XyZ\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nother\r\n"
                          "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; "
                          "filename=\"a.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n");
    memcpy(body + n, data, sizeof(data));
    n += sizeof(data);
    n += (size_t)snprintf(body + n, sizeof(body) - n, "\r\n--XyZ--\r\n");
    if (status_of(post_raw(MULTIPART_HEAD("/up/file"), body, n)) != 200)
        TEST_FAIL("multipart: %s", resp);
    snprintf(want, sizeof(want), "file %zu %zu missing=0 first=tar.gz-like-data", sizeof(data),
             sizeof(data));
    ASSERT_EQ_STR(body_of(resp), want);
    /* no part of that name */
    {
        static const char other[] = "--XyZ\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n"
                                    "other\r\n--XyZ--\r\n";
        ASSERT_EQ_INT(status_of(post_raw(MULTIPART_HEAD("/up/file"), other, sizeof(other) - 1)),
                      200);
        ASSERT_EQ_STR(body_of(resp), "file 0 0 missing=1 first=");
    }
    /* cut short: no closing boundary */
    ASSERT_EQ_INT(status_of(post_raw(MULTIPART_HEAD("/up/file"), body, 30000)), 400);
    ASSERT_CONTAINS(body_of(resp), "malformed multipart/form-data body");
    /* no boundary at all */
    ASSERT_EQ_INT(status_of(post_raw("POST /up/file HTTP/1.1\r\nHost: x\r\n"
                                     "Content-Type: multipart/form-data\r\n",
                                     "x", 1)),
                  400);
    /* not multipart: the body as it is */
    ASSERT_EQ_INT(status_of(post_raw("POST /up/file HTTP/1.1\r\nHost: x\r\n", data, 1000)), 200);
    ASSERT_EQ_STR(body_of(resp), "file 1000 1000 missing=0 first=tar.gz-like-data");
    /* over the file's limit (40 MiB): refused before a byte is read */
    {
        int fd = send_head("POST /up/file HTTP/1.1\r\nHost: x\r\nContent-Length: 41943041\r\n\r\n");
        recv_all(fd, resp, sizeof(resp));
        close(fd);
        ASSERT_EQ_INT(status_of(resp), 413);
    }
    ASSERT_EQ_INT(up_handled, 3);
    wait_until(&up_freed, 6, "every request's state to be freed");
    /* state taken by the handler is its own: freed once, by it */
    ASSERT_EQ_INT(status_of(post_raw("POST /up/filetake HTTP/1.1\r\nHost: x\r\n", "x", 1)), 200);
    ASSERT_EQ_STR(body_of(resp), "taken");
    wait_until(&up_freed, 7, "the taken state to be freed by the handler");
    stop();
}

/* The strict checks come before any route and its callbacks. */
TEST_CASE(strict_checks_before_routes)
{
    const char *r;

    start();
    r = request("GET /xrpc/x HTTP/1.1\r\nHost: 80-box.preview.test\r\nBad Name: 1\r\n", "");
    ASSERT_EQ_INT(status_of(r), 400);
    ASSERT_CONTAINS(body_of(r), "\"error\":\"InvalidRequest\"");
    ASSERT(strstr(r, "host-route") == NULL);
    {
        int fd = send_head("POST /up/deny HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n");
        recv_all(fd, resp, sizeof(resp));
        close(fd);
        r = resp;
    }
    ASSERT_EQ_INT(status_of(r), 501);
    ASSERT_CONTAINS(body_of(r), "\"error\":\"NotImplemented\"");
    r = request("GET /e/a%00b HTTP/1.1\r\nHost: x\r\n", "");
    ASSERT_EQ_INT(status_of(r), 400);
    ASSERT(strstr(r, "rest=") == NULL);
    ASSERT_EQ_INT(up_heads, 0);
    stop();
}

int main(void)
{
    int failed =
        RUN_TESTS(routes_prefix_query_headers_body, route_body_limit_413, stream_chunks_then_end,
                  stream_client_gone_is_noticed, stream_server_shutdown_ends_it,
                  ws_echo_text_binary_fragmented_ping, ws_socket_closed_after_close,
                  ws_bad_handshake, ws_broken_frames_close_codes,
                  ws_protocol_errors_answered_with_a_close_frame, ws_many_and_abrupt_disconnects,
                  host_route_wins_over_paths, raw_upgrade_hands_over_the_socket);

    failed |=
        RUN_TESTS(deferred_keep_alive, head_callback_answers_before_the_body,
                  held_request_reads_no_body_until_released, held_request_answered_without_its_body,
                  body_to_file, strict_checks_before_routes);
    return failed;
}
