/* The egress proxy (issue 20; docs/design/network.md, "The name-checking
 * proxy"): a sandbox with a policy has its TCP connections to ports 80,
 * 443 and the policy's ports redirected by its table to 127.0.0.1:
 * PE_EGRESS_PROXY_PORT in its own namespace, where this listens. For each
 * connection it reads the name the client sends (TLS SNI, or the Host of
 * every HTTP/1.x request on it) and connects to the original destination
 * (SO_ORIGINAL_DST) only if:
 *   - the address is not in denyCidrs, the port is allowed, the name is
 *     not in denyDomains; and, in "allowlist",
 *   - the address is in allowCidrs, or the name is allowed AND resolves to
 *     that address (what our resolver answered, else a fresh lookup), so
 *     a denied host sharing an address with an allowed one stays denied.
 * A connection that sends no name (no Host, no SNI, another protocol, or
 * a server that speaks first) is judged by its address as the kernel
 * judges any: allowCidrs, or an address an allowed name resolved to.
 * Anything it cannot read for certain is refused with a reset.
 *
 * The connection out is made from the sandbox's namespace (so it takes
 * the sandbox's route and NAT, not the host's), marked so that its table
 * lets it through without redirecting it again. A policy change re-judges
 * every open connection and cuts those no longer allowed.
 *
 * Threading: one thread per sandbox accepts; one per connection relays,
 * with a cap per sandbox (PROXY_MAX_CONNS). Blocking work (a lookup) only
 * holds up the connection that needs it. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "pocketenv/egress-sniff.h"
#include "pocketenv/egress.h"
#include <openssl/err.h>
#include <openssl/x509.h>

#include "egress-tls.h"
#include "netpolicy.h"
#include "sandbox/sandbox.h"

#define PROXY_MAX_CONNS 256
#define FIRST_BYTE_MS 1000 /* a client that says nothing by then: the server speaks first */
#define SNIFF_MS 5000
#define CONNECT_MS 10000
#define RELAY_BUF (64 * 1024)
#define HALF_CLOSED_MS 60000
/* Room for request heads that grow when placeholders become values. */
#define SUBST_ROOM (64 * 1024)
#define PLACEHOLDER_STEM "PE_SECRET_"

typedef struct pconn {
    struct pconn *next;
    int client, up;
    uint32_t addr; /* host order */
    unsigned port;
    char name[PE_SNIFF_NAME_MAX + 1]; /* "" none; under px_mu */
    bool cut;                         /* under px_mu */
} pconn;

typedef struct proxy {
    struct proxy *next;
    pe_daemon *d;
    pe_runtime *rt;
    char *id;
    pid_t pid;
    int netns, listen, pidfd;
    int refs; /* the accepting thread's and each connection's */
    size_t n_conns;
    pconn *conns;
} proxy;

static pthread_mutex_t px_mu = PTHREAD_MUTEX_INITIALIZER;
static proxy *px_list;

static void px_unref(proxy *px)
{
    bool last;

    pthread_mutex_lock(&px_mu);
    last = --px->refs == 0;
    if (last)
        for (proxy **p = &px_list; *p; p = &(*p)->next)
            if (*p == px) {
                *p = px->next;
                break;
            }
    pthread_mutex_unlock(&px_mu);
    if (!last)
        return;
    close(px->netns);
    close(px->pidfd);
    free(px->id);
    free(px);
}

/* ---- the verdict ---- */

/* Why the connection may not go on, or NULL if it may. name: "" for none. */
static const char *verdict(proxy *px, const json_t *policy, const char *name, uint32_t addr,
                           unsigned port)
{
    const char *mode;

    if (policy == NULL)
        return NULL; /* removed: the network is open again */
    mode = json_string_value(json_object_get(policy, "mode"));
    if (mode == NULL || strcmp(mode, "none") == 0)
        return "no network";
    if ((addr >> 24) == 127 || addr == 0 || port == PE_EGRESS_PROXY_PORT)
        return "the proxy itself";
    if (pe_egress_addr_denied(policy, addr))
        return "denied address";
    if (!pe_egress_port_allowed(policy, port))
        return "port not allowed";
    if (name[0] && pe_egress_name_denied(policy, name))
        return "denied name";
    if (strcmp(mode, "open") == 0 || pe_egress_addr_allowed(policy, addr))
        return NULL;
    if (name[0] == '\0')
        return pe_daemon_egress_resolves(px->rt, px->id, policy, NULL, addr)
                   ? NULL
                   : "address of no allowed name";
    if (!pe_egress_name_allowed(policy, name))
        return "name not allowed";
    return pe_daemon_egress_resolves(px->rt, px->id, policy, name, addr)
               ? NULL
               : "name does not resolve to the address";
}

static const char *judge(proxy *px, const char *name, uint32_t addr, unsigned port)
{
    json_t *policy = NULL;
    const char *why;
    pe_err err;

    if (pe_runtime_egress_get(px->rt, px->id, &policy, &err) < 0)
        return "policy unreadable";
    why = verdict(px, policy, name, addr, port);
    json_decref(policy);
    return why;
}

/* Is a secret bound to name, so its TLS is to be terminated here? */
static bool bound(proxy *px, const char *name)
{
    json_t *policy = NULL;
    pe_err err;
    bool b;

    if (pe_runtime_egress_get(px->rt, px->id, &policy, &err) < 0 || policy == NULL)
        return false;
    b = pe_egress_host_bound(policy, name);
    json_decref(policy);
    return b;
}

static void log_denied(proxy *px, const char *name, uint32_t addr, unsigned port, const char *why)
{
    pe_daemon_egress_denied(px->rt, px->id, name, addr, port, "proxy", why);
}

/* ---- one connection ---- */

static int64_t now_ms(void)
{
    return pe_store_now_ms();
}

/* Read what comes by deadline into buf (cap), appended at *len. 0: got
 * some, 1: the deadline passed, -1: closed or failed. */
static int read_some(int fd, uint8_t *buf, size_t cap, size_t *len, int64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int64_t left = deadline - now_ms();
    ssize_t k;

    if (*len >= cap)
        return -1;
    if (left <= 0 || poll(&p, 1, (int)left) != 1)
        return 1;
    k = read(fd, buf + *len, cap - *len);
    if (k <= 0)
        return k < 0 && errno == EAGAIN ? 0 : -1;
    *len += (size_t)k;
    return 0;
}

enum { KIND_SILENT, KIND_OTHER, KIND_TLS, KIND_HTTP };

/* What the client says first: its kind and name. -1: refuse. */
static int sniff(int fd, uint8_t *buf, size_t *len, char *name, int *kind)
{
    int64_t deadline = now_ms() + SNIFF_MS;
    pe_sniff_http h;
    int r;

    name[0] = '\0';
    r = read_some(fd, buf, PE_SNIFF_MAX, len, now_ms() + FIRST_BYTE_MS);
    if (r == 1) {
        *kind = KIND_SILENT;
        return 0;
    }
    if (r < 0)
        return -1;
    for (;;) {
        if (pe_sniff_is_tls(buf, *len)) {
            *kind = KIND_TLS;
            r = pe_sniff_tls_sni(buf, *len, name);
        } else if ((r = pe_sniff_is_http(buf, *len)) == PE_SNIFF_NAME) {
            *kind = KIND_HTTP;
            r = pe_sniff_http_head(buf, *len, &h);
            if (r >= PE_SNIFF_NONE)
                memcpy(name, h.host, sizeof(h.host));
        } else if (r == PE_SNIFF_BAD) {
            *kind = KIND_OTHER; /* not HTTP, not TLS: judged by address */
            return 0;
        }
        if (r == PE_SNIFF_BAD)
            return -1;
        if (r != PE_SNIFF_MORE)
            return 0;
        if (read_some(fd, buf, PE_SNIFF_MAX, len, deadline) != 0)
            return -1;
    }
}

static int connect_out(proxy *px, uint32_t addr, unsigned port)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(addr)};
    struct pollfd p;
    int fd, e = 0;
    socklen_t el = sizeof(e);
    pe_err err;

    fd = pe_egress_out_socket(px->netns, &err);
    if (fd < 0) {
        pe_log_warn("sandbox %s: egress proxy: %s", px->id, err.msg);
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return fd;
    p = (struct pollfd){.fd = fd, .events = POLLOUT};
    if (errno != EINPROGRESS || poll(&p, 1, CONNECT_MS) != 1 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One direction's bytes in flight: buf[0, ok) may be sent, buf[ok, len)
 * waits for the framer (an HTTP head not complete yet). */
typedef struct flow {
    uint8_t *buf;
    size_t len, ok;
    bool eof, shut;
} flow;

enum { FR_RAW, FR_HEAD, FR_LEN, FR_CHUNKED };

typedef struct framer {
    int state;
    uint64_t left;
    pe_sniff_chunked ch;
    const char *tls_name; /* terminated TLS: the name verified upstream */
} framer;

static const uint8_t *find(const uint8_t *p, size_t n, const char *s, size_t k)
{
    /* (p is never NULL; saying so keeps -Wnonnull quiet in the ASan build) */
    return p == NULL || k == 0 || n < k ? NULL : memmem(p, n, s, k);
}

/* Put the values of egress-only secrets whose placeholders are in the
 * head at f->buf + f->ok (head bytes, the request line excluded) when the
 * request goes to a host they are bound to; a placeholder for another
 * host goes on unchanged (it is useless there) and is logged. Only heads
 * that carry the placeholder stem cost a look at the store. false:
 * refuse the request (what it needs cannot be done). */
static bool subst(proxy *px, pconn *c, flow *f, size_t *head_len, const char *host, bool tls)
{
    const uint8_t *head = f->buf + f->ok, *eol;
    pe_sandbox_egress_secret *list = NULL;
    json_t *policy = NULL;
    size_t n = 0, skip;
    pe_store *s;
    pe_err err;
    bool ok = true;

    if (find(head, *head_len, PLACEHOLDER_STEM, strlen(PLACEHOLDER_STEM)) == NULL)
        return true;
    eol = memchr(head, '\n', *head_len);
    skip = eol ? (size_t)(eol - head) + 1 : *head_len; /* headers only, not the target */
    if (pe_runtime_egress_get(px->rt, px->id, &policy, &err) < 0 || policy == NULL ||
        (s = pe_daemon_store(px->d, &err)) == NULL ||
        pe_sandbox_egress_secrets(&px->d->sx, s, px->id, policy, &list, &n, &err) < 0) {
        json_decref(policy);
        return policy == NULL; /* no policy, no egress-only secret */
    }
    for (size_t i = 0; i < n && ok; i++) {
        size_t k = strlen(list[i].placeholder);
        const uint8_t *at;
        /* Over plain HTTP the value goes only where the bound name
         * resolves (else any address with that Host would get it); over
         * terminated TLS the host's certificate was verified for it. */
        bool bound = pe_egress_secret_bound(policy, list[i].name, host) &&
                     (tls || pe_daemon_egress_resolves(px->rt, px->id, policy, host, c->addr));
        char *why;

        while (ok && (at = find(f->buf + f->ok + skip, *head_len - skip, list[i].placeholder, k))) {
            size_t off = (size_t)(at - f->buf);
            if (!bound) {
                why = pe_xasprintf("placeholder of secret %.40s sent to a host it is not bound to",
                                   list[i].name);
                pe_daemon_egress_denied(px->rt, px->id, host, c->addr, c->port, "secret", why);
                free(why);
                break;
            }
            /* a value that would end the header line would forge others */
            if (memchr(list[i].value, '\r', list[i].len) ||
                memchr(list[i].value, '\n', list[i].len) ||
                memchr(list[i].value, '\0', list[i].len) ||
                f->len - k + list[i].len > PE_SNIFF_MAX + SUBST_ROOM) {
                pe_daemon_egress_denied(px->rt, px->id, host, c->addr, c->port, "secret",
                                        "a secret value does not fit in the request head");
                ok = false;
                break;
            }
            memmove(f->buf + off + list[i].len, f->buf + off + k, f->len - off - k);
            memcpy(f->buf + off, list[i].value, list[i].len);
            f->len = f->len - k + list[i].len;
            *head_len = *head_len - k + list[i].len;
            skip = off + list[i].len - f->ok;
        }
        skip = eol ? (size_t)(eol - head) + 1 : *head_len;
    }
    pe_sandbox_egress_secrets_free(list, n);
    json_decref(policy);
    return ok;
}

/* Clear what may go on of the client's bytes; false: refuse the rest (a
 * request for a name the policy does not allow, or unreadable). */
static bool frame(proxy *px, pconn *c, framer *fr, flow *f)
{
    for (;;) {
        uint8_t *p = f->buf + f->ok;
        size_t n = f->len - f->ok;
        pe_sniff_http h;
        bool done = false;
        ssize_t k;
        int r;

        switch (fr->state) {
        case FR_RAW:
            f->ok = f->len;
            return true;
        case FR_HEAD: {
            const char *why;
            if (n == 0)
                return true;
            r = pe_sniff_http_head(p, n, &h);
            if (r == PE_SNIFF_MORE && (f->ok > 0 || n < PE_SNIFF_MAX))
                return true;
            if (r < PE_SNIFF_NONE)
                return false;
            /* inside terminated TLS, only the name verified upstream: a
             * value bound to another host must not go to this one */
            if (fr->tls_name != NULL && strcmp(h.host, fr->tls_name) != 0) {
                log_denied(px, h.host, c->addr, c->port, "Host is not the TLS name");
                return false;
            }
            pthread_mutex_lock(&px_mu);
            why = strcmp(h.host, c->name) == 0 ? NULL : "";
            pthread_mutex_unlock(&px_mu);
            if (why != NULL && (why = judge(px, h.host, c->addr, c->port)) != NULL) {
                log_denied(px, h.host, c->addr, c->port, why);
                return false;
            }
            pthread_mutex_lock(&px_mu);
            memcpy(c->name, h.host, sizeof(c->name));
            pthread_mutex_unlock(&px_mu);
            if (!subst(px, c, f, &h.head_len, h.host, fr->tls_name != NULL))
                return false;
            f->ok += h.head_len;
            fr->left = h.content_length > 0 ? (uint64_t)h.content_length : 0;
            fr->state = h.upgrade ? FR_RAW : h.chunked ? FR_CHUNKED : fr->left ? FR_LEN : FR_HEAD;
            break;
        }
        case FR_LEN:
            k = (ssize_t)(n < fr->left ? n : fr->left);
            f->ok += (size_t)k;
            fr->left -= (uint64_t)k;
            if (fr->left > 0)
                return true;
            fr->state = FR_HEAD;
            break;
        case FR_CHUNKED:
            k = pe_sniff_chunked_feed(&fr->ch, p, n, &done);
            if (k < 0)
                return false;
            f->ok += (size_t)k;
            if (!done)
                return true;
            fr->state = FR_HEAD;
            break;
        }
    }
}

/* Send what is cleared; false when the peer is gone. */
static bool drain(int to, flow *f)
{
    ssize_t k;

    if (f->ok == 0)
        return true;
    k = send(to, f->buf, f->ok, MSG_NOSIGNAL);
    if (k < 0)
        return errno == EAGAIN || errno == EINTR;
    memmove(f->buf, f->buf + k, f->len - (size_t)k);
    f->len -= (size_t)k;
    f->ok -= (size_t)k;
    return true;
}

static bool fill(int from, flow *f, size_t cap)
{
    ssize_t k = read(from, f->buf + f->len, cap - f->len);

    if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
        f->eof = true;
        return k == 0;
    }
    if (k > 0)
        f->len += (size_t)k;
    return true;
}

static bool is_cut(pconn *c)
{
    bool cut;

    pthread_mutex_lock(&px_mu);
    cut = c->cut;
    pthread_mutex_unlock(&px_mu);
    return cut;
}

/* Both ways until both ends closed, a refused request, or a cut. true:
 * ended cleanly. */
static bool relay(proxy *px, pconn *c, flow *cf, framer *fr)
{
    uint8_t *ubuf = pe_xmalloc(RELAY_BUF);
    flow uf = {.buf = ubuf};
    bool ok = true;

    while (ok && !is_cut(c) && !((cf->eof && cf->len == 0) && (uf.eof && uf.len == 0))) {
        struct pollfd p[2] = {{.fd = c->client}, {.fd = c->up}};

        if (!cf->eof && cf->len < PE_SNIFF_MAX)
            p[0].events |= POLLIN;
        if (!uf.eof && uf.len < RELAY_BUF)
            p[1].events |= POLLIN;
        if (cf->ok > 0)
            p[1].events |= POLLOUT;
        if (uf.ok > 0)
            p[0].events |= POLLOUT;
        for (int i = 0; i < 2; i++)
            if (p[i].events == 0)
                p[i].fd = -1; /* a hung-up end we wait nothing from */
        /* Once the client is done, a server that never ends its side
         * would hold the thread: HALF_CLOSED_MS of silence ends it. */
        int n = poll(p, 2, cf->eof ? HALF_CLOSED_MS : -1);
        if (n <= 0) {
            ok = n < 0 && errno == EINTR;
            continue;
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR) && (p[0].events & POLLIN)) {
            ok = fill(c->client, cf, PE_SNIFF_MAX);
            /* A refused request: what came before it still goes, and its
             * answer comes back; the client is heard no more (the server
             * sees the end of its requests). */
            if (ok && !frame(px, c, fr, cf))
                cf->eof = true;
            if (cf->eof)
                cf->len = cf->ok; /* a head cut short, or refused, goes nowhere */
        }
        if (ok && (p[1].revents & (POLLIN | POLLHUP | POLLERR)) && (p[1].events & POLLIN)) {
            ok = fill(c->up, &uf, RELAY_BUF);
            uf.ok = uf.len;
        }
        if (ok && cf->ok > 0)
            ok = drain(c->up, cf);
        if (ok && uf.ok > 0)
            ok = drain(c->client, &uf);
        if (cf->eof && cf->len == 0 && !cf->shut) {
            shutdown(c->up, SHUT_WR);
            cf->shut = true;
        }
        if (uf.eof && uf.len == 0 && !uf.shut) {
            shutdown(c->client, SHUT_WR);
            uf.shut = true;
        }
    }
    free(ubuf);
    return ok && !is_cut(c);
}

static void reset_close(int fd)
{
    struct linger l = {1, 0};

    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}

/* ---- TLS to a host a secret is bound to: terminated here ----
 *
 * Only then: the request heads must be read to put the values in. The
 * client gets a leaf of the sandbox's CA for the name it sent (SNI); the
 * real host is verified as any client would (egress-tls.c). The
 * ClientHello the sniffer read is handed to OpenSSL through a buffering
 * BIO in front of the socket. Both sockets are non-blocking. */

/* Wait for what s needs after a call returned r; false: failed, or the
 * deadline passed. */
static bool ssl_wait(SSL *s, int fd, int r, int64_t deadline)
{
    int e = SSL_get_error(s, r);
    struct pollfd p = {.fd = fd};
    int64_t left = deadline - now_ms();

    if (e == SSL_ERROR_WANT_READ)
        p.events = POLLIN;
    else if (e == SSL_ERROR_WANT_WRITE)
        p.events = POLLOUT;
    else
        return false;
    return left > 0 && poll(&p, 1, (int)left) == 1;
}

static bool handshake(SSL *s, int fd)
{
    int64_t deadline = now_ms() + CONNECT_MS;
    int r;

    while ((r = SSL_do_handshake(s)) != 1)
        if (!ssl_wait(s, fd, r, deadline))
            return false;
    return true;
}

static bool write_all(SSL *s, int fd, const uint8_t *buf, size_t n)
{
    int64_t deadline = now_ms() + HALF_CLOSED_MS;

    while (n > 0) {
        int k = SSL_write(s, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
        if (k > 0) {
            buf += k;
            n -= (size_t)k;
        } else if (!ssl_wait(s, fd, k, deadline)) {
            return false;
        }
    }
    return true;
}

/* SSL_read into buf: > 0 bytes, 0 nothing yet, -1 the peer is done. */
static int ssl_read(SSL *s, uint8_t *buf, size_t cap)
{
    int k = SSL_read(s, buf, (int)cap), e;

    if (k > 0)
        return k;
    e = SSL_get_error(s, k);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

static bool tls_relay(proxy *px, pconn *c, SSL *cs, SSL *us, flow *cf, framer *fr)
{
    uint8_t *ubuf = pe_xmalloc(RELAY_BUF);
    bool ok = true, ueof = false, progress = true;

    while (ok && !is_cut(c) && !(cf->eof && cf->len == 0 && ueof)) {
        /* an end that is done is not watched (it would wake us forever) */
        struct pollfd p[2] = {{.fd = cf->eof ? -1 : c->client, .events = POLLIN},
                              {.fd = ueof ? -1 : c->up, .events = POLLIN}};
        int k;

        /* bytes OpenSSL already holds are read before waiting again */
        if (!progress && poll(p, 2, cf->eof ? HALF_CLOSED_MS : -1) == 0)
            break;
        progress = false;
        if (!cf->eof && cf->len < PE_SNIFF_MAX) {
            k = ssl_read(cs, cf->buf + cf->len, PE_SNIFF_MAX - cf->len);
            if (k > 0) {
                cf->len += (size_t)k;
                progress = true;
                if (!frame(px, c, fr, cf))
                    cf->eof = true;
            } else if (k < 0) {
                cf->eof = true;
            }
            if (cf->eof) {
                cf->len = cf->ok; /* a head cut short, or refused, goes nowhere */
                progress = true;
            }
        }
        if (cf->ok > 0) {
            ok = write_all(us, c->up, cf->buf, cf->ok);
            memmove(cf->buf, cf->buf + cf->ok, cf->len - cf->ok);
            cf->len -= cf->ok;
            cf->ok = 0;
        }
        if (ok && cf->eof && cf->len == 0 && !cf->shut) {
            SSL_shutdown(us);
            shutdown(c->up, SHUT_WR);
            cf->shut = true;
        }
        if (ok && !ueof) {
            k = ssl_read(us, ubuf, RELAY_BUF);
            if (k > 0)
                ok = write_all(cs, c->client, ubuf, (size_t)k);
            else if (k < 0) {
                ueof = true;
                SSL_shutdown(cs);
                shutdown(c->client, SHUT_WR);
            }
            progress = progress || k != 0;
        }
    }
    free(ubuf);
    return ok && !is_cut(c);
}

/* Terminate the client's TLS (its ClientHello in cf), open verified TLS
 * to the real host, relay with the heads framed (and placeholders put
 * in). false: refuse (reset). */
static bool intercept(proxy *px, pconn *c, flow *cf, const char *name)
{
    SSL *us = pe_egress_tls_client(name), *cs = NULL;
    BIO *rb = NULL, *wb = NULL;
    framer fr = {.state = FR_HEAD, .tls_name = name};
    bool ok = false;

    if (us == NULL || SSL_set_fd(us, c->up) != 1) {
        log_denied(px, name, c->addr, c->port, "TLS to the host could not be set up");
        goto out;
    }
    SSL_set_connect_state(us);
    if (!handshake(us, c->up)) {
        long v = SSL_get_verify_result(us);
        char why[128];
        snprintf(why, sizeof(why), "host's certificate not accepted: %.80s",
                 v != X509_V_OK ? X509_verify_cert_error_string(v) : "TLS handshake failed");
        log_denied(px, name, c->addr, c->port, why);
        goto out;
    }
    cs = pe_egress_tls_server(px->id, name);
    rb = BIO_new(BIO_f_buffer());
    wb = BIO_new_socket(c->client, BIO_NOCLOSE);
    if (cs == NULL || rb == NULL || wb == NULL)
        goto out;
    BIO_push(rb, BIO_new_socket(c->client, BIO_NOCLOSE));
    if (BIO_set_buffer_read_data(rb, cf->buf, cf->len) != 1)
        goto out;
    cf->len = cf->ok = 0;
    SSL_set_bio(cs, rb, wb);
    rb = wb = NULL; /* cs has them */
    SSL_set_accept_state(cs);
    if (!handshake(cs, c->client))
        goto out; /* the client does not trust us (yet): nothing was sent */
    ok = tls_relay(px, c, cs, us, cf, &fr);
out:
    BIO_free_all(rb);
    BIO_free(wb);
    SSL_free(cs);
    SSL_free(us);
    ERR_clear_error();
    return ok;
}

typedef struct conn_arg {
    proxy *px;
    pconn *c;
} conn_arg;

static void conn_forget(proxy *px, pconn *c)
{
    pthread_mutex_lock(&px_mu);
    for (pconn **p = &px->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    px->n_conns--;
    pthread_mutex_unlock(&px_mu);
}

static bool original_dst(int fd, uint32_t *addr, unsigned *port)
{
    struct sockaddr_in sa;
    socklen_t l = sizeof(sa);

    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sa, &l) < 0 || sa.sin_family != AF_INET)
        return false;
    *addr = ntohl(sa.sin_addr.s_addr);
    *port = ntohs(sa.sin_port);
    return true;
}

static void *conn_thread(void *arg)
{
    conn_arg a = *(conn_arg *)arg;
    proxy *px = a.px;
    pconn *c = a.c;
    uint8_t *cbuf = pe_xmalloc(PE_SNIFF_MAX + SUBST_ROOM);
    flow cf = {.buf = cbuf};
    framer fr = {.state = FR_RAW};
    char name[PE_SNIFF_NAME_MAX + 1] = "";
    const char *why = NULL;
    int kind = KIND_OTHER, up;
    bool clean = false;

    free(arg);
    if (!original_dst(c->client, &c->addr, &c->port))
        goto out;
    if (sniff(c->client, cbuf, &cf.len, name, &kind) < 0) {
        log_denied(px, "", c->addr, c->port, "unreadable TLS or HTTP");
        goto out;
    }
    why = judge(px, name, c->addr, c->port);
    if (why != NULL) {
        log_denied(px, name, c->addr, c->port, why);
        goto out;
    }
    pthread_mutex_lock(&px_mu);
    memcpy(c->name, name, sizeof(c->name));
    pthread_mutex_unlock(&px_mu);
    up = connect_out(px, c->addr, c->port);
    if (up < 0)
        goto out;
    pthread_mutex_lock(&px_mu);
    c->up = up;
    pthread_mutex_unlock(&px_mu);
    if (kind == KIND_TLS && name[0] != '\0' && bound(px, name)) {
        clean = intercept(px, c, &cf, name);
        goto out;
    }
    /* the first head is framed like the ones after it */
    fr.state = kind == KIND_HTTP ? FR_HEAD : FR_RAW;
    if (!frame(px, c, &fr, &cf)) {
        cf.eof = true; /* a later request refused: as in relay() */
        cf.len = cf.ok;
    }
    clean = relay(px, c, &cf, &fr);
out:
    conn_forget(px, c);
    if (clean) {
        close(c->client);
        close(c->up);
    } else {
        reset_close(c->client);
        reset_close(c->up);
    }
    free(c);
    free(cbuf);
    px_unref(px);
    return NULL;
}

/* ---- the listener ---- */

static void accept_one(proxy *px)
{
    int fd = accept4(px->listen, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    conn_arg *a;
    pconn *c;
    pthread_t t;
    pthread_attr_t attr;

    if (fd < 0)
        return;
    pthread_mutex_lock(&px_mu);
    if (px->n_conns >= PROXY_MAX_CONNS) {
        pthread_mutex_unlock(&px_mu);
        pe_daemon_egress_denied(px->rt, px->id, NULL, 0, 0, "proxy", "too many connections");
        reset_close(fd);
        return;
    }
    c = pe_xcalloc(1, sizeof(*c));
    c->client = fd;
    c->up = -1;
    c->next = px->conns;
    px->conns = c;
    px->n_conns++;
    px->refs++;
    pthread_mutex_unlock(&px_mu);
    a = pe_xmalloc(sizeof(*a));
    a->px = px;
    a->c = c;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&t, &attr, conn_thread, a) != 0) {
        free(a);
        conn_forget(px, c);
        reset_close(fd);
        free(c);
        px_unref(px);
    }
    pthread_attr_destroy(&attr);
}

static void *listen_thread(void *arg)
{
    proxy *px = arg;

    for (;;) {
        struct pollfd p[2] = {{.fd = px->listen, .events = POLLIN},
                              {.fd = px->pidfd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break; /* the sandbox ended */
        if (p[0].revents & POLLIN)
            accept_one(px);
    }
    close(px->listen);
    px->listen = -1;
    px_unref(px);
    return NULL;
}

void pe_daemon_egress_proxy_start(pe_daemon *d, const char *id, pid_t pid, int netns)
{
    pe_runtime *rt = &d->rt;
    proxy *px;
    pthread_t t;
    pe_err err;

    pthread_mutex_lock(&px_mu);
    for (px = px_list; px; px = px->next)
        if (strcmp(px->id, id) == 0 && px->pid == pid && px->listen >= 0)
            break;
    pthread_mutex_unlock(&px_mu);
    if (px != NULL)
        return;
    px = pe_xcalloc(1, sizeof(*px));
    px->d = d;
    px->rt = rt;
    px->id = pe_xstrdup(id);
    px->pid = pid;
    px->refs = 1;
    px->netns = fcntl(netns, F_DUPFD_CLOEXEC, 0);
    px->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    px->listen = px->netns < 0 || px->pidfd < 0 ? -1 : pe_egress_proxy_socket(px->netns, &err);
    if (px->listen < 0) {
        pe_log_warn("sandbox %s: egress proxy: %s", id,
                    px->netns < 0 || px->pidfd < 0 ? "the sandbox ended" : err.msg);
        if (px->netns >= 0)
            close(px->netns);
        if (px->pidfd >= 0)
            close(px->pidfd);
        free(px->id);
        free(px);
        return;
    }
    pthread_mutex_lock(&px_mu);
    px->next = px_list;
    px_list = px;
    pthread_mutex_unlock(&px_mu);
    if (pthread_create(&t, NULL, listen_thread, px) != 0) {
        close(px->listen);
        px->listen = -1;
        px_unref(px);
        return;
    }
    pthread_detach(t);
}

void pe_daemon_egress_proxy_recheck(pe_runtime *rt, const char *id)
{
    typedef struct seen {
        pconn *c;
        char name[PE_SNIFF_NAME_MAX + 1];
        uint32_t addr;
        unsigned port;
    } seen;
    seen *list = NULL;
    size_t n = 0, cap = 0;
    proxy *px;

    (void)rt;
    /* What is open now; judged outside the lock (a lookup may be slow),
     * cut under it if the connection is still there. */
    pthread_mutex_lock(&px_mu);
    for (px = px_list; px; px = px->next) {
        if (strcmp(px->id, id) != 0)
            continue;
        for (pconn *c = px->conns; c; c = c->next) {
            if (c->up < 0)
                continue;
            if (n == cap)
                list = pe_xrealloc(list, (cap = cap ? cap * 2 : 16) * sizeof(*list));
            list[n].c = c;
            memcpy(list[n].name, c->name, sizeof(c->name));
            list[n].addr = c->addr;
            list[n].port = c->port;
            n++;
        }
        px->refs++;
        break;
    }
    pthread_mutex_unlock(&px_mu);
    if (px == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        const char *why = judge(px, list[i].name, list[i].addr, list[i].port);
        if (why == NULL)
            continue;
        pthread_mutex_lock(&px_mu);
        for (pconn *c = px->conns; c; c = c->next)
            if (c == list[i].c && c->addr == list[i].addr && c->port == list[i].port) {
                c->cut = true;
                shutdown(c->client, SHUT_RDWR);
                shutdown(c->up, SHUT_RDWR);
            }
        pthread_mutex_unlock(&px_mu);
        log_denied(px, list[i].name, list[i].addr, list[i].port, why);
    }
    free(list);
    px_unref(px);
}
