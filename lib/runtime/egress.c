/* Egress policy (include/pocketenv/egress.h): its checks, its storage
 * (DATA/sandboxes/<name>/egress.json) and its nftables table, `table inet
 * pe_egress`, which lives in the sandbox's own network namespace.
 *
 * Why in the sandbox's namespace and not in the host's `inet pocketenv`:
 * there every packet is its sandbox's (no source address to trust: a
 * sandbox keeps CAP_NET_RAW), and the sandbox cannot change the table (it
 * has no CAP_NET_ADMIN over its namespace). The parent writes it between
 * clone and GO, so no instruction of the sandbox runs unfiltered.
 *
 * A changed policy cuts existing connections to what it no longer allows
 * at their next packet (table_script says how). The sets:
 *   dns4    addresses the daemon's resolver saw for allowed names, each
 *           with its TTL as timeout
 *   keep4   after a change: the addresses of names still allowed
 *   allow4  allowCidrs; deny4 denyCidrs (checked first); ports
 * Every DNS query (udp/tcp 53, to any address) is redirected to
 * 127.0.0.1:53 of the namespace, where the daemon listens (a socket it
 * made in there); IPv6 is dropped (sandboxes have IPv4 only).
 *
 * A policy change rebuilds the table in one transaction; dns4 gets back,
 * in the same transaction, only the addresses (the caller says which) of
 * names the new policy still allows. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/util.h"
#include "pocketenv/egress.h"
#include "runtime/internal.h"
#include "runtime/net.h"

#define POLICY_FILE "egress.json"
#define POLICY_MAX (256 * 1024)
#define DOMAIN_MAX 253

/* ---- checks ---- */

static int check_domain(const char *s, char *out, pe_err *err)
{
    size_t n = strlen(s), label = 0;
    const char *p = s;

    if (strncmp(p, "*.", 2) == 0)
        p += 2;
    if (n == 0 || n > DOMAIN_MAX || *p == '\0')
        return pe_err_set(err, PE_EINVAL, 0, "domain '%.80s': want a name or *.name", s);
    for (; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (c == '.') {
            if (label == 0 || p[1] == '\0')
                return pe_err_set(err, PE_EINVAL, 0, "domain '%.80s' has an empty label", s);
            label = 0;
            continue;
        }
        if (!ok)
            return pe_err_set(err, PE_EINVAL, 0,
                              "domain '%.80s': only letters, digits, '-', '_' and dots "
                              "(a wildcard only as a leading '*.')",
                              s);
        if (++label > 63)
            return pe_err_set(err, PE_EINVAL, 0, "domain '%.80s' has a label over 63 bytes", s);
    }
    for (size_t i = 0; i <= n; i++)
        out[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] - 'A' + 'a' : s[i]);
    return 0;
}

/* "a.b.c.d" or "a.b.c.d/len" -> network and prefix (host order). */
static int parse_cidr(const char *s, uint32_t *net, int *prefix, pe_err *err)
{
    char a[16];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    struct in_addr in;
    long len = 32;

    if (strchr(s, ':') != NULL)
        return pe_err_set(err, PE_EINVAL, 0,
                          "CIDR '%.60s': IPv6 is always dropped in sandboxes (IPv4 only)", s);
    if (alen >= sizeof(a))
        return pe_err_set(err, PE_EINVAL, 0, "CIDR '%.60s': want a.b.c.d/len", s);
    memcpy(a, s, alen);
    a[alen] = '\0';
    if (slash) {
        char *end = NULL;
        errno = 0;
        len = strtol(slash + 1, &end, 10);
        if (errno || end == slash + 1 || *end || len < 0 || len > 32)
            return pe_err_set(err, PE_EINVAL, 0, "CIDR '%.60s': length must be 0-32", s);
    }
    if (inet_pton(AF_INET, a, &in) != 1)
        return pe_err_set(err, PE_EINVAL, 0, "CIDR '%.60s': want a.b.c.d/len", s);
    *prefix = (int)len;
    *net = ntohl(in.s_addr) & (len == 0 ? 0 : ~0u << (32 - len));
    return 0;
}

static json_t *string_list(const json_t *in, const char *key, bool cidr, pe_err *err)
{
    const json_t *a = json_object_get(in, key), *v;
    json_t *out = json_array();
    size_t i;

    if (a == NULL || json_is_null(a))
        return out;
    if (!json_is_array(a) || json_array_size(a) > PE_EGRESS_MAX_ENTRIES) {
        json_decref(out);
        pe_err_set(err, PE_EINVAL, 0, "%s must be an array of at most %d strings", key,
                   PE_EGRESS_MAX_ENTRIES);
        return NULL;
    }
    json_array_foreach(a, i, v)
    {
        char buf[DOMAIN_MAX + 1], an[16];
        uint32_t net;
        int prefix;

        if (!json_is_string(v) || json_string_length(v) > DOMAIN_MAX ||
            strlen(json_string_value(v)) != json_string_length(v)) {
            json_decref(out);
            pe_err_set(err, PE_EINVAL, 0, "%s[%zu] must be a string of at most %d bytes", key, i,
                       DOMAIN_MAX);
            return NULL;
        }
        if (cidr ? parse_cidr(json_string_value(v), &net, &prefix, err)
                 : check_domain(json_string_value(v), buf, err)) {
            json_decref(out);
            pe_err_prefix(err, "%s[%zu]", key, i);
            return NULL;
        }
        if (cidr)
            json_array_append_new(out, json_sprintf("%s/%d", pe__net_ntoa(net, an), prefix));
        else
            json_array_append_new(out, json_string(buf));
    }
    return out;
}

static bool env_name_ok(const char *s)
{
    if (s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

/* "secrets": [{"name": "API_KEY", "hosts": ["api.example.org", ...]}]:
 * the sandbox's secrets of those names are egress-only, bound to those
 * hosts (an empty list: to none, so never substituted). */
static int secret_bindings(const json_t *in, json_t *out, pe_err *err)
{
    const json_t *a = json_object_get(in, "secrets"), *v;
    json_t *list;
    size_t i;

    /* absent when empty: a policy without secrets reads as before */
    if (a == NULL || json_is_null(a) || (json_is_array(a) && json_array_size(a) == 0))
        return 0;
    list = json_array();
    json_object_set_new(out, "secrets", list);
    if (!json_is_array(a) || json_array_size(a) > PE_EGRESS_MAX_SECRETS)
        return pe_err_set(err, PE_EINVAL, 0, "secrets must be an array of at most %d bindings",
                          PE_EGRESS_MAX_SECRETS);
    json_array_foreach(a, i, v)
    {
        const json_t *name = json_object_get(v, "name"), *hosts;
        const char *key;
        json_t *x, *h;

        if (!json_is_object(v))
            return pe_err_set(err, PE_EINVAL, 0, "secrets[%zu] must be an object", i);
        json_object_foreach((json_t *)v, key, x)
        {
            if (strcmp(key, "name") != 0 && strcmp(key, "hosts") != 0)
                return pe_err_set(err, PE_EINVAL, 0, "secrets[%zu]: unknown field '%.40s'", i, key);
        }
        if (!json_is_string(name) || json_string_length(name) > 128 ||
            strlen(json_string_value(name)) != json_string_length(name) ||
            !env_name_ok(json_string_value(name)))
            return pe_err_set(err, PE_EINVAL, 0,
                              "secrets[%zu].name must be a variable name (letters, digits, '_')",
                              i);
        hosts = json_object_get(v, "hosts");
        if (hosts != NULL && json_array_size(hosts) > PE_EGRESS_MAX_SECRET_HOSTS)
            return pe_err_set(err, PE_EINVAL, 0, "secrets[%zu].hosts: at most %d", i,
                              PE_EGRESS_MAX_SECRET_HOSTS);
        h = string_list(v, "hosts", false, err);
        if (h == NULL)
            return pe_err_prefix(err, "secrets[%zu]", i);
        json_array_append_new(list,
                              json_pack("{s:s, s:o}", "name", json_string_value(name), "hosts", h));
    }
    return 0;
}

json_t *pe_egress_policy_parse(const json_t *in, pe_err *err)
{
    static const char *const keys[] = {"mode",           "allowDomains", "denyDomains",
                                       "allowCidrs",     "denyCidrs",    "ports",
                                       "maxConnections", "maxRateKBps",  "secrets"};
    static const char *const lists[] = {"allowDomains", "denyDomains", "allowCidrs", "denyCidrs"};
    /* limits: absent = none */
    static const struct {
        const char *key;
        json_int_t max;
    } limits[] = {{"maxConnections", 65535}, {"maxRateKBps", 10 * 1000 * 1000}};
    const char *mode = json_string_value(json_object_get(in, "mode"));
    const json_t *ports = json_object_get(in, "ports"), *v;
    const char *key;
    json_t *out, *p;
    size_t i;

    if (!json_is_object(in))
        return pe_err_set(err, PE_EINVAL, 0, "a policy must be an object"), NULL;
    json_object_foreach((json_t *)in, key, v)
    {
        bool known = false;
        for (i = 0; i < PE_ARRAY_LEN(keys) && !known; i++)
            known = strcmp(key, keys[i]) == 0;
        if (!known)
            return pe_err_set(err, PE_EINVAL, 0, "unknown policy field '%.40s'", key), NULL;
    }
    if (mode == NULL ||
        (strcmp(mode, "none") != 0 && strcmp(mode, "allowlist") != 0 && strcmp(mode, "open") != 0))
        return pe_err_set(err, PE_EINVAL, 0, "mode must be \"none\", \"allowlist\" or \"open\""),
               NULL;
    out = json_pack("{s:s}", "mode", mode);
    for (i = 0; i < PE_ARRAY_LEN(lists); i++) {
        json_t *l = string_list(in, lists[i], i >= 2, err);
        if (l == NULL) {
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, lists[i], l);
    }
    p = json_array();
    json_object_set_new(out, "ports", p);
    if (ports != NULL && !json_is_null(ports)) {
        if (!json_is_array(ports) || json_array_size(ports) > PE_EGRESS_MAX_ENTRIES) {
            json_decref(out);
            return pe_err_set(err, PE_EINVAL, 0, "ports must be an array of at most %d ports",
                              PE_EGRESS_MAX_ENTRIES),
                   NULL;
        }
        json_array_foreach(ports, i, v)
        {
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535) {
                json_decref(out);
                return pe_err_set(err, PE_EINVAL, 0, "ports[%zu] must be an integer 1-65535", i),
                       NULL;
            }
            json_array_append_new(p, json_integer(json_integer_value(v)));
        }
    }
    for (i = 0; i < PE_ARRAY_LEN(limits); i++) {
        v = json_object_get(in, limits[i].key);
        if (v == NULL || json_is_null(v))
            continue;
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > limits[i].max) {
            json_decref(out);
            return pe_err_set(err, PE_EINVAL, 0, "%s must be an integer 1-%lld", limits[i].key,
                              (long long)limits[i].max),
                   NULL;
        }
        json_object_set_new(out, limits[i].key, json_integer(json_integer_value(v)));
    }
    if (secret_bindings(in, out, err) < 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static bool domain_matches(const char *pattern, const char *name)
{
    size_t pn, nn = strlen(name);

    if (strncmp(pattern, "*.", 2) != 0)
        return strcasecmp(pattern, name) == 0;
    /* *.example.org: strict subdomains, not example.org itself */
    pn = strlen(pattern + 1); /* ".example.org" */
    return nn > pn && strcasecmp(name + nn - pn, pattern + 1) == 0;
}

static bool any_match(const json_t *list, const char *name)
{
    const json_t *v;
    size_t i;

    json_array_foreach(list, i, v) if (domain_matches(json_string_value(v), name)) return true;
    return false;
}

bool pe_egress_name_allowed(const json_t *policy, const char *name)
{
    const char *mode = json_string_value(json_object_get(policy, "mode"));

    if (mode == NULL || strcmp(mode, "none") == 0)
        return false;
    if (any_match(json_object_get(policy, "denyDomains"), name))
        return false;
    if (strcmp(mode, "open") == 0)
        return true;
    return any_match(json_object_get(policy, "allowDomains"), name);
}

static bool in_cidrs(const json_t *list, uint32_t addr)
{
    const json_t *v;
    size_t i;

    json_array_foreach(list, i, v)
    {
        uint32_t net;
        int prefix;
        if (parse_cidr(json_string_value(v), &net, &prefix, NULL) == 0 &&
            (addr & (prefix == 0 ? 0 : ~0u << (32 - prefix))) == net)
            return true;
    }
    return false;
}

bool pe_egress_addr_denied(const json_t *policy, uint32_t addr)
{
    return in_cidrs(json_object_get(policy, "denyCidrs"), addr);
}

bool pe_egress_addr_allowed(const json_t *policy, uint32_t addr)
{
    return in_cidrs(json_object_get(policy, "allowCidrs"), addr);
}

const json_t *pe_egress_secret_hosts(const json_t *policy, const char *secret)
{
    const json_t *v;
    size_t i;

    json_array_foreach(json_object_get(policy, "secrets"), i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "name")), secret) == 0)
            return json_object_get(v, "hosts");
    }
    return NULL;
}

bool pe_egress_secret_bound(const json_t *policy, const char *secret, const char *host)
{
    const json_t *hosts = pe_egress_secret_hosts(policy, secret);

    return hosts != NULL && host[0] != '\0' && any_match(hosts, host);
}

bool pe_egress_host_bound(const json_t *policy, const char *host)
{
    const json_t *v;
    size_t i;

    json_array_foreach(json_object_get(policy, "secrets"), i, v)
    {
        if (host[0] != '\0' && any_match(json_object_get(v, "hosts"), host))
            return true;
    }
    return false;
}

bool pe_egress_name_denied(const json_t *policy, const char *name)
{
    return any_match(json_object_get(policy, "denyDomains"), name);
}

bool pe_egress_port_allowed(const json_t *policy, unsigned port)
{
    const json_t *ports = json_object_get(policy, "ports"), *v;
    size_t i;

    if (json_array_size(ports) == 0)
        return true;
    json_array_foreach(ports, i, v) if (json_integer_value(v) == (json_int_t)port) return true;
    return false;
}

bool pe_egress_port_proxied(const json_t *policy, unsigned port)
{
    const char *mode = json_string_value(json_object_get(policy, "mode"));
    const json_t *v;
    size_t i;

    if (mode == NULL || strcmp(mode, "none") == 0)
        return false;
    if (port == 80 || port == 443)
        return true;
    json_array_foreach(json_object_get(policy, "ports"), i,
                       v) if (json_integer_value(v) == (json_int_t)port) return true;
    return false;
}

/* ---- the table ---- */

#define T "inet pe_egress"

static void put_set(FILE *f, const char *name, const char *type, const json_t *list, bool num)
{
    const json_t *v;
    size_t i;

    fprintf(f, "add set " T " %s { type %s; %s}\n", name, type,
            strcmp(type, "ipv4_addr") == 0 ? "flags interval; auto-merge; " : "");
    if (json_array_size(list) == 0)
        return;
    fprintf(f, "add element " T " %s { ", name);
    json_array_foreach(list, i, v)
    {
        if (num)
            fprintf(f, "%s%lld", i ? ", " : "", (long long)json_integer_value(v));
        else
            fprintf(f, "%s%s", i ? ", " : "", json_string_value(v));
    }
    fprintf(f, " }\n");
}

static uint32_t new_generation(void)
{
    uint32_t g = 0;

    while (g == 0 || g == PE_EGRESS_PROXY_MARK)
        if (getrandom(&g, sizeof(g), 0) != (ssize_t)sizeof(g))
            g = (uint32_t)getpid() ^ (uint32_t)time(NULL);
    return g;
}

/* The whole table for policy, replacing any earlier one in one
 * transaction (the add before the delete makes the delete always valid:
 * nftables 1.0.6 has no `destroy`).
 *
 * A connection the table lets through is marked with the table's
 * generation (ct mark, which the sandbox cannot set), and its later
 * packets pass on that mark alone: a connection outlives its name's TTL.
 * A new table has a new generation, so after a change every connection is
 * judged again on its next packet, and only those to what the new policy
 * allows are marked again; the others are cut there (packets out
 * rejected, in dropped), with no conntrack entry to find and delete.
 * keep: resolved addresses of names the new policy still allows; those
 * with a TTL left go back to dns4 (new connections), all to keep4, which
 * only lets established connections be marked again. */
static char *table_script(const json_t *policy, const pe_egress_addrs *keep)
{
    const char *mode = json_string_value(json_object_get(policy, "mode"));
    bool ports = json_array_size(json_object_get(policy, "ports")) > 0;
    bool allowlist = strcmp(mode, "allowlist") == 0, open = strcmp(mode, "open") == 0;
    const char *dport = ports ? "meta l4proto { tcp, udp } th dport @ports " : "";
    const char *sport = ports ? "meta l4proto { tcp, udp } th sport @ports " : "";
    const char *est = "ct state established,related";
    long long max_conns = json_integer_value(json_object_get(policy, "maxConnections"));
    long long rate = json_integer_value(json_object_get(policy, "maxRateKBps"));
    uint32_t gen = new_generation();
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (f == NULL)
        abort();
    fprintf(f, "define GEN = 0x%08x\ndefine PMARK = 0x%08x\n", gen, PE_EGRESS_PROXY_MARK);
    fprintf(f, "add table " T "\ndelete table " T "\nadd table " T "\n");
    fprintf(f, "add set " T " dns4 { type ipv4_addr; flags timeout; }\n");
    fprintf(f, "add set " T " keep4 { type ipv4_addr; }\n");
    for (size_t i = 0; keep && i < keep->n; i++) {
        char a[16];
        pe__net_ntoa(keep->addrs[i], a);
        fprintf(f, "add element " T " keep4 { %s }\n", a);
        if (keep->ttls[i] > 0)
            fprintf(f, "add element " T " dns4 { %s timeout %us }\n", a, keep->ttls[i]);
    }
    put_set(f, "allow4", "ipv4_addr", json_object_get(policy, "allowCidrs"), false);
    put_set(f, "deny4", "ipv4_addr", json_object_get(policy, "denyCidrs"), false);
    put_set(f, "ports", "inet_service", json_object_get(policy, "ports"), true);
    fprintf(f, "add set " T " proxied { type inet_service; }\n"
               "add element " T " proxied { 80, 443 }\n");
    put_set(f, "proxied", "inet_service", json_object_get(policy, "ports"), true);
    /* DNS: every query goes to the daemon's socket, whatever its address. */
    fprintf(f, "add chain " T " dns { type nat hook output priority -100; policy accept; }\n"
               "add rule " T " dns meta nfproto ipv4 udp dport 53 redirect to :53\n"
               "add rule " T " dns meta nfproto ipv4 tcp dport 53 redirect to :53\n");
    /* HTTP, TLS and the policy's ports: to the daemon's proxy, which checks
     * the name the client sends (Host, SNI) and connects for it (with its
     * mark: not sent back here). */
    if (allowlist || open)
        fprintf(f,
                "add rule " T " dns meta nfproto ipv4 meta mark != $PMARK ip daddr != 127.0.0.0/8 "
                "tcp dport @proxied redirect to :%d\n",
                PE_EGRESS_PROXY_PORT);
    /* Refused at once, so that clients fail fast (and cut connections end). */
    /* New connections refused here, and IPv6, are also copied (a header's
     * worth, at most 20 a second) to the daemon's NFLOG socket in this
     * namespace, for the owner's denial log. */
    fprintf(f,
            "add chain " T " refuse\n"
            "add rule " T " refuse ct state new limit rate 20/second burst 20 packets log group %d "
            "snaplen 64\n",
            PE_EGRESS_LOG_GROUP);
    fprintf(f, "add rule " T " refuse meta l4proto tcp reject with tcp reset\n"
               "add rule " T " refuse reject with icmp type admin-prohibited\n");
    fprintf(f,
            "add chain " T " out { type filter hook output priority 0; policy drop; }\n"
            "add rule " T " out ip daddr 127.0.0.0/8 accept\n"
            "add rule " T " out ip6 daddr ::1 accept\n"
            "add rule " T " out meta nfproto ipv6 ct state new limit rate 20/second "
            "burst 20 packets log group %d snaplen 64\n"
            "add rule " T " out meta nfproto ipv6 drop\n",
            PE_EGRESS_LOG_GROUP);
    /* Limits, before anything is accepted: the proxy's connections out
     * (made in this namespace) count and are slowed like the sandbox's. */
    if (max_conns > 0)
        fprintf(f, "add rule " T " out ct state new ct count over %lld jump refuse\n", max_conns);
    if (rate > 0)
        fprintf(f, "add rule " T " out limit rate over %lld kbytes/second burst %lld kbytes drop\n",
                rate, rate);
    fprintf(f, "add rule " T " out ip daddr @deny4 jump refuse\n"
               /* the proxy's connections (it checked them; it cuts them on a change) */
               "add rule " T " out meta mark $PMARK ct mark set $PMARK accept\n"
               "add rule " T " out ct mark $GEN accept\n"
               /* answers on connections made to the sandbox (published ports) */
               "add rule " T " out ct direction reply accept\n");
    if (allowlist || open)
        fprintf(f, "add rule " T " out %s ip daddr @keep4 %sct mark set $GEN accept\n", est, dport);
    if (allowlist)
        fprintf(f,
                "add rule " T " out ip daddr @allow4 %sct mark set $GEN accept\n"
                "add rule " T " out ip daddr @dns4 %sct mark set $GEN accept\n",
                dport, dport);
    if (open)
        fprintf(f, "add rule " T " out ct mark set $GEN accept\n");
    fprintf(f, "add rule " T " out jump refuse\n");
    /* Inbound: loopback, connections made to the sandbox, packets of
     * connections marked under this table, and of those made under the
     * last one to what this one allows. */
    fprintf(f, "add chain " T " in { type filter hook input priority 0; policy drop; }\n"
               "add rule " T " in iif lo accept\n"
               "add rule " T " in meta nfproto ipv6 drop\n");
    if (rate > 0)
        fprintf(f, "add rule " T " in limit rate over %lld kbytes/second burst %lld kbytes drop\n",
                rate, rate);
    fprintf(f, "add rule " T " in ip saddr @deny4 drop\n"
               "add rule " T " in ct mark $PMARK accept\n"
               "add rule " T " in ct mark $GEN accept\n"
               "add rule " T " in ct direction original accept\n");
    if (allowlist || open)
        fprintf(f, "add rule " T " in %s ip saddr @keep4 %sct mark set $GEN accept\n", est, sport);
    if (allowlist)
        fprintf(f,
                "add rule " T " in %s ip saddr @allow4 %sct mark set $GEN accept\n"
                "add rule " T " in %s ip saddr @dns4 %sct mark set $GEN accept\n",
                est, sport, est, sport);
    if (open)
        fprintf(f, "add rule " T " in %s ct mark set $GEN accept\n", est);
    fclose(f);
    return text;
}

/* ---- work inside a network namespace ---- */

typedef struct ns_job {
    int netns;
    int (*fn)(struct ns_job *j);
    const char *script;
    int type; /* dns_socket's SOCK_DGRAM or SOCK_STREAM */
    int fd;   /* and its result */
    pe_err err;
} ns_job;

static void *ns_thread(void *arg)
{
    ns_job *j = arg;

    /* setns(CLONE_NEWNET) moves this thread only; it ends right after. */
    if (setns(j->netns, CLONE_NEWNET) < 0) {
        pe_err_sys(&j->err, "enter the sandbox's network namespace");
        return (void *)-1L;
    }
    return j->fn(j) < 0 ? (void *)-1L : NULL;
}

static int in_netns(ns_job *j, pe_err *err)
{
    pthread_t t;
    void *ret = NULL;
    int r;

    pe_err_clear(&j->err);
    r = pthread_create(&t, NULL, ns_thread, j);
    if (r != 0)
        return pe_err_set(err, PE_ESYS, r, "thread for the sandbox's network namespace");
    pthread_join(t, &ret);
    if (ret != NULL) {
        if (err)
            *err = j->err;
        return -1;
    }
    return 0;
}

static int run_script(ns_job *j)
{
    return pe__nft_run(j->script, &j->err);
}

static int apply_script(int netns, const char *script, pe_err *err)
{
    ns_job j = {.netns = netns, .fn = run_script, .script = script, .fd = -1};
    return in_netns(&j, err);
}

static int make_dns_socket(ns_job *j)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons(53), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1, fd = socket(AF_INET, j->type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0)
        return pe_err_sys(&j->err, "socket");
    if (j->type == SOCK_STREAM)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        (j->type == SOCK_STREAM && listen(fd, 16) < 0)) {
        close(fd);
        return pe_err_sys(&j->err, "bind %s 127.0.0.1:53 in the sandbox",
                          j->type == SOCK_STREAM ? "tcp" : "udp");
    }
    j->fd = fd;
    return 0;
}

static int make_proxy_socket(ns_job *j)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(PE_EGRESS_PROXY_PORT),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0)
        return pe_err_sys(&j->err, "socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
        close(fd);
        return pe_err_sys(&j->err, "bind tcp 127.0.0.1:%d in the sandbox", PE_EGRESS_PROXY_PORT);
    }
    j->fd = fd;
    return 0;
}

static int make_out_socket(ns_job *j)
{
    unsigned mark = PE_EGRESS_PROXY_MARK;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0)
        return pe_err_sys(&j->err, "socket");
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0) {
        close(fd);
        return pe_err_sys(&j->err, "mark the proxy's socket");
    }
    j->fd = fd;
    return 0;
}

int pe_egress_proxy_socket(int netns, pe_err *err)
{
    ns_job j = {.netns = netns, .fn = make_proxy_socket, .fd = -1};
    return in_netns(&j, err) < 0 ? -1 : j.fd;
}

int pe_egress_out_socket(int netns, pe_err *err)
{
    ns_job j = {.netns = netns, .fn = make_out_socket, .fd = -1};
    return in_netns(&j, err) < 0 ? -1 : j.fd;
}

/* Bind the NFLOG group and ask for packets (a header's worth). */
static int nflog_config(int fd, const struct nfulnl_msg_config_cmd *cmd,
                        const struct nfulnl_msg_config_mode *mode)
{
    char buf[256], ack[256];
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    struct nfgenmsg *g;
    ssize_t n;

    nlh->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
    g->nfgen_family = AF_UNSPEC;
    g->version = NFNETLINK_V0;
    g->res_id = htons(PE_EGRESS_LOG_GROUP);
    if (cmd)
        mnl_attr_put(nlh, NFULA_CFG_CMD, sizeof(*cmd), cmd);
    if (mode)
        mnl_attr_put(nlh, NFULA_CFG_MODE, sizeof(*mode), mode);
    if (send(fd, nlh, nlh->nlmsg_len, 0) < 0)
        return -1;
    n = recv(fd, ack, sizeof(ack), 0);
    if (n < (ssize_t)sizeof(struct nlmsghdr))
        return -1;
    nlh = (struct nlmsghdr *)ack;
    if (nlh->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
        if (e->error != 0) {
            errno = -e->error;
            return -1;
        }
    }
    return 0;
}

static int make_nflog_socket(ns_job *j)
{
    struct nfulnl_msg_config_cmd bind = {.command = NFULNL_CFG_CMD_BIND};
    struct nfulnl_msg_config_mode mode = {.copy_range = htonl(64), .copy_mode = NFULNL_COPY_PACKET};
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);

    if (fd < 0)
        return pe_err_sys(&j->err, "netfilter netlink socket");
    if (nflog_config(fd, &bind, NULL) < 0 || nflog_config(fd, NULL, &mode) < 0) {
        close(fd);
        return pe_err_sys(&j->err, "bind NFLOG group %d in the sandbox", PE_EGRESS_LOG_GROUP);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    j->fd = fd;
    return 0;
}

int pe_egress_nflog_socket(int netns, pe_err *err)
{
    ns_job j = {.netns = netns, .fn = make_nflog_socket, .fd = -1};
    return in_netns(&j, err) < 0 ? -1 : j.fd;
}

typedef struct nflog_cb {
    pe_egress_refusal *out;
    size_t cap, n;
} nflog_cb;

static int nflog_attr(const struct nlattr *a, void *data)
{
    const struct nlattr **tb = data;

    if (mnl_attr_get_type(a) <= NFULA_MAX)
        tb[mnl_attr_get_type(a)] = a;
    return MNL_CB_OK;
}

static int nflog_msg(const struct nlmsghdr *nlh, void *data)
{
    const struct nlattr *tb[NFULA_MAX + 1] = {0};
    nflog_cb *cb = data;
    const uint8_t *p;
    size_t len;
    pe_egress_refusal r = {0};

    if ((nlh->nlmsg_type & 0xff) != NFULNL_MSG_PACKET || cb->n >= cb->cap)
        return MNL_CB_OK;
    mnl_attr_parse(nlh, sizeof(struct nfgenmsg), nflog_attr, tb);
    if (tb[NFULA_PAYLOAD] == NULL)
        return MNL_CB_OK;
    p = mnl_attr_get_payload(tb[NFULA_PAYLOAD]);
    len = mnl_attr_get_payload_len(tb[NFULA_PAYLOAD]);
    if (len >= 20 && (p[0] >> 4) == 4) {
        size_t ihl = (size_t)(p[0] & 0x0f) * 4;
        r.addr = (uint32_t)p[16] << 24 | (uint32_t)p[17] << 16 | (uint32_t)p[18] << 8 | p[19];
        r.proto = p[9];
        if ((r.proto == IPPROTO_TCP || r.proto == IPPROTO_UDP) && len >= ihl + 4)
            r.port = (unsigned)p[ihl + 2] << 8 | p[ihl + 3];
    } else if (len >= 40 && (p[0] >> 4) == 6) {
        r.ipv6 = true;
        r.proto = p[6];
        if ((r.proto == IPPROTO_TCP || r.proto == IPPROTO_UDP) && len >= 44)
            r.port = (unsigned)p[42] << 8 | p[43];
    } else {
        return MNL_CB_OK;
    }
    cb->out[cb->n++] = r;
    return MNL_CB_OK;
}

size_t pe_egress_nflog_read(int fd, pe_egress_refusal *out, size_t cap)
{
    char buf[8192];
    nflog_cb cb = {.out = out, .cap = cap};
    ssize_t n;

    while (cb.n < cap && (n = recv(fd, buf, sizeof(buf), 0)) > 0)
        mnl_cb_run(buf, (size_t)n, 0, 0, nflog_msg, &cb);
    return cb.n;
}

int pe_egress_dns_socket(int netns, int type, pe_err *err)
{
    ns_job j = {.netns = netns, .fn = make_dns_socket, .fd = -1, .type = type};
    return in_netns(&j, err) < 0 ? -1 : j.fd;
}

int pe_egress_allow_addrs(int netns, const uint32_t *addrs, const uint32_t *ttls, size_t n,
                          pe_err *err)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f;
    int r;

    if (n == 0)
        return 0;
    f = open_memstream(&text, &len);
    if (f == NULL)
        abort();
    /* An element's timeout cannot be raised in place: re-add it. The add
     * before the delete makes the delete valid if it was not there. */
    for (int pass = 0; pass < 3; pass++)
        for (size_t i = 0; i < n; i++) {
            char a[16];
            uint32_t ttl = ttls[i] < 1 ? 1 : ttls[i];
            fprintf(f, "%s element " T " dns4 { %s timeout %us }\n", pass == 1 ? "delete" : "add",
                    pe__net_ntoa(addrs[i], a), ttl);
        }
    fclose(f);
    r = apply_script(netns, text, err);
    free(text);
    return r;
}

int pe__egress_attach(const json_t *policy, pid_t pid, const pe_egress_addrs *keep, pe_err *err)
{
    char path[64];
    cleanup_fd int ns = -1;
    cleanup_free char *script = NULL;

    snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
    ns = open(path, O_RDONLY | O_CLOEXEC);
    if (ns < 0)
        return pe_err_sys(err, "egress policy: open %s", path);
    script = table_script(policy, keep);
    if (apply_script(ns, script, err) < 0)
        return pe_err_prefix(err, "egress policy");
    return 0;
}

/* ---- storage ---- */

static char *dir_of(pe_runtime *rt, const char *name)
{
    return pe_xasprintf("%s/sandboxes/%s", rt->data_dir, name);
}

json_t *pe__egress_load(const char *dir)
{
    cleanup_free char *path = pe_xasprintf("%s/" POLICY_FILE, dir);
    cleanup_free char *text = NULL;
    json_t *o, *p;

    if (pe_fs_read_file(path, POLICY_MAX, &text, NULL, NULL) < 0)
        return NULL;
    o = json_loads(text, 0, NULL);
    /* What we stored passed the checks; a file that no longer does (edited
     * by hand) is refused as "none": fail closed. */
    p = o ? pe_egress_policy_parse(o, NULL) : NULL;
    json_decref(o);
    return p ? p
             : json_pack("{s:s, s:[], s:[], s:[], s:[], s:[]}", "mode", "none", "allowDomains",
                         "denyDomains", "allowCidrs", "denyCidrs", "ports");
}

int pe_runtime_egress_get(pe_runtime *rt, const char *name, json_t **out, pe_err *err)
{
    cleanup_free char *dir = NULL, *path = NULL;

    *out = NULL;
    if (!pe_name_valid(name))
        return pe_err_set(err, PE_EINVAL, 0, "invalid sandbox name '%s'", name);
    dir = dir_of(rt, name);
    if (access(dir, F_OK) < 0)
        return pe_err_set(err, PE_ENOENT, 0, "no such sandbox: %s", name);
    path = pe_xasprintf("%s/" POLICY_FILE, dir);
    if (access(path, F_OK) == 0)
        *out = pe__egress_load(dir);
    return 0;
}

static int open_locked_state(pe_runtime *rt, const char *name, pe_state *st, char **dir,
                             pe_err *err)
{
    int lock;

    if (!pe_name_valid(name))
        return pe_err_set(err, PE_EINVAL, 0, "invalid sandbox name '%s'", name);
    *dir = dir_of(rt, name);
    if (access(*dir, F_OK) < 0)
        return pe_err_set(err, PE_ENOENT, 0, "no such sandbox: %s", name);
    lock = pe__lock_file(*dir, LOCK_EX, err);
    if (lock < 0)
        return -1;
    if (pe__state_load(*dir, st, err) < 0) {
        close(lock);
        return -1;
    }
    return lock;
}

int pe_runtime_egress_put(pe_runtime *rt, const char *name, const json_t *policy,
                          const pe_egress_addrs *keep, pe_err *err)
{
    cleanup_free char *dir = NULL, *path = NULL, *text = NULL;
    cleanup_fd int lock = -1;
    pe_state st;
    int r = 0;

    memset(&st, 0, sizeof(st));
    lock = open_locked_state(rt, name, &st, &dir, err);
    if (lock < 0)
        return -1;
    path = pe_xasprintf("%s/" POLICY_FILE, dir);
    if (policy == NULL) {
        if (unlink(path) < 0 && errno != ENOENT)
            r = pe_err_sys(err, "remove %s", path);
    } else {
        text = json_dumps(policy, JSON_COMPACT);
        r = pe_fs_write_atomic(path, text, strlen(text), 0600, err);
    }
    if (r == 0 && pe__state_alive(&st) && st.net.addr != 0) {
        if (policy != NULL) {
            r = pe__egress_attach(policy, st.pid, keep, err);
        } else {
            char p[64];
            cleanup_fd int ns = -1;
            snprintf(p, sizeof(p), "/proc/%d/ns/net", (int)st.pid);
            ns = open(p, O_RDONLY | O_CLOEXEC);
            r = ns < 0 ? pe_err_sys(err, "open %s", p)
                       : apply_script(ns, "add table " T "\ndelete table " T "\n", err);
        }
    }
    pe__state_clear(&st);
    return r;
}

int pe_runtime_egress_netns(pe_runtime *rt, const char *name, pid_t *pid, pe_err *err)
{
    cleanup_free char *dir = NULL;
    cleanup_fd int lock = -1;
    pe_state st;
    int fd = -1;

    memset(&st, 0, sizeof(st));
    lock = open_locked_state(rt, name, &st, &dir, err);
    if (lock < 0)
        return -1;
    if (!pe__state_alive(&st) || st.net.addr == 0) {
        pe_err_set(err, PE_ESTATE, 0, "sandbox %s is not running with a network", name);
    } else {
        char p[64];
        snprintf(p, sizeof(p), "/proc/%d/ns/net", (int)st.pid);
        fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            pe_err_sys(err, "open %s", p);
        *pid = st.pid;
    }
    pe__state_clear(&st);
    return fd;
}

/* ---- the log of denied attempts ----
 *
 * egress-denials.log (JSON lines) and its older half .1: appended with
 * O_APPEND under deny_mu (one process writes it: the daemon), moved to .1
 * when it passes half the budget. */

#define DENIALS_FILE "egress-denials.log"
#define DENIAL_MAX 1024

static pthread_mutex_t deny_mu = PTHREAD_MUTEX_INITIALIZER;

int pe_runtime_egress_deny_log(pe_runtime *rt, const char *name, const json_t *entry, pe_err *err)
{
    cleanup_free char *dir = NULL, *path = NULL, *old = NULL, *line = NULL;
    cleanup_fd int fd = -1;
    struct stat st;
    size_t n;
    int r = 0;

    if (!pe_name_valid(name))
        return pe_err_set(err, PE_EINVAL, 0, "invalid sandbox name '%s'", name);
    dir = dir_of(rt, name);
    path = pe_xasprintf("%s/" DENIALS_FILE, dir);
    old = pe_xasprintf("%s/" DENIALS_FILE ".1", dir);
    line = json_dumps(entry, JSON_COMPACT);
    if (line == NULL || (n = strlen(line)) > DENIAL_MAX)
        return pe_err_set(err, PE_EINVAL, 0, "a denial entry over %d bytes", DENIAL_MAX);
    line[n] = '\n';
    pthread_mutex_lock(&deny_mu);
    if (access(dir, F_OK) < 0) {
        r = pe_err_set(err, PE_ENOENT, 0, "no such sandbox: %s", name);
    } else {
        if (stat(path, &st) == 0 && st.st_size > PE_EGRESS_DENIALS_KEEP / 2 &&
            rename(path, old) < 0)
            r = pe_err_sys(err, "rotate %s", path);
        fd = r < 0 ? -1 : open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (r == 0 && (fd < 0 || write(fd, line, n + 1) != (ssize_t)(n + 1)))
            r = pe_err_sys(err, "append to %s", path);
    }
    pthread_mutex_unlock(&deny_mu);
    return r;
}

/* Lines of text (newest last) onto a, each parsed; bad ones skipped. */
static void add_lines(json_t *a, const char *text)
{
    const char *p = text, *end = text + strlen(text);

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        json_t *o = json_loadb(p, len, 0, NULL);
        if (json_is_object(o))
            json_array_append_new(a, o);
        else
            json_decref(o);
        p += len + 1;
    }
}

int pe_runtime_egress_denials(pe_runtime *rt, const char *name, size_t limit, json_t **out,
                              pe_err *err)
{
    cleanup_free char *dir = NULL, *path = NULL, *old = NULL, *t1 = NULL, *t2 = NULL;
    json_t *all = json_array(), *res;
    size_t n;

    *out = NULL;
    if (!pe_name_valid(name)) {
        json_decref(all);
        return pe_err_set(err, PE_EINVAL, 0, "invalid sandbox name '%s'", name);
    }
    dir = dir_of(rt, name);
    path = pe_xasprintf("%s/" DENIALS_FILE, dir);
    old = pe_xasprintf("%s/" DENIALS_FILE ".1", dir);
    pthread_mutex_lock(&deny_mu);
    if (pe_fs_read_file(old, PE_EGRESS_DENIALS_KEEP, &t1, NULL, NULL) == 0)
        add_lines(all, t1);
    if (pe_fs_read_file(path, PE_EGRESS_DENIALS_KEEP, &t2, NULL, NULL) == 0)
        add_lines(all, t2);
    pthread_mutex_unlock(&deny_mu);
    res = json_array();
    n = json_array_size(all);
    for (size_t i = 0; i < n && i < limit; i++)
        json_array_append(res, json_array_get(all, n - 1 - i));
    json_decref(all);
    *out = res;
    return 0;
}
