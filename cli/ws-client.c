/* A WebSocket client for the CLI (console, exec) and the local terminal's
 * modes and signals around it (ws-client.h).
 *
 * WebSocket framing is libwslay's; the opening handshake (one HTTP
 * request) and Sec-WebSocket-Accept (SHA-1, base64: nettle) are the only
 * parts written here, because Debian's libcurl is built without WebSocket
 * support. Signals reach a command's poll loop through a self-pipe, so
 * the terminal is restored in normal context. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "api.h"
#include "core/util.h"
#include "ws-client.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

int pe_ws_sig_pipe[2] = {-1, -1};
bool pe_ws_tio_saved;
static struct termios saved_tio;
static bool at_exit;

void pe_ws_term_restore(void)
{
    if (pe_ws_tio_saved) {
        tcsetattr(0, TCSAFLUSH, &saved_tio);
        pe_ws_tio_saved = false;
    }
}

static void on_signal(int signo)
{
    unsigned char b = (unsigned char)signo;
    int saved = errno;
    ssize_t r = write(pe_ws_sig_pipe[1], &b, 1);

    (void)r;
    errno = saved;
}

/* Watch signo through pe_ws_sig_pipe, unless it was ignored when we started
 * (nohup, a background job's SIGINT): that choice is our caller's. */
void pe_ws_catch_signal(int signo)
{
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART}, old;

    if (sigaction(signo, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
        return;
    sigemptyset(&sa.sa_mask);
    sigaction(signo, &sa, NULL);
}

void pe_ws_term_raw(void)
{
    struct termios raw;

    if (!isatty(0) || tcgetattr(0, &saved_tio) < 0)
        return;
    pe_ws_tio_saved = true;
    if (!at_exit) {
        atexit(pe_ws_term_restore);
        at_exit = true;
    }
    raw = saved_tio;
    cfmakeraw(&raw);
    tcsetattr(0, TCSAFLUSH, &raw);
}

/* ---- the connection ---- */

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    pe_ws_conn *c = ud;
    ssize_t n;

    if (c->pre_off < c->pre_len) {
        n = (ssize_t)(c->pre_len - c->pre_off < len ? c->pre_len - c->pre_off : len);
        memcpy(buf, c->pre + c->pre_off, (size_t)n);
        c->pre_off += (size_t)n;
        return n;
    }
    n = recv(c->fd, buf, len, 0);
    if (n > 0)
        return n;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    else
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    pe_ws_conn *c = ud;
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);

    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EINTR)
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    else
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static int on_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    return getrandom(buf, len, 0) == (ssize_t)len ? 0 : -1;
}

void pe_ws_write_all(int fd, const void *p, size_t n)
{
    const char *s = p;

    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

void pe_ws_callbacks(struct wslay_event_callbacks *cb, wslay_event_on_msg_recv_callback on_msg)
{
    *cb = (struct wslay_event_callbacks){on_recv, on_send, on_genmask, NULL, NULL, NULL, on_msg};
}

/* ---- opening handshake ---- */

/* url: only to name the daemon in an error. */
static int dial(const char *host, const char *port, const char *url, pe_err *err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
    int fd = -1, r;

    r = getaddrinfo(host, port, &hints, &res);
    if (r != 0)
        return pe_err_set(err, PE_API_ECONNECT, 0, "resolve %s: %s", host, gai_strerror(r));
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return pe_err_set(err, PE_API_ECONNECT, errno,
                          "cannot reach the Pocketenv daemon at %s: %s", url, strerror(errno));
    return fd;
}

static void accept_key(const char *key, char *out)
{
    struct sha1_ctx sha;
    uint8_t digest[SHA1_DIGEST_SIZE];

    sha1_init(&sha);
    sha1_update(&sha, strlen(key), (const uint8_t *)key);
    sha1_update(&sha, strlen(WS_GUID), (const uint8_t *)WS_GUID);
    sha1_digest(&sha, sizeof(digest), digest);
    base64_encode_raw(out, sizeof(digest), digest);
    out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
}

/* Connect to url's host and upgrade path to a WebSocket. */
int pe_ws_open(const char *url, const char *path, const char *authorization, pe_ws_conn *c,
               pe_err *err)
{
    char host[256], port[8] = "80", key[32], want[40], *end;
    uint8_t nonce[16];
    const char *p, *hp;
    cleanup_free char *req = NULL;
    size_t len = 0, hl;

    if (strncmp(url, "http://", 7) != 0)
        return pe_err_set(err, PE_EINVAL, 0,
                          "a WebSocket needs an http:// daemon URL (POCKETENV_API_URL is %s)", url);
    hp = url + 7;
    hl = strcspn(hp, "/");
    if (hl == 0 || hl >= sizeof(host))
        return pe_err_set(err, PE_EINVAL, 0, "bad daemon URL %s", url);
    memcpy(host, hp, hl);
    host[hl] = '\0';
    if (host[0] == '[') { /* [v6]:port */
        char *close = strchr(host, ']');
        if (close == NULL)
            return pe_err_set(err, PE_EINVAL, 0, "bad daemon URL %s", url);
        if (close[1] == ':')
            snprintf(port, sizeof(port), "%.5s", close + 2);
        *close = '\0';
        memmove(host, host + 1, strlen(host));
    } else if ((end = strrchr(host, ':')) != NULL) {
        snprintf(port, sizeof(port), "%.5s", end + 1);
        *end = '\0';
    }
    c->fd = dial(host, port, url, err);
    if (c->fd < 0)
        return -1;
    if (getrandom(nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
        return pe_err_sys(err, "getrandom");
    base64_encode_raw(key, sizeof(nonce), nonce);
    key[BASE64_ENCODE_RAW_LENGTH(sizeof(nonce))] = '\0';
    accept_key(key, want);
    req = pe_xasprintf("GET %s%s HTTP/1.1\r\nHost: %.*s\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                       hp + hl, path, (int)hl, hp, key, authorization ? "Authorization: " : "",
                       authorization ? authorization : "", authorization ? "\r\n" : "");
    pe_ws_write_all(c->fd, req, strlen(req));
    /* The answer's head; what follows it is the WebSocket stream. */
    for (;;) {
        ssize_t n = recv(c->fd, c->pre + len, sizeof(c->pre) - 1 - len, 0);
        char *head_end;

        if (n <= 0)
            return pe_err_set(err, PE_API_ECONNECT, 0, "the daemon closed the connection");
        len += (size_t)n;
        c->pre[len] = '\0';
        head_end = strstr(c->pre, "\r\n\r\n");
        if (head_end == NULL) {
            if (len == sizeof(c->pre) - 1)
                return pe_err_set(err, PE_API_ECONNECT, 0, "answer too long");
            continue;
        }
        *head_end = '\0';
        c->pre_off = (size_t)(head_end + 4 - c->pre);
        c->pre_len = len;
        break;
    }
    if (strncmp(c->pre, "HTTP/1.1 101", 12) != 0) {
        /* The status line says enough, but for an expired token (the
         * XRPC error that follows it, when it came with the head). */
        const char *sp = strchr(c->pre, ' ');
        int status = sp ? atoi(sp + 1) : 0;
        json_t *body = json_loadb(c->pre + c->pre_off, c->pre_len - c->pre_off, 0, NULL);
        bool expired =
            strcmp(json_string_value(json_object_get(body, "error")) ?: "", "ExpiredToken") == 0;

        json_decref(body);
        return pe_err_set(err, PE_API_EHTTP, 0, "%s",
                          expired         ? "your token has expired; log in again"
                          : status == 401 ? "not logged in (token refused)"
                          : status == 404 ? "sandbox not found"
                          : status == 400 ? "the sandbox is not running"
                          : status == 429 ? "too many at once: try again later"
                                          : "the daemon refused the connection");
    }
    for (p = c->pre; (p = strcasestr(p, "\r\nSec-WebSocket-Accept:")) != NULL; p++) {
        const char *v = p + strlen("\r\nSec-WebSocket-Accept:");
        while (*v == ' ')
            v++;
        if (strncmp(v, want, strlen(want)) == 0)
            return 0;
    }
    return pe_err_set(err, PE_API_ECONNECT, 0, "the daemon's WebSocket handshake is wrong");
}
