/* Our nftables table, through libnftables (no `nft` process).
 *
 * Everything Pocketenv adds to the host firewall lives in one table,
 * `table inet pocketenv`; nothing else is ever read or changed. Chains run
 * one priority step before the standard ones so our verdicts come first:
 *
 *   input        replies to the host's own connections pass; the pool may
 *                reach the host only from @allow_host; all else from the
 *                bridge is dropped (the host's services, the daemon's API)
 *   forward      nothing is routed bridge -> bridge (sandbox to sandbox,
 *                also via a published port); into the bridge only replies
 *                and published-port (DNAT) traffic
 *   prerouting,  tcp to a local address and a port in @ports is DNATed to
 *   output       the sandbox (output: connections from the host itself,
 *                127.0.0.1 included)
 *   postrouting  pool -> elsewhere is masqueraded (egress NAT); DNATed
 *                connections from 127.0.0.0/8 are masqueraded to the
 *                gateway so the sandbox can answer them
 *
 * Per-sandbox state is only set/map elements: adding and removing a
 * sandbox never rewrites rules, and the leak check is "no element names
 * its address". The table is created whole, in one transaction, by the
 * first attach that does not find it. */
#include <dlfcn.h>
#include <errno.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "runtime/net.h"

/* libnftables is opened on first use, not linked: it brings in a dozen
 * libraries whose loading would add ~1 ms to every pocketenv command,
 * including the many that never touch the firewall. */
static struct {
    struct nft_ctx *(*ctx_new)(uint32_t flags);
    void (*ctx_free)(struct nft_ctx *ctx);
    int (*buffer_output)(struct nft_ctx *ctx);
    int (*buffer_error)(struct nft_ctx *ctx);
    const char *(*get_error_buffer)(struct nft_ctx *ctx);
    int (*run_cmd_from_buffer)(struct nft_ctx *nft, const char *buf);
} nftlib;
static pthread_once_t nftlib_once = PTHREAD_ONCE_INIT;
static bool nftlib_ok;

static void nftlib_load(void)
{
    void *h = dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);

    if (h == NULL) {
        pe_log_error("load libnftables: %s", dlerror());
        return;
    }
    *(void **)&nftlib.ctx_new = dlsym(h, "nft_ctx_new");
    *(void **)&nftlib.ctx_free = dlsym(h, "nft_ctx_free");
    *(void **)&nftlib.buffer_output = dlsym(h, "nft_ctx_buffer_output");
    *(void **)&nftlib.buffer_error = dlsym(h, "nft_ctx_buffer_error");
    *(void **)&nftlib.get_error_buffer = dlsym(h, "nft_ctx_get_error_buffer");
    *(void **)&nftlib.run_cmd_from_buffer = dlsym(h, "nft_run_cmd_from_buffer");
    nftlib_ok = nftlib.ctx_new && nftlib.ctx_free && nftlib.buffer_output && nftlib.buffer_error &&
                nftlib.get_error_buffer && nftlib.run_cmd_from_buffer;
    if (!nftlib_ok)
        pe_log_error("libnftables lacks a function pocketenv needs");
}

/* Every use starts with a context, so loading there covers the rest. */
static struct nft_ctx *nft_ctx_open(uint32_t flags)
{
    pthread_once(&nftlib_once, nftlib_load);
    return nftlib_ok ? nftlib.ctx_new(flags) : NULL;
}

#define nft_ctx_new(flags) nft_ctx_open(flags)
#define nft_ctx_free(ctx) nftlib.ctx_free(ctx)
#define nft_ctx_buffer_output(ctx) nftlib.buffer_output(ctx)
#define nft_ctx_buffer_error(ctx) nftlib.buffer_error(ctx)
#define nft_ctx_get_error_buffer(ctx) nftlib.get_error_buffer(ctx)
#define nft_run_cmd_from_buffer(ctx, buf) nftlib.run_cmd_from_buffer(ctx, buf)

#define T "inet pocketenv"

static const char *const chains[] = {
    "input { type filter hook input priority -1; policy accept; }",
    "forward { type filter hook forward priority -1; policy accept; }",
    "prerouting { type nat hook prerouting priority -101; policy accept; }",
    "output { type nat hook output priority -101; policy accept; }",
    "postrouting { type nat hook postrouting priority 99; policy accept; }",
};

/* Rules; $BR and $POOL are defined at the top of the script. */
static const char *const rules[] = {
    "input iifname $BR ct state established,related accept",
    "input iifname $BR ip saddr @allow_host accept",
    "input iifname $BR drop",
    "forward iifname $BR oifname $BR drop",
    "forward oifname $BR ct state established,related accept",
    "forward oifname $BR ct status dnat accept",
    "forward oifname $BR drop",
    "prerouting fib daddr type local dnat ip to tcp dport map @ports",
    "output fib daddr type local dnat ip to tcp dport map @ports",
    "postrouting oifname $BR ct status dnat ip saddr 127.0.0.0/8 masquerade",
    "postrouting ip saddr $POOL oifname != $BR masquerade",
};

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

__attribute__((format(printf, 2, 3))) static void bprintf(buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (b->p && (size_t)n < b->cap - b->len)
            break;
        b->cap = b->cap * 2 + (size_t)n + 256;
        b->p = pe_xrealloc(b->p, b->cap);
    }
    b->len += (size_t)n;
}

/* Run an nft script; on failure err gets libnftables' message. */
static int nft_run(const char *script, pe_err *err)
{
    struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    int r;

    if (ctx == NULL)
        return pe_err_set(err, PE_ESYS, ENOMEM, "nftables context");
    nft_ctx_buffer_output(ctx);
    nft_ctx_buffer_error(ctx);
    r = nft_run_cmd_from_buffer(ctx, script);
    if (r != 0) {
        const char *msg = nft_ctx_get_error_buffer(ctx);
        char line[256];
        size_t n = msg ? strcspn(msg, "\n") : 0;

        snprintf(line, sizeof(line), "%.*s", (int)(n < 200 ? n : 200), msg ? msg : "");
        pe_err_set(err, PE_ESYS, 0, "nftables: %s", line[0] ? line : "failed");
    }
    nft_ctx_free(ctx);
    return r != 0 ? -1 : 0;
}

static void put_elements(buf *b, const char *verb, const pe_net_lease *l)
{
    char a[16];

    pe__net_ntoa(l->addr, a);
    if (l->allow_host)
        bprintf(b, "%s element " T " allow_host { %s }\n", verb, a);
    for (size_t i = 0; i < l->n_ports; i++)
        bprintf(b, "%s element " T " ports { %u : %s . %u }\n", verb, l->ports[i].host_port, a,
                l->ports[i].port);
}

/* The table and its sets; `add` is a no-op for what exists. */
static void put_sets(buf *b)
{
    bprintf(b, "add table " T "\n");
    bprintf(b, "add set " T " allow_host { type ipv4_addr; }\n");
    bprintf(b, "add map " T " ports { type inet_service : ipv4_addr . inet_service; }\n");
}

/* Deleting anything (a flushed rule, an element) makes closing the
 * nftables socket wait for an RCU grace period (7-15 ms here: the kernel
 * flushes its transaction destroy work on NETLINK_URELEASE). So a start
 * only ever adds: the table is made whole once, and a start that finds it
 * (its last chain, made in the same transaction) leaves it alone. */
static bool table_exists(void)
{
    struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    int r;

    if (ctx == NULL)
        return false;
    nft_ctx_buffer_output(ctx);
    nft_ctx_buffer_error(ctx);
    r = nft_run_cmd_from_buffer(ctx, "list chain " T " postrouting\n");
    nft_ctx_free(ctx);
    return r == 0;
}

int pe__nft_attach(const pe_net_lease *l, const char *pool, pe_err *err)
{
    buf b = {NULL, 0, 0};
    bool exists = table_exists();
    int r = 0;

    if (!exists) {
        bprintf(&b, "define BR = \"%s\"\ndefine POOL = %s\n", PE_NET_BRIDGE, pool);
        put_sets(&b);
        for (size_t i = 0; i < PE_ARRAY_LEN(chains); i++)
            bprintf(&b, "add chain " T " %s\n", chains[i]);
        for (size_t i = 0; i < PE_ARRAY_LEN(rules); i++)
            bprintf(&b, "add rule " T " %s\n", rules[i]);
    }
    put_elements(&b, "add", l);
    if (b.p != NULL)
        r = nft_run(b.p, err);
    free(b.p);
    return r < 0 ? pe_err_prefix(err, "set up table " T) : 0;
}

void pe__nft_detach(const pe_net_lease *l)
{
    buf b = {NULL, 0, 0};
    pe_err err;

    if (!l->allow_host && l->n_ports == 0)
        return;
    /* Add first, so the delete cannot fail on an element that never made
     * it in (a start that failed before attach): nftables 1.0.6 has no
     * `destroy`. The claim files say these keys are ours, so the add never
     * collides with another sandbox's element. */
    put_sets(&b);
    put_elements(&b, "add", l);
    put_elements(&b, "delete", l);
    if (nft_run(b.p, &err) < 0)
        pe_log_warn("remove sandbox from table " T ": %s", err.msg);
    free(b.p);
}

void pe__nft_drop_table(void)
{
    pe_err err;

    /* `destroy` (no error if absent) needs nftables >= 1.0.8; add first. */
    if (nft_run("add table " T "\ndelete table " T "\n", &err) < 0)
        pe_log_warn("delete table " T ": %s", err.msg);
}

int pe__nft_run(const char *script, pe_err *err)
{
    return nft_run(script, err);
}
