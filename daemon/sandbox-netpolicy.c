/* A sandbox's egress policy below the methods (getNetworkPolicy,
 * putNetworkPolicy, getNetworkDenials: handlers/netpolicy.c): reading and
 * applying it, a create's policy until the runtime has the sandbox, and
 * the per-sandbox DNS forwarder that enforces a policy's names.
 *
 * The policy itself is the runtime's (pocketenv/egress.h): stored beside
 * the sandbox's state, its nftables table written before the sandbox runs
 * and rewritten at once on a change. The kernel lets the sandbox reach
 * only allowed CIDRs and the addresses in its dns4 set; this file fills
 * that set. Each sandbox with a policy gets a thread that owns a UDP
 * socket and a TCP listener bound to 127.0.0.1:53 inside the sandbox's
 * network namespace (where the table redirects every DNS query) and:
 *   - answers NXDOMAIN for a name the policy does not allow (logged);
 *   - forwards an allowed query to the host's resolver
 *     (POCKETENV_DNS_UPSTREAM=a.b.c.d[:port], else the first nameserver
 *     of /etc/resolv.conf), adds the answer's IPv4 addresses outside
 *     denyCidrs to dns4 with their TTL, and only then passes the answer
 *     on, so the sandbox's first connection already finds them.
 * (Upstream is always asked over UDP.) The thread ends with the sandbox's
 * init (its pidfd): the sockets would otherwise keep the namespace alive. The policy is read again
 * for every query, so a change applies to the next lookup; and a change keeps in the new table the
 * addresses of names it still allows (so their open connections go on), and only those.
 *
 * Threading: called on workers; one forwarder thread per running sandbox
 * with a policy. */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <resolv.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "egress-tls.h"
#include "pocketenv/egress.h"
#include "netpolicy.h"
#include "template/template.h"

#define DNS_MAX 4096
#define UPSTREAM_WAIT_MS 3000
#define TCP_WAIT_MS 2000
#define MAX_ADDRS 64
#define LEARNED_MAX 256

/* ---- the forwarder ---- */

/* An address an allowed name resolved to, while its TTL runs: a policy
 * change keeps it when the new policy still allows the name. */
typedef struct learned {
    char name[254];
    uint32_t addr;
    int64_t expires_ms;
} learned;

typedef struct fwd {
    struct fwd *next;
    pe_runtime *rt;
    char *id;
    pid_t pid;
    int netns, sock, tcp, pidfd;
    int nflog;                 /* the table's refusals; -1 if it could not be bound */
    learned seen[LEARNED_MAX]; /* under fwd_mu */
} fwd;

static pthread_mutex_t fwd_mu = PTHREAD_MUTEX_INITIALIZER;
static fwd *fwd_list;

static int upstream_addr(struct sockaddr_in *sa)
{
    const char *env = getenv("POCKETENV_DNS_UPSTREAM");
    cleanup_free char *text = NULL;
    char host[64] = "";
    unsigned port = 53;

    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    if (env && *env) {
        const char *colon = strchr(env, ':');
        size_t n = colon ? (size_t)(colon - env) : strlen(env);
        if (n >= sizeof(host))
            return -1;
        memcpy(host, env, n);
        host[n] = '\0';
        if (colon)
            port = (unsigned)atoi(colon + 1);
    } else if (pe_fs_read_file("/etc/resolv.conf", 64 * 1024, &text, NULL, NULL) == 0) {
        char *save = NULL; /* forwarders run side by side: not strtok */
        for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
            if (sscanf(l, "nameserver %63s", host) == 1 && strchr(host, ':') == NULL)
                break;
            else
                host[0] = '\0';
    }
    sa->sin_port = htons((uint16_t)port);
    return host[0] && port > 0 && port < 65536 && inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0
                                                                                               : -1;
}

/* The question's name, lower-case, no trailing dot. *odd: it has a byte
 * no host name has (a dot inside a label comes out as "\."), which could
 * make it look like a subdomain of an allowed name when it is not. */
static int question(const unsigned char *q, size_t n, char *name, size_t cap, bool *odd)
{
    ns_msg msg;
    ns_rr rr;

    if (ns_initparse(q, (int)n, &msg) < 0 || ns_msg_count(msg, ns_s_qd) != 1 ||
        ns_parserr(&msg, ns_s_qd, 0, &rr) < 0)
        return -1;
    snprintf(name, cap, "%s", ns_rr_name(rr));
    *odd = false;
    for (char *c = name; *c; c++) {
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' ||
              *c == '.'))
            *odd = true;
    }
    return 0;
}

/* The query turned into its NXDOMAIN answer, in place: the question stays,
 * no records. */
static size_t nxdomain(unsigned char *q, size_t n)
{
    ns_msg msg;
    size_t end = n;

    if (ns_initparse(q, (int)n, &msg) == 0 && ns_msg_count(msg, ns_s_an) == 0) {
        /* cut what follows the question (an EDNS record) */
        const unsigned char *p = q + NS_HFIXEDSZ;
        int len = dn_skipname(p, q + n);
        if (len >= 0 && NS_HFIXEDSZ + (size_t)len + NS_QFIXEDSZ <= n)
            end = NS_HFIXEDSZ + (size_t)len + NS_QFIXEDSZ;
    }
    q[2] = (unsigned char)(0x80 | (q[2] & 0x79)); /* QR, opcode and RD kept */
    q[3] = (unsigned char)(0x80 | ns_r_nxdomain); /* RA */
    memset(q + 6, 0, 6);                          /* AN, NS, AR counts */
    return end;
}

/* Under fwd_mu. */
static void remember_locked(fwd *f, const char *name, uint32_t addr, uint32_t ttl)
{
    int64_t now = pe_store_now_ms();
    learned *slot = NULL;

    for (size_t i = 0; i < LEARNED_MAX; i++) {
        learned *l = &f->seen[i];
        if (l->addr == addr && strcmp(l->name, name) == 0) {
            slot = l;
            break;
        }
        if (slot == NULL || l->expires_ms < slot->expires_ms)
            slot = l; /* else the one expiring first (or long expired) */
    }
    snprintf(slot->name, sizeof(slot->name), "%s", name);
    slot->addr = addr;
    slot->expires_ms = now + (int64_t)ttl * 1000;
}

static void remember(fwd *f, const char *name, uint32_t addr, uint32_t ttl)
{
    pthread_mutex_lock(&fwd_mu);
    remember_locked(f, name, addr, ttl);
    pthread_mutex_unlock(&fwd_mu);
}

/* Is answer record i of msg an A record (class IN)? Its address (host
 * order) and TTL then in *addr and *ttl. */
static bool answer_a(ns_msg *msg, int i, uint32_t *addr, uint32_t *ttl)
{
    ns_rr rr;
    uint32_t v;

    if (ns_parserr(msg, ns_s_an, i, &rr) < 0 || ns_rr_type(rr) != ns_t_a ||
        ns_rr_class(rr) != ns_c_in || ns_rr_rdlen(rr) != 4)
        return false;
    memcpy(&v, ns_rr_rdata(rr), 4);
    *addr = ntohl(v);
    *ttl = ns_rr_ttl(rr);
    return true;
}

/* Add the answer's A records (outside denyCidrs) to the sandbox's set. */
static void learn(fwd *f, const json_t *policy, const char *name, const unsigned char *a, size_t n)
{
    uint32_t addrs[MAX_ADDRS], ttls[MAX_ADDRS];
    size_t k = 0;
    ns_msg msg;
    pe_err err;

    if (ns_initparse(a, (int)n, &msg) < 0)
        return;
    for (int i = 0; i < ns_msg_count(msg, ns_s_an) && k < MAX_ADDRS; i++)
        if (answer_a(&msg, i, &addrs[k], &ttls[k]) && !pe_egress_addr_denied(policy, addrs[k]))
            k++;
    if (pe_egress_allow_addrs(f->netns, addrs, ttls, k, &err) < 0) {
        pe_log_warn("sandbox %s: egress: %s", f->id, err.msg);
        return;
    }
    for (size_t i = 0; i < k && strlen(name) < sizeof(f->seen[0].name); i++)
        remember(f, name, addrs[i], ttls[i]);
}

/* What a change to policy keeps of sandbox id's resolved addresses: those
 * of names it still allows, outside its denyCidrs, for their TTL's rest
 * (0 when it ran out: open connections to it go on, new ones need a new
 * lookup). The arrays are the caller's, LEARNED_MAX kept at most. */
static size_t kept_addrs(const char *id, const json_t *policy, uint32_t *addrs, uint32_t *ttls)
{
    int64_t now = pe_store_now_ms();
    size_t k = 0;

    pthread_mutex_lock(&fwd_mu);
    for (fwd *f = fwd_list; f; f = f->next) {
        if (strcmp(f->id, id) != 0)
            continue;
        for (size_t i = 0; i < LEARNED_MAX && k < LEARNED_MAX; i++) {
            const learned *l = &f->seen[i];
            if (l->addr == 0 || !pe_egress_name_allowed(policy, l->name) ||
                pe_egress_addr_denied(policy, l->addr))
                continue;
            addrs[k] = l->addr;
            ttls[k++] = l->expires_ms <= now ? 0 : (uint32_t)((l->expires_ms - now + 999) / 1000);
        }
    }
    pthread_mutex_unlock(&fwd_mu);
    return k;
}

void pe_daemon_egress_denied(pe_runtime *rt, const char *id, const char *name, uint32_t addr,
                             unsigned port, const char *via, const char *reason)
{
    char a[INET_ADDRSTRLEN] = "-";
    struct in_addr in = {htonl(addr)};
    json_t *e = json_pack("{s:o, s:s, s:s}", "time", pe_daemon_time_json(pe_store_now_ms()), "via",
                          via, "reason", reason);
    pe_err err;

    if (addr != 0) {
        inet_ntop(AF_INET, &in, a, sizeof(a));
        json_object_set_new(e, "address", json_string(a));
        if (port != 0) /* none for ICMP */
            json_object_set_new(e, "port", json_integer(port));
    }
    if (name != NULL && name[0] != '\0')
        json_object_set_new(e, "name", json_string(name));
    pe_log_info("event=egress_denied sandbox=%s name=%s addr=%s port=%u via=%s reason=\"%s\"", id,
                name && name[0] ? name : "-", a, port, via, reason);
    if (pe_runtime_egress_deny_log(rt, id, e, &err) < 0)
        pe_log_warn("sandbox %s: egress: %s", id, err.msg);
    json_decref(e);
}

/* The sandbox's policy now; a removed one lets everything through (no
 * table sends us queries then, but one may be on its way). */
static json_t *current_policy(fwd *f)
{
    json_t *policy = NULL;
    pe_err err;

    if (pe_runtime_egress_get(f->rt, f->id, &policy, &err) < 0 || policy == NULL)
        policy = json_pack("{s:s}", "mode", "open");
    return policy;
}

/* Where an answer goes: a UDP peer, or (to NULL) a TCP connection, with
 * the message's length in front. */
typedef struct reply {
    int fd;
    const struct sockaddr_in *to;
} reply;

static void answer(const reply *r, const unsigned char *m, size_t n)
{
    unsigned char len[2] = {(unsigned char)(n >> 8), (unsigned char)n};
    struct iovec iov[2] = {{len, 2}, {(void *)m, n}};

    if (r->to != NULL)
        sendto(r->fd, m, n, 0, (const struct sockaddr *)r->to, sizeof(*r->to));
    else if (writev(r->fd, iov, 2) < 0)
        pe_log_debug("egress resolver: tcp answer: %s", strerror(errno));
}

/* Answer NXDOMAIN (and log) if policy does not allow the name. */
static bool refused(fwd *f, const json_t *policy, const char *name, bool odd, unsigned char *q,
                    size_t n, const reply *r)
{
    if (!odd && pe_egress_name_allowed(policy, name))
        return false;
    pe_daemon_egress_denied(f->rt, f->id, odd ? "(not a host name)" : name, 0, 0, "dns",
                            "name not allowed");
    answer(r, q, nxdomain(q, n));
    return true;
}

/* The upstream resolver's answer to q in a, or -1 (none in time). */
static ssize_t ask_upstream(int up, const unsigned char *q, size_t n, unsigned char *a, size_t cap)
{
    struct sockaddr_in sa;
    struct pollfd p = {.fd = up, .events = POLLIN};
    int64_t deadline = pe_store_now_ms() + UPSTREAM_WAIT_MS;
    ssize_t got;

    if (upstream_addr(&sa) < 0 || sendto(up, q, n, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    while (poll(&p, 1, (int)(deadline - pe_store_now_ms())) == 1) {
        got = recv(up, a, cap, 0);
        if (got >= NS_HFIXEDSZ && a[0] == q[0] && a[1] == q[1])
            return got; /* else a late answer to an earlier query */
        if (pe_store_now_ms() >= deadline)
            break;
    }
    return -1;
}

/* Held while addresses go into a sandbox's set, and while a put replaces
 * its table: an answer to a lookup made under the old policy is judged
 * again under the new one before anything of it is added. Striped by
 * sandbox, so a put waiting for a busy sandbox holds up no other's DNS. */
static pthread_mutex_t apply_mus[16] = {[0 ... 15] = PTHREAD_MUTEX_INITIALIZER};

static pthread_mutex_t *apply_mu(const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (const char *c = id; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    return &apply_mus[h % PE_ARRAY_LEN(apply_mus)];
}

static void serve_query(fwd *f, int up, unsigned char *q, size_t n, const reply *r)
{
    unsigned char a[DNS_MAX];
    char name[NS_MAXDNAME];
    json_t *policy;
    ssize_t got;
    bool odd = false, no;

    if (n < NS_HFIXEDSZ || question(q, n, name, sizeof(name), &odd) < 0)
        return; /* not a query we can read: no answer */
    policy = current_policy(f);
    no = refused(f, policy, name, odd, q, n, r);
    json_decref(policy);
    if (no || (got = ask_upstream(up, q, n, a, sizeof(a))) < 0)
        return;
    pthread_mutex_lock(apply_mu(f->id));
    policy = current_policy(f);
    if (!refused(f, policy, name, odd, q, n, r)) {
        learn(f, policy, name, a, (size_t)got);
        answer(r, a, (size_t)got);
    }
    pthread_mutex_unlock(apply_mu(f->id));
    json_decref(policy);
}

/* Does sandbox id's resolver hold name (NULL: any name policy allows) at
 * addr with TTL left? */
static bool seen_at(const char *id, const json_t *policy, const char *name, uint32_t addr)
{
    int64_t now = pe_store_now_ms();
    bool found = false;

    pthread_mutex_lock(&fwd_mu);
    for (fwd *f = fwd_list; f && !found; f = f->next) {
        if (strcmp(f->id, id) != 0)
            continue;
        for (size_t i = 0; i < LEARNED_MAX && !found; i++) {
            const learned *l = &f->seen[i];
            found = l->addr == addr && l->expires_ms > now &&
                    (name ? strcmp(l->name, name) == 0 : pe_egress_name_allowed(policy, l->name));
        }
    }
    pthread_mutex_unlock(&fwd_mu);
    return found;
}

/* A query for name's A records, id 0x7065, into q (DNS_MAX); its length,
 * or 0 if name does not fit. */
static size_t a_query(const char *name, unsigned char *q)
{
    size_t n = NS_HFIXEDSZ;
    const char *p = name;

    memset(q, 0, NS_HFIXEDSZ);
    q[0] = 0x70, q[1] = 0x65, q[2] = 0x01; /* RD */
    q[5] = 1;                              /* QDCOUNT */
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        if (l == 0 || l > 63 || n + 1 + l + 5 > DNS_MAX)
            return 0;
        q[n++] = (unsigned char)l;
        memcpy(q + n, p, l);
        n += l;
        p += l + (dot ? 1 : 0);
    }
    q[n++] = 0;
    q[n++] = 0, q[n++] = ns_t_a, q[n++] = 0, q[n++] = ns_c_in;
    return n;
}

bool pe_daemon_egress_resolves(pe_runtime *rt, const char *id, const json_t *policy,
                               const char *name, uint32_t addr)
{
    unsigned char q[DNS_MAX], a[DNS_MAX];
    cleanup_fd int up = -1;
    size_t qn;
    ssize_t got;
    ns_msg msg;
    bool found = false;

    (void)rt;
    if (seen_at(id, policy, name, addr))
        return true;
    if (name == NULL || (qn = a_query(name, q)) == 0)
        return false;
    /* Not in our view (its TTL ran out, or the client had it cached):
     * ask again, as the sandbox's own lookup would. */
    up = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (up < 0 || (got = ask_upstream(up, q, qn, a, sizeof(a))) < 0 ||
        ns_initparse(a, (int)got, &msg) < 0)
        return false;
    pthread_mutex_lock(&fwd_mu);
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
        uint32_t v, ttl;
        if (!answer_a(&msg, i, &v, &ttl) || v != addr)
            continue;
        found = true;
        for (fwd *f = fwd_list; f; f = f->next)
            if (strcmp(f->id, id) == 0)
                remember_locked(f, name, addr, ttl);
    }
    pthread_mutex_unlock(&fwd_mu);
    return found;
}

static void fwd_free(fwd *f)
{
    pthread_mutex_lock(&fwd_mu);
    for (fwd **p = &fwd_list; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    pthread_mutex_unlock(&fwd_mu);
    close(f->sock);
    close(f->tcp);
    if (f->nflog >= 0)
        close(f->nflog);
    close(f->netns);
    close(f->pidfd);
    free(f->id);
    free(f);
}

/* Read n bytes from a non-blocking fd by deadline (ms); false if not. */
static bool read_by(int fd, unsigned char *buf, size_t n, int64_t deadline)
{
    size_t got = 0;

    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - pe_store_now_ms();
        ssize_t k;

        if (left <= 0 || poll(&p, 1, (int)left) != 1)
            return false;
        k = read(fd, buf + got, n - got);
        if (k <= 0 && !(k < 0 && errno == EAGAIN))
            return false;
        got += k > 0 ? (size_t)k : 0;
    }
    return true;
}

/* One query over TCP (a client's fallback for long answers): a sandbox
 * that sends it slowly holds up its own lookups only, TCP_WAIT_MS. */
static void serve_tcp(fwd *f, int up, unsigned char *q)
{
    cleanup_fd int c = accept4(f->tcp, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    int64_t deadline = pe_store_now_ms() + TCP_WAIT_MS;
    unsigned char len[2];
    size_t n;
    reply r = {c, NULL};

    if (c < 0 || !read_by(c, len, 2, deadline))
        return;
    n = (size_t)len[0] << 8 | len[1];
    if (n > 0 && n <= DNS_MAX && read_by(c, q, n, deadline))
        serve_query(f, up, q, n, &r);
}

/* What the table refused by itself (a connection by address to what the
 * policy does not allow, IPv6): the kernel copied it to our NFLOG socket
 * (rate-limited there). */
static void kernel_refusals(fwd *f)
{
    pe_egress_refusal r[32];
    size_t n = pe_egress_nflog_read(f->nflog, r, PE_ARRAY_LEN(r));

    for (size_t i = 0; i < n; i++)
        pe_daemon_egress_denied(f->rt, f->id, NULL, r[i].addr, r[i].port, "kernel",
                                r[i].ipv6                   ? "IPv6 is dropped"
                                : r[i].proto == IPPROTO_UDP ? "refused by the table (udp)"
                                                            : "refused by the table");
}

static void *fwd_thread(void *arg)
{
    fwd *f = arg;
    cleanup_fd int up = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    unsigned char q[DNS_MAX];

    for (;;) {
        struct pollfd p[4] = {{.fd = f->sock, .events = POLLIN},
                              {.fd = f->tcp, .events = POLLIN},
                              {.fd = f->pidfd, .events = POLLIN},
                              {.fd = f->nflog, .events = POLLIN}};
        struct sockaddr_in from;
        socklen_t flen = sizeof(from);
        reply r = {f->sock, &from};
        ssize_t n;

        if (poll(p, 4, -1) < 0 && errno != EINTR)
            break;
        if (p[2].revents)
            break; /* the sandbox ended */
        if (p[3].revents & POLLIN)
            kernel_refusals(f);
        if (up < 0)
            continue;
        if (p[1].revents & POLLIN)
            serve_tcp(f, up, q);
        if (!(p[0].revents & POLLIN))
            continue;
        n = recvfrom(f->sock, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
        if (n > 0)
            serve_query(f, up, q, (size_t)n, &r);
    }
    fwd_free(f);
    return NULL;
}

/* Start sandbox id's forwarder unless one serves its running init. */
static void fwd_ensure(pe_daemon *d, const char *id)
{
    pid_t pid = 0;
    pe_err err;
    fwd *f;
    pthread_t t;
    int netns = pe_runtime_egress_netns(&d->rt, id, &pid, &err);

    if (netns < 0)
        return; /* not running, or no network: nothing to serve */
    pthread_mutex_lock(&fwd_mu);
    for (f = fwd_list; f; f = f->next)
        if (strcmp(f->id, id) == 0 && f->pid == pid)
            break;
    if (f != NULL) {
        pthread_mutex_unlock(&fwd_mu);
        close(netns);
        return;
    }
    f = pe_xcalloc(1, sizeof(*f));
    f->rt = &d->rt;
    f->id = pe_xstrdup(id);
    f->pid = pid;
    f->netns = netns;
    f->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    f->sock = f->pidfd < 0 ? -1 : pe_egress_dns_socket(netns, SOCK_DGRAM, &err);
    f->tcp = f->sock < 0 ? -1 : pe_egress_dns_socket(netns, SOCK_STREAM, &err);
    f->nflog = -1;
    if (f->tcp >= 0) {
        pe_err e2;
        f->nflog = pe_egress_nflog_socket(netns, &e2);
        if (f->nflog < 0) /* the policy holds; only the log of its refusals is missing */
            pe_log_warn("sandbox %s: egress: kernel refusals not logged: %s", id, e2.msg);
    }
    if (f->pidfd < 0 || f->sock < 0 || f->tcp < 0) {
        pthread_mutex_unlock(&fwd_mu);
        pe_log_warn("sandbox %s: egress resolver: %s", id,
                    f->pidfd < 0 ? "the sandbox ended" : err.msg);
        if (f->pidfd >= 0)
            close(f->pidfd);
        if (f->sock >= 0)
            close(f->sock);
        close(netns);
        free(f->id);
        free(f);
        return;
    }
    f->next = fwd_list;
    fwd_list = f;
    pthread_mutex_unlock(&fwd_mu);
    pe_daemon_egress_proxy_start(d, id, pid, netns);
    if (pthread_create(&t, NULL, fwd_thread, f) != 0) {
        fwd_free(f);
        return;
    }
    pthread_detach(t);
}

/* Egress-only secrets: the sandbox's trust store gets its CA's
 * certificate (egress-tls.c; the key stays in the daemon): the image's
 * bundle (kept once as BUNDLE.pocketenv-orig) plus ours, and ours alone
 * for NODE_EXTRA_CA_CERTS. pe_sandbox_env points the usual variables at
 * them. Written as the sandbox starts, through the provider (RESOLVE_IN_ROOT). */
static void install_ca(pe_daemon *d, const char *id)
{
    cleanup_free char *pem = pe_egress_tls_ca_pem(id), *orig = NULL, *bundle = NULL;
    size_t len = 0;
    pe_err err;

    pe_err_clear(&err);
    if (pem == NULL) {
        pe_log_warn("sandbox %s: egress CA not made", id);
        return;
    }
    if (pe_provider_file_read(d->sx.local, id, PE_SANDBOX_CA_BUNDLE ".pocketenv-orig",
                              PE_SANDBOX_CA_BUNDLE_MAX, &orig, &len, &err) < 0) {
        free(orig);
        orig = NULL;
        len = 0;
        if (pe_provider_file_read(d->sx.local, id, PE_SANDBOX_CA_BUNDLE, PE_SANDBOX_CA_BUNDLE_MAX,
                                  &orig, &len, &err) < 0) {
            free(orig);
            orig = pe_xstrdup("");
            len = 0;
        }
        if (pe_provider_file_write(d->sx.local, id, PE_SANDBOX_CA_BUNDLE ".pocketenv-orig", orig,
                                   len, 0644, &err) < 0)
            goto fail;
    }
    bundle =
        pe_xasprintf("%.*s%s%s", (int)len, orig, len && orig[len - 1] != '\n' ? "\n" : "", pem);
    if (pe_provider_file_write(d->sx.local, id, PE_SANDBOX_CA_BUNDLE, bundle, strlen(bundle), 0644,
                               &err) < 0 ||
        pe_provider_file_write(d->sx.local, id, PE_SANDBOX_CA_FILE, pem, strlen(pem), 0644, &err) <
            0)
        goto fail;
    return;
fail:
    pe_log_warn("sandbox %s: egress CA not installed: %s", id, err.msg);
}

void pe_daemon_netpolicy_started(pe_daemon *d, const pe_store_sandbox *sb)
{
    json_t *policy = NULL;
    pe_err err;

    if (pe_runtime_egress_get(&d->rt, sb->id, &policy, &err) == 0 && policy != NULL) {
        if (json_array_size(json_object_get(policy, "secrets")) > 0 && !pe_sandbox_is_remote(sb))
            install_ca(d, sb->id);
        fwd_ensure(d, sb->id);
    }
    json_decref(policy);
}

/* ---- a policy before the runtime has the sandbox ----
 *
 * The runtime stores a sandbox's policy beside its state, which exists
 * only once the create's background half made it. Until then (a create's
 * networkPolicy, a put that came first) the policy waits in
 * DATA/netpolicy/<id>.json; pending_mu orders a put against the hand-over,
 * so none is lost between them. */

static pthread_mutex_t pending_mu = PTHREAD_MUTEX_INITIALIZER;

static char *pending_path(pe_daemon *d, const char *id)
{
    return pe_xasprintf("%s/netpolicy/%s.json", d->rt.data_dir, id);
}

static int pending_write(pe_daemon *d, const char *id, const json_t *policy, pe_err *err)
{
    cleanup_free char *dir = pe_xasprintf("%s/netpolicy", d->rt.data_dir);
    cleanup_free char *path = pending_path(d, id);
    cleanup_free char *text = NULL;

    if (policy == NULL) {
        if (unlink(path) < 0 && errno != ENOENT)
            return pe_err_sys(err, "remove %s", path);
        return 0;
    }
    text = json_dumps(policy, JSON_COMPACT);
    if (pe_fs_mkdir_p(dir, 0700, err) < 0)
        return -1;
    return pe_fs_write_atomic(path, text, strlen(text), 0600, err);
}

static json_t *pending_read(pe_daemon *d, const char *id)
{
    cleanup_free char *path = pending_path(d, id);
    cleanup_free char *text = NULL;
    json_t *o, *p;

    if (pe_fs_read_file(path, 256 * 1024, &text, NULL, NULL) < 0)
        return NULL;
    o = json_loads(text, 0, NULL);
    p = o ? pe_egress_policy_parse(o, NULL) : NULL;
    json_decref(o);
    return p;
}

json_t *pe_daemon_netpolicy_default(const char *base)
{
    json_t *raw = pe_template_egress_default(base);
    json_t *p = raw != NULL ? pe_egress_policy_parse(raw, NULL) : NULL;

    json_decref(raw);
    return p;
}

int pe_daemon_netpolicy_create_check(json_t *in, pe_err *err)
{
    json_t *v = json_object_get(in, "networkPolicy"), *p;

    /* None named: the template's default, if it has one (an explicit null
     * keeps the open network). */
    if (v == NULL &&
        (p = pe_daemon_netpolicy_default(json_string_value(json_object_get(in, "base")))) != NULL)
        json_object_set_new(in, "networkPolicy", v = p);
    if (v == NULL || json_is_null(v))
        return 0;
    p = pe_egress_policy_parse(v, err);
    if (p == NULL)
        return pe_err_prefix(err, "networkPolicy");
    json_object_set_new(in, "networkPolicy", p);
    return 0;
}

int pe_daemon_netpolicy_create_store(pe_daemon *d, const char *id, const json_t *in, pe_err *err)
{
    const json_t *p = json_object_get(in, "networkPolicy");
    int r;

    if (p == NULL || json_is_null(p))
        return 0;
    pthread_mutex_lock(&pending_mu);
    r = pending_write(d, id, p, err);
    pthread_mutex_unlock(&pending_mu);
    return r;
}

int pe_daemon_netpolicy_before_start(pe_daemon *d, const pe_store_sandbox *sb, pe_err *err)
{
    json_t *p;
    int r = 0;

    pthread_mutex_lock(&pending_mu);
    p = pending_read(d, sb->id);
    if (p != NULL && (r = pe_runtime_egress_put(&d->rt, sb->id, p, NULL, err)) == 0)
        r = pending_write(d, sb->id, NULL, err);
    pthread_mutex_unlock(&pending_mu);
    json_decref(p);
    return r < 0 ? pe_err_prefix(err, "network policy") : 0;
}

/* ---- what getNetworkPolicy and putNetworkPolicy do ---- */

int pe_daemon_netpolicy_get(pe_daemon *d, const char *id, json_t **policy, pe_err *err)
{
    *policy = NULL;
    /* Not made yet, or made and not started yet: the create's, if any. */
    pthread_mutex_lock(&pending_mu);
    if (pe_runtime_egress_get(&d->rt, id, policy, err) < 0 && err->code == PE_ENOENT)
        pe_err_clear(err);
    if (*policy == NULL && err->code == 0)
        *policy = pending_read(d, id);
    pthread_mutex_unlock(&pending_mu);
    return err->code != 0 ? -1 : 0;
}

int pe_daemon_netpolicy_put(pe_daemon *d, const pe_store_sandbox *sb, const json_t *policy,
                            pe_err *err)
{
    uint32_t addrs[LEARNED_MAX], ttls[LEARNED_MAX];
    pe_egress_addrs keep = {addrs, ttls, 0};

    pthread_mutex_lock(apply_mu(sb->id));
    if (policy != NULL)
        keep.n = kept_addrs(sb->id, policy, addrs, ttls);
    if (pe_runtime_egress_put(&d->rt, sb->id, policy, &keep, err) < 0 &&
        err->code == PE_ENOENT) { /* not made yet: handed over before it runs */
        pthread_mutex_lock(&pending_mu);
        pe_err_clear(err);
        if (pe_runtime_egress_put(&d->rt, sb->id, policy, NULL, err) < 0 &&
            err->code == PE_ENOENT) { /* still not: the hand-over is after this */
            pe_err_clear(err);
            pending_write(d, sb->id, policy, err);
        }
        pthread_mutex_unlock(&pending_mu);
    }
    pthread_mutex_unlock(apply_mu(sb->id));
    if (err->code != 0)
        return -1;
    pe_log_info("event=netpolicy sandbox=%s mode=%s", sb->id,
                policy ? json_string_value(json_object_get(policy, "mode")) : "default");
    /* newly bound secrets in a running sandbox: its trust store needs
     * the CA now (the placeholders come with its next exec) */
    if (policy != NULL && json_array_size(json_object_get(policy, "secrets")) > 0 &&
        sb->status == PE_STORE_RUNNING && !pe_sandbox_is_remote(sb))
        install_ca(d, sb->id);
    if (policy != NULL)
        fwd_ensure(d, sb->id);
    pe_daemon_egress_proxy_recheck(&d->rt, sb->id);
    return 0;
}
