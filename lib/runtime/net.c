/* Sandbox networking (--net nat): the address pool, leases, and the
 * per-sandbox setup and teardown around the bridge, the nft table
 * (net-nft.c) and rtnetlink (netlink.c). See docs/design/network.md.
 *
 * Leases are files in PE_NET_STATE_DIR (host-wide: every data directory
 * shares the one bridge, so the pool cannot be per data directory):
 *   ip-<a.b.c.d>   the address claim; JSON with the veth name, the setup
 *                  process (pid + start time) and the published ports.
 *                  Claimed with link(2) of a complete temporary file, so
 *                  the claim is race-free (EEXIST = taken) and a reader
 *                  never sees it half-written.
 *   port-<N>       a host port claim (O_EXCL), holding the veth name.
 *   lock           flock held while the table or the bridge changes, so
 *                  the last release cannot drop the table under an attach.
 * A lease is stale when its setup process is gone and its veth is gone:
 * the veth lives exactly as long as the sandbox's network namespace.
 *
 * Threading: every function is safe to call from any thread; none keeps
 * state between calls. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "runtime/internal.h"
#include "runtime/net.h"

#define LEASE_MAX (64 * 1024)
#define MAX_LEASES 4096

typedef struct net_pool {
    uint32_t net; /* host byte order */
    int prefix;
} net_pool;

const char *pe__net_ntoa(uint32_t addr, char *b)
{
    snprintf(b, 16, "%u.%u.%u.%u", addr >> 24, (addr >> 16) & 255, (addr >> 8) & 255, addr & 255);
    return b;
}

static uint32_t mask_of(int prefix)
{
    return prefix == 0 ? 0 : ~0u << (32 - prefix);
}

/* POCKETENV_NET_POOL=a.b.c.d/len (8..28), default PE_NET_DEFAULT_POOL. */
static int pool_get(net_pool *p, pe_err *err)
{
    const char *env = getenv("POCKETENV_NET_POOL");
    const char *s = env && *env ? env : PE_NET_DEFAULT_POOL;
    const char *slash = strchr(s, '/');
    char addr[16];
    struct in_addr in;
    char *end = NULL;
    unsigned long len;

    if (slash == NULL || (size_t)(slash - s) >= sizeof(addr))
        return pe_err_set(err, PE_EINVAL, 0, "network pool '%s': want a.b.c.d/len", s);
    memcpy(addr, s, (size_t)(slash - s));
    addr[slash - s] = '\0';
    errno = 0;
    len = strtoul(slash + 1, &end, 10);
    if (inet_pton(AF_INET, addr, &in) != 1 || errno || *end != '\0' || len < 8 || len > 28)
        return pe_err_set(err, PE_EINVAL, 0, "network pool '%s': want a.b.c.d/len, len 8-28", s);
    p->prefix = (int)len;
    p->net = ntohl(in.s_addr) & mask_of(p->prefix);
    return 0;
}

static char *state_path(const char *fmt, const char *name)
{
    return pe_xasprintf("%s/%s%s", PE_NET_STATE_DIR, fmt, name);
}

static char *ip_path(uint32_t addr)
{
    char a[16];
    return state_path("ip-", pe__net_ntoa(addr, a));
}

static char *port_path(unsigned port)
{
    char p[8];
    snprintf(p, sizeof(p), "%u", port);
    return state_path("port-", p);
}

/* ---- lease JSON ---- */

json_t *pe__net_lease_to_json(const pe_net_lease *l)
{
    json_t *ports = json_array();
    char a[16], g[16];

    for (size_t i = 0; i < l->n_ports; i++)
        json_array_append_new(ports, json_pack("{s:i, s:i}", "host", l->ports[i].host_port, "port",
                                               l->ports[i].port));
    return json_pack("{s:s, s:s, s:i, s:s, s:b, s:o}", "address", pe__net_ntoa(l->addr, a),
                     "gateway", pe__net_ntoa(l->gateway, g), "prefix", l->prefix, "veth", l->veth,
                     "allowHost", l->allow_host, "ports", ports);
}

static uint32_t addr_of(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    struct in_addr in;
    return s && inet_pton(AF_INET, s, &in) == 1 ? ntohl(in.s_addr) : 0;
}

void pe__net_lease_from_json(json_t *o, pe_net_lease *l)
{
    json_t *ports = json_object_get(o, "ports");
    const char *veth = json_string_value(json_object_get(o, "veth"));

    memset(l, 0, sizeof(*l));
    if (!json_is_object(o) || veth == NULL || strlen(veth) >= sizeof(l->veth))
        return;
    l->addr = addr_of(o, "address");
    l->gateway = addr_of(o, "gateway");
    l->prefix = (int)json_integer_value(json_object_get(o, "prefix"));
    memcpy(l->veth, veth, strlen(veth) + 1);
    l->allow_host = json_is_true(json_object_get(o, "allowHost"));
    for (size_t i = 0; json_is_array(ports) && i < json_array_size(ports); i++) {
        json_t *p = json_array_get(ports, i);
        if (l->n_ports == PE_NET_MAX_PORTS)
            break;
        l->ports[l->n_ports].host_port = (uint16_t)json_integer_value(json_object_get(p, "host"));
        l->ports[l->n_ports++].port = (uint16_t)json_integer_value(json_object_get(p, "port"));
    }
}

/* The lease file's content: the lease plus who set it up. */
static char *lease_text(const pe_net_lease *l, const char *data_dir, const char *key)
{
    json_t *o = json_pack("{s:o, s:s, s:s, s:i, s:I}", "lease", pe__net_lease_to_json(l), "data",
                          data_dir, "key", key, "setupPid", (int)getpid(), "setupStart",
                          (json_int_t)pe__proc_start_time(getpid()));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

static json_t *lease_file_load(const char *path)
{
    cleanup_free char *text = NULL;

    if (pe_fs_read_file(path, LEASE_MAX, &text, NULL, NULL) < 0)
        return NULL;
    return json_loads(text, 0, NULL);
}

/* ---- claims ---- */

static uint32_t random_u32(void)
{
    uint32_t v = 0;
    if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
        v = (uint32_t)getpid();
    return v;
}

/* Claim a free address: link(2) a complete temporary file to ip-<addr>. */
static int claim_addr(const net_pool *p, pe_net_lease *l, const char *data_dir, const char *key,
                      pe_err *err)
{
    uint32_t count = (1u << (32 - p->prefix)) - 3; /* minus net, gateway, broadcast */
    uint32_t start = random_u32() % count;
    char rnd[9] = {0};
    cleanup_free char *tmp = NULL;

    pe__random_hex(rnd, 4);
    tmp = state_path(".tmp-", rnd);
    l->gateway = p->net + 1;
    l->prefix = p->prefix;
    for (uint32_t i = 0; i < count; i++) {
        cleanup_free char *path = NULL;
        cleanup_free char *text = NULL;
        int r;

        l->addr = p->net + 2 + (start + i) % count;
        text = lease_text(l, data_dir, key);
        if (pe_fs_write_atomic(tmp, text, strlen(text), 0600, err) < 0)
            break;
        path = ip_path(l->addr);
        r = link(tmp, path);
        if (r == 0 || errno != EEXIST) {
            if (r < 0)
                pe_err_sys(err, "claim address %s", path);
            unlink(tmp);
            return r;
        }
    }
    unlink(tmp);
    l->addr = 0;
    return err && err->code ? -1 : pe_err_set(err, PE_ESYS, ENOSPC, "network pool is full");
}

/* A port is free for us if no host socket is bound to it and no sandbox
 * claimed it. */
static int claim_port(unsigned port, const char *veth, pe_err *err)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    cleanup_fd int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cleanup_free char *path = port_path(port);
    int one = 1;

    if (s < 0)
        return pe_err_sys(err, "socket");
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return pe_err_set(err, PE_EEXIST, errno, "host port %u", port);
    if (pe_fs_write_new(path, veth, strlen(veth), 0600, NULL) < 0)
        return pe_err_set(err, PE_EEXIST, 0, "host port %u is published by another sandbox", port);
    return 0;
}

static int claim_auto_port(const char *veth, uint16_t *out, pe_err *err)
{
    uint32_t start = random_u32();

    for (uint32_t i = 0; i < PE_NET_AUTO_PORT_COUNT; i++) {
        unsigned port = PE_NET_AUTO_PORT_FIRST + (start + i) % PE_NET_AUTO_PORT_COUNT;
        if (claim_port(port, veth, NULL) == 0) {
            *out = (uint16_t)port;
            return 0;
        }
    }
    return pe_err_set(err, PE_ESYS, EADDRINUSE, "no free host port to publish on");
}

static int claim_ports(const pe_sandbox_cfg *cfg, pe_net_lease *l, pe_err *err)
{
    if (cfg->n_ports > PE_NET_MAX_PORTS)
        return pe_err_set(err, PE_EINVAL, 0, "at most %d published ports", PE_NET_MAX_PORTS);
    for (size_t i = 0; i < cfg->n_ports; i++) {
        pe_port *p = &l->ports[l->n_ports];

        p->port = cfg->ports[i].port;
        p->host_port = cfg->ports[i].host_port;
        if (p->host_port != 0 && claim_port(p->host_port, l->veth, err) < 0)
            return -1;
        if (p->host_port == 0 && claim_auto_port(l->veth, &p->host_port, err) < 0)
            return -1;
        l->n_ports++;
    }
    return 0;
}

int pe__net_acquire(const pe_sandbox_cfg *cfg, const char *data_dir, const char *key,
                    pe_net_lease *l, pe_err *err)
{
    net_pool p = {0, 0};
    char rnd[5] = {0};
    cleanup_free char *text = NULL;
    cleanup_free char *path = NULL;

    memset(l, 0, sizeof(*l));
    if (pool_get(&p, err) < 0 || pe_fs_mkdir_p(PE_NET_STATE_DIR, 0700, err) < 0)
        return -1;
    pe__random_hex(rnd, 2);
    snprintf(l->veth, sizeof(l->veth), "pe-%.8s%s", key, rnd);
    l->allow_host = cfg->net_allow_host;
    if (claim_addr(&p, l, data_dir, key, err) < 0)
        return pe_err_prefix(err, "network");
    if (claim_ports(cfg, l, err) < 0)
        goto fail;
    /* Record the ports in the lease, so gc can release them. */
    text = lease_text(l, data_dir, key);
    path = ip_path(l->addr);
    if (pe_fs_write_atomic(path, text, strlen(text), 0600, err) < 0)
        goto fail;
    return 0;
fail:
    pe__net_release(l);
    return pe_err_prefix(err, "network");
}

/* ---- release ---- */

static bool lease_is(const char *path, const char *veth)
{
    json_t *o = lease_file_load(path);
    const char *v = json_string_value(json_object_get(json_object_get(o, "lease"), "veth"));
    bool same = v != NULL && strcmp(v, veth) == 0;

    json_decref(o);
    return same;
}

static void unlink_port_if_ours(unsigned port, const char *veth)
{
    cleanup_free char *path = port_path(port);
    cleanup_free char *text = NULL;

    if (pe_fs_read_file(path, 64, &text, NULL, NULL) == 0 && strcmp(text, veth) == 0)
        unlink(path);
}

static bool any_lease_left(void)
{
    DIR *d = opendir(PE_NET_STATE_DIR);
    struct dirent *de;
    bool found = false;

    while (d != NULL && !found && (de = readdir(d)) != NULL)
        found = strncmp(de->d_name, "ip-", 3) == 0;
    if (d != NULL)
        closedir(d);
    return found;
}

static int net_lock(void)
{
    cleanup_free char *path = state_path("lock", "");
    return pe__lock_file(path, LOCK_EX, NULL);
}

/* A flock belongs to the open file, which a child cloned meanwhile shares
 * until it execs. A sandbox's init, cloned by one daemon thread while
 * another held the lock, kept it held while it waited for its parent, and
 * its parent waited for the lock to attach the sandbox's network: every
 * create of the daemon hung. So threads take the lock under net_mu, and
 * the sandbox clone takes net_mu too (pe__fork_guard): no clone inherits
 * it. Single-threaded children (the detached grandchild) use net_lock. */
static pthread_mutex_t net_mu = PTHREAD_MUTEX_INITIALIZER;

static int net_lock_mt(void)
{
    int fd;

    pthread_mutex_lock(&net_mu);
    fd = net_lock();
    if (fd < 0)
        pthread_mutex_unlock(&net_mu);
    return fd;
}

static void net_unlock_mt(int *fd)
{
    if (*fd < 0)
        return;
    close(*fd);
    *fd = -1;
    pthread_mutex_unlock(&net_mu);
}

#define cleanup_net_lock __attribute__((cleanup(net_unlock_mt)))

void pe__fork_guard(bool take)
{
    if (take)
        pthread_mutex_lock(&net_mu);
    else
        pthread_mutex_unlock(&net_mu);
}

/* In a detached grandchild (fork twice, the middle one reaped now), run
 * work that waits on RCU. Returns true in the grandchild, whose stdio is
 * /dev/null and which holds no other fd: a caller's pipe must not stay
 * open (a test reading our output would wait for the reaper). */
static bool detached_child(void)
{
    pid_t pid = fork();

    if (pid == 0) {
        if (fork() != 0)
            _exit(0);
        int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        for (int i = 0; fd >= 0 && i < 3; i++)
            dup2(fd, i);
        close_range(3, ~0u, 0);
        return true;
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
    return false;
}

/* Deleting the table unregisters its hooks: two RCU grace periods that
 * no stop or run should wait for. A detached grandchild takes the lock,
 * checks again that no lease appeared meanwhile, and drops it. */
static void drop_table_later(void)
{
    if (detached_child()) {
        int lock = net_lock();
        if (lock >= 0 && !any_lease_left())
            pe__nft_drop_table();
        _exit(0);
    }
}

void pe__net_release(pe_net_lease *l)
{
    cleanup_free char *path = NULL;
    cleanup_net_lock int lock = -1;

    if (l->addr == 0)
        return;
    lock = net_lock_mt();
    path = ip_path(l->addr);
    /* gc may have released it already, and the address may be someone
     * else's now: touch nothing that is not ours. */
    if (lease_is(path, l->veth)) {
        pe__nft_detach(l);
        for (size_t i = 0; i < l->n_ports; i++)
            unlink_port_if_ours(l->ports[i].host_port, l->veth);
        unlink(path);
        if (!any_lease_left())
            drop_table_later();
    } else {
        /* Ports claimed before the lease recorded them (a failed acquire). */
        for (size_t i = 0; i < l->n_ports; i++)
            unlink_port_if_ours(l->ports[i].host_port, l->veth);
    }
    l->addr = 0;
}

/* ---- attach ---- */

static void sysctl_on(const char *path)
{
    cleanup_free char *v = NULL;
    pe_err err;

    if (pe_fs_read_file(path, 16, &v, NULL, NULL) == 0 && v[0] == '1')
        return;
    if (pe_fs_write_str(path, "1", &err) < 0)
        pe_log_warn("%s", err.msg);
}

/* The bridge and the table: host-wide, made on first use, under the lock. */
static int host_side(const pe_net_lease *l, pe_err *err)
{
    char net[16], pool[24];
    cleanup_net_lock int lock = net_lock_mt();

    if (lock < 0)
        return pe_err_sys(err, "lock %s", PE_NET_STATE_DIR);
    if (pe__nl_bridge_ensure(PE_NET_BRIDGE, htonl(l->gateway), l->prefix, err) < 0)
        return -1;
    /* Host settings NAT needs (README "Host settings"): forwarding, and
     * 127.0.0.1-sourced DNAT traffic allowed out of the bridge. */
    sysctl_on("/proc/sys/net/ipv4/ip_forward");
    sysctl_on("/proc/sys/net/ipv4/conf/" PE_NET_BRIDGE "/route_localnet");
    snprintf(pool, sizeof(pool), "%s/%d", pe__net_ntoa(l->addr & mask_of(l->prefix), net),
             l->prefix);
    return pe__nft_attach(l, pool, err);
}

int pe__net_attach(const pe_net_lease *l, pid_t pid, pe_err *err)
{
    char path[64];
    cleanup_fd int ns = -1;

    if (host_side(l, err) < 0)
        return pe_err_prefix(err, "network");
    snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
    ns = open(path, O_RDONLY | O_CLOEXEC);
    if (ns < 0)
        return pe_err_sys(err, "network: open %s", path);
    if (pe__nl_veth_add(l->veth, PE_NET_BRIDGE, "eth0", ns, err) < 0 ||
        pe__nl_port_isolate(l->veth, err) < 0)
        return pe_err_prefix(err, "network");
    return 0;
}

/* ---- gc ---- */

static bool owner_alive(json_t *o, const char *veth)
{
    pid_t pid = (pid_t)json_integer_value(json_object_get(o, "setupPid"));
    uint64_t start = (uint64_t)json_integer_value(json_object_get(o, "setupStart"));

    if (if_nametoindex(veth) > 0)
        return true;
    return pid > 0 && start != 0 && pe__proc_start_time(pid) == start;
}

/* Delete links no lease knows, in a detached grandchild: each deletion
 * waits for RCU (tens of ms) and no command should wait for that. */
static void reap_links(char (*names)[PE_NET_IFNAME_MAX], int n)
{
    if (n > 0 && detached_child()) {
        for (int i = 0; i < n; i++)
            pe__nl_link_del(names[i]);
        _exit(0);
    }
}

static bool is_our_veth(const char *name)
{
    if (strncmp(name, "pe-", 3) != 0 || strlen(name) != 15)
        return false;
    return strspn(name + 3, "0123456789abcdef") == 12;
}

void pe__net_gc(void)
{
    static char links[256][PE_NET_IFNAME_MAX], keep[MAX_LEASES][PE_NET_IFNAME_MAX];
    int nlinks, nkeep = 0, norphan = 0;
    DIR *d;
    struct dirent *de;

    if (access(PE_NET_STATE_DIR, F_OK) < 0)
        return;
    /* Links first: a veth is always made after its lease file, so a link
     * listed now and missing from the leases read next is an orphan. */
    nlinks = pe__nl_links_with_prefix("pe-", links, 256);
    d = opendir(PE_NET_STATE_DIR);
    while (d != NULL && (de = readdir(d)) != NULL) {
        cleanup_free char *path = NULL;
        pe_net_lease l;
        json_t *o;

        if (strncmp(de->d_name, "ip-", 3) != 0)
            continue;
        path = state_path("", de->d_name);
        o = lease_file_load(path);
        pe__net_lease_from_json(json_object_get(o, "lease"), &l);
        if (l.addr != 0 && owner_alive(o, l.veth) && nkeep < MAX_LEASES)
            memcpy(keep[nkeep++], l.veth, sizeof(l.veth));
        else if (l.addr != 0) {
            pe_log_info("releasing the address of a vanished sandbox (%s)", l.veth);
            pe__net_release(&l);
        }
        json_decref(o);
    }
    if (d != NULL)
        closedir(d);
    for (int i = 0; i < nlinks; i++) {
        bool known = false;
        for (int k = 0; k < nkeep && !known; k++)
            known = strcmp(links[i], keep[k]) == 0;
        if (!known && is_our_veth(links[i]))
            memcpy(links[norphan++], links[i], PE_NET_IFNAME_MAX);
    }
    reap_links(links, norphan);
}

/* ---- /etc files ---- */

/* Nameservers a sandbox can use: the host's, minus loopback ones (e.g.
 * systemd-resolved's 127.0.0.53, which lives in the host's namespace) and
 * IPv6 ones (sandboxes have IPv4 only). */
static void add_resolv_lines(const char *text, char *out, size_t cap, int *nservers)
{
    const char *line = text;

    while (line != NULL && *line != '\0') {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        size_t used = strlen(out);

        if (len > 11 && strncmp(line, "nameserver ", 11) == 0) {
            const char *v = line + 11;
            size_t vlen = len - 11;
            bool loop = strncmp(v, "127.", 4) == 0 || strncmp(v, "0.0.0.0", 7) == 0;
            if (!loop && memchr(v, ':', vlen) == NULL && used + len + 2 < cap) {
                snprintf(out + used, cap - used, "%.*s\n", (int)len, line);
                (*nservers)++;
            }
        } else if ((strncmp(line, "search ", 7) == 0 || strncmp(line, "options ", 8) == 0) &&
                   used + len + 2 < cap) {
            snprintf(out + used, cap - used, "%.*s\n", (int)len, line);
        }
        line = nl ? nl + 1 : NULL;
    }
}

static void resolv_conf(char *out, size_t cap)
{
    /* systemd-resolved keeps the real upstream servers here. */
    static const char *const sources[] = {"/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"};
    int n = 0;

    snprintf(out, cap, "# Generated by pocketenv from the host's resolver configuration.\n");
    for (size_t i = 0; i < PE_ARRAY_LEN(sources) && n == 0; i++) {
        cleanup_free char *text = NULL;
        size_t keep = strlen(out);
        if (pe_fs_read_file(sources[i], LEASE_MAX, &text, NULL, NULL) < 0)
            continue;
        add_resolv_lines(text, out, cap, &n);
        if (n == 0)
            out[keep] = '\0';
    }
    if (n == 0)
        snprintf(out + strlen(out), cap - strlen(out),
                 "# The host has no nameserver a sandbox can reach (only loopback ones),\n"
                 "# so none is set: mount your own with -v FILE:/etc/resolv.conf:ro.\n");
}

int pe__net_write_etc(const char *resolv, const char *hosts, const char *hostname,
                      const pe_net_lease *l, pe_err *err)
{
    char text[4096], a[16];
    int n;

    /* made again at every start: no fsync */
    resolv_conf(text, sizeof(text));
    if (pe_fs_write_replace(resolv, text, strlen(text), 0644, err) < 0)
        return -1;
    n = snprintf(text, sizeof(text),
                 "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n",
                 pe__net_ntoa(l->addr, a), hostname);
    return pe_fs_write_replace(hosts, text, (size_t)n, 0644, err);
}
