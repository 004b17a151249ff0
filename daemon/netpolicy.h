/* A sandbox's egress policy (sandbox-netpolicy.c, egress-proxy.c; the
 * methods: handlers/netpolicy.c): what the methods, the lifecycle and the
 * egress proxy need of it. */
#ifndef PE_DAEMON_NETPOLICY_H
#define PE_DAEMON_NETPOLICY_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon.h"

/* Why a remote sandbox takes no egress policy (createSandbox's
 * networkPolicy, putNetworkPolicy: 501): its traffic never passes here. */
#define PE_DAEMON_NETPOLICY_REMOTE_WHY                                                             \
    "egress policy (its traffic leaves from the provider's network, which this daemon does not "   \
    "filter)"

/* A started sandbox's DNS forwarder when it has a policy. */
void pe_daemon_netpolicy_started(pe_daemon *d, const pe_store_sandbox *sb);
/* createSandbox's networkPolicy: checked (and normalized in place) by the
 * handler, kept for sandbox id by the create, handed to the runtime once
 * it made the sandbox and before it first runs. */
int pe_daemon_netpolicy_create_check(json_t *in, pe_err *err);
/* The egress policy a create of base gets when it names none (its
 * template's), parsed as create_check leaves a create's; NULL: none. */
json_t *pe_daemon_netpolicy_default(const char *base);
int pe_daemon_netpolicy_create_store(pe_daemon *d, const char *id, const json_t *in, pe_err *err);
int pe_daemon_netpolicy_before_start(pe_daemon *d, const pe_store_sandbox *sb, pe_err *err);
/* getNetworkPolicy's: sandbox id's policy in *policy (a reference;
 * NULL: none), the runtime's or, before the runtime has the sandbox, the
 * one waiting for it. putNetworkPolicy's: policy (parsed; NULL removes
 * it) for sb, applied at once (a running sandbox's table, forwarder and
 * proxy connections) or kept for its start. Workers. */
int pe_daemon_netpolicy_get(pe_daemon *d, const char *id, json_t **policy, pe_err *err);
int pe_daemon_netpolicy_put(pe_daemon *d, const pe_store_sandbox *sb, const json_t *policy,
                            pe_err *err);
/* For egress-proxy.c: does name (NULL: any name policy allows) resolve to
 * addr (host order) for sandbox id, by what its resolver answered while
 * the TTL runs, else (a name) by a fresh lookup upstream? */
bool pe_daemon_egress_resolves(pe_runtime *rt, const char *id, const json_t *policy,
                               const char *name, uint32_t addr);
/* An attempt of sandbox id that its policy denied: in the daemon's log and
 * in the sandbox's log of denials (getNetworkDenials). name "" or NULL:
 * none; addr 0: none (a DNS question); via "dns" or "proxy". */
void pe_daemon_egress_denied(pe_runtime *rt, const char *id, const char *name, uint32_t addr,
                             unsigned port, const char *via, const char *reason);
/* egress-proxy.c: sandbox id's name-checking proxy in netns (its init
 * pid), unless it has one; a policy change: cut its connections that the
 * new policy does not allow. */
void pe_daemon_egress_proxy_start(pe_daemon *d, const char *id, pid_t pid, int netns);
void pe_daemon_egress_proxy_recheck(pe_runtime *rt, const char *id);

#endif
