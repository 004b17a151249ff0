/* Egress policy of a --net nat sandbox (issue 20; docs/design/network.md,
 * "Egress policy").
 *
 * A policy is a JSON object, stored beside the sandbox's state:
 *   mode          "none" | "allowlist" | "open"
 *   allowDomains  names ("example.org") and wildcards ("*.example.org",
 *                 its subdomains only) whose addresses the sandbox may
 *                 reach once it resolved them through the daemon
 *   denyDomains   the same, winning over allowDomains (and in "open")
 *   allowCidrs    IPv4 networks reachable by address ("a.b.c.d/len")
 *   denyCidrs     IPv4 networks never reachable, winning over the rest
 *   ports         allowed destination ports in "allowlist" (empty: all)
 *   maxConnections  (optional) connections out at once
 *   maxRateKBps   (optional) kilobytes per second out, and as many in
 *   secrets       [{name, hosts}]: the sandbox's secrets of those names
 *                 are egress-only: the sandbox sees PE_SECRET_<id>, and
 *                 the daemon's proxy puts the value in request headers
 *                 sent to those hosts only
 * A sandbox without a stored policy keeps --net nat's open network. */
#ifndef POCKETENV_EGRESS_H
#define POCKETENV_EGRESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "pocketenv/err.h"
#include "pocketenv/runtime.h"

#define PE_EGRESS_MAX_ENTRIES 256
#define PE_EGRESS_MAX_SECRETS 64
#define PE_EGRESS_MAX_SECRET_HOSTS 32
/* The daemon's name-checking proxy listens on 127.0.0.1 of the sandbox's
 * namespace at this port (a privileged one: the sandbox's unprivileged
 * users cannot take it first); the table redirects TCP to ports 80, 443
 * and the policy's ports there. Its connections out are made from the
 * same namespace with this socket mark, which the sandbox cannot set (it
 * has no CAP_NET_ADMIN there): not redirected again, let through. */
#define PE_EGRESS_PROXY_PORT 999
#define PE_EGRESS_PROXY_MARK 0x70650001u
/* The NFLOG group (in the sandbox's namespace) of what its table refuses. */
#define PE_EGRESS_LOG_GROUP 7

/* Check in and return its normalized copy (every key present, names
 * lower-cased, CIDRs with their host bits cleared), or NULL with err
 * (PE_EINVAL, saying which entry is wrong). */
json_t *pe_egress_policy_parse(const json_t *in, pe_err *err);

/* Does the policy let the sandbox resolve name (no trailing dot)? */
bool pe_egress_name_allowed(const json_t *policy, const char *name);
/* Is the IPv4 address (host order) inside one of the policy's deny CIDRs? */
bool pe_egress_addr_denied(const json_t *policy, uint32_t addr);

/* Addresses (host order) the sandbox may reach for ttls seconds each (for
 * pe_runtime_egress_put, 0: only on connections it already has). */
typedef struct pe_egress_addrs {
    const uint32_t *addrs;
    const uint32_t *ttls;
    size_t n;
} pe_egress_addrs;

/* The stored policy of sandbox name, or *out NULL when none is stored. */
int pe_runtime_egress_get(pe_runtime *rt, const char *name, json_t **out, pe_err *err);
/* Store policy (already parsed) for sandbox name and, if it runs, put it
 * in force in its network namespace at once, with keep (may be NULL) as
 * the resolved addresses it still allows, in the same transaction. NULL
 * removes the policy (the sandbox's network is open again). */
int pe_runtime_egress_put(pe_runtime *rt, const char *name, const json_t *policy,
                          const pe_egress_addrs *keep, pe_err *err);
/* An fd of the network namespace of running sandbox name, and its init's
 * pid (to watch for its end). */
int pe_runtime_egress_netns(pe_runtime *rt, const char *name, pid_t *pid, pe_err *err);
/* In netns: a socket bound to 127.0.0.1:53 (type SOCK_DGRAM, or
 * SOCK_STREAM listening), where the policy's table sends every DNS query
 * of the sandbox. Non-blocking. */
int pe_egress_dns_socket(int netns, int type, pe_err *err);
/* In netns: the proxy's listening socket (127.0.0.1:PE_EGRESS_PROXY_PORT,
 * non-blocking). */
int pe_egress_proxy_socket(int netns, pe_err *err);
/* In netns: a TCP socket marked PE_EGRESS_PROXY_MARK, for the proxy's
 * connection to where the sandbox wanted to go. Non-blocking. */
int pe_egress_out_socket(int netns, pe_err *err);
/* In netns: a socket bound to the table's NFLOG group (non-blocking):
 * the kernel's own refusals (new connections, IPv6). */
int pe_egress_nflog_socket(int netns, pe_err *err);
typedef struct pe_egress_refusal {
    uint32_t addr; /* IPv4 destination, host order (0 for IPv6) */
    unsigned port; /* TCP/UDP destination port, else 0 */
    int proto;
    bool ipv6;
} pe_egress_refusal;
/* What the NFLOG socket holds now, at most cap refusals. */
size_t pe_egress_nflog_read(int fd, pe_egress_refusal *out, size_t cap);
/* Is port one the table sends to the proxy under policy? */
bool pe_egress_port_proxied(const json_t *policy, unsigned port);
/* Does the policy list port, or list none (all allowed)? */
bool pe_egress_port_allowed(const json_t *policy, unsigned port);
/* The hosts egress-only secret (a variable name) is bound to, or NULL if
 * the policy does not make it egress-only. */
const json_t *pe_egress_secret_hosts(const json_t *policy, const char *secret);
/* Is secret egress-only and bound to host (a name the client sent)? */
bool pe_egress_secret_bound(const json_t *policy, const char *secret, const char *host);
/* Is any secret bound to host (so the proxy intercepts its TLS)? */
bool pe_egress_host_bound(const json_t *policy, const char *host);
/* Is the IPv4 address (host order) inside one of the allowCidrs? */
bool pe_egress_addr_allowed(const json_t *policy, uint32_t addr);
/* Is name in the policy's denyDomains? */
bool pe_egress_name_denied(const json_t *policy, const char *name);

/* The log of denied attempts of sandbox name (in its directory, so it
 * goes with it): append one entry (a JSON object, at most 1 KiB dumped),
 * or read the newest limit entries, newest first. The log keeps the
 * newest PE_EGRESS_DENIALS_KEEP bytes or so (two files, rotated). */
#define PE_EGRESS_DENIALS_KEEP (128 * 1024)
int pe_runtime_egress_deny_log(pe_runtime *rt, const char *name, const json_t *entry, pe_err *err);
int pe_runtime_egress_denials(pe_runtime *rt, const char *name, size_t limit, json_t **out,
                              pe_err *err);

/* In netns: let the sandbox reach addrs (host order) for ttls seconds. */
int pe_egress_allow_addrs(int netns, const uint32_t *addrs, const uint32_t *ttls, size_t n,
                          pe_err *err);

#endif
