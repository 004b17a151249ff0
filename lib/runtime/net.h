/* Sandbox networking (--net nat): address pool, leases, host bridge,
 * nftables table and the rtnetlink helpers under them. Not installed.
 * The design and the host settings it changes are in docs/design/network.md. */
#ifndef PE_RUNTIME_NET_H
#define PE_RUNTIME_NET_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "pocketenv/runtime.h"

#define PE_NET_BRIDGE "pe0"
#define PE_NET_DEFAULT_POOL "10.89.0.0/16"
/* Host-wide, like the bridge they describe; volatile like it (a reboot
 * clears both). Not under DATA: two data directories share one bridge. */
#define PE_NET_STATE_DIR "/run/pocketenv/net"
#define PE_NET_MAX_PORTS 32
#define PE_NET_AUTO_PORT_FIRST 20000u /* --publish PORT picks from here */
#define PE_NET_AUTO_PORT_COUNT 10000u
#define PE_NET_IFNAME_MAX 16

/* One sandbox's claim on the network, from start to stop. Addresses are
 * in host byte order. */
typedef struct pe_net_lease {
    uint32_t addr; /* 0: no lease */
    uint32_t gateway;
    int prefix;
    char veth[PE_NET_IFNAME_MAX]; /* host side, unique per start: pe-<key8><rand4> */
    bool allow_host;
    size_t n_ports;
    pe_port ports[PE_NET_MAX_PORTS]; /* host ports resolved */
} pe_net_lease;

/* ---- net.c ---- */

/* Claim an address from the pool and the host ports cfg publishes, for
 * the sandbox keyed `key` (its id) of data directory data_dir. The claim
 * lives in PE_NET_STATE_DIR until pe__net_release, or until gc finds its
 * owner gone (setup process dead and veth gone). */
int pe__net_acquire(const pe_sandbox_cfg *cfg, const char *data_dir, const char *key,
                    pe_net_lease *l, pe_err *err);
/* Bridge, NAT table and this lease's nft elements, and a veth whose peer
 * is created as eth0 directly in the network namespace of pid. The child
 * configures eth0 itself (address, route) once it runs. */
int pe__net_attach(const pe_net_lease *l, pid_t pid, pe_err *err);
/* Drop the lease's nft elements and claims (only if still ours). Never
 * deletes the veth: it dies with the sandbox's network namespace, in the
 * kernel's own time, so stop never waits for the RCU-bound unregister. */
void pe__net_release(pe_net_lease *l);
/* Release leases whose owner is gone and unreferenced pe-* links. */
void pe__net_gc(void);
/* Write the sandbox's resolv.conf and hosts, to the paths given. */
int pe__net_write_etc(const char *resolv, const char *hosts, const char *hostname,
                      const pe_net_lease *l, pe_err *err);

json_t *pe__net_lease_to_json(const pe_net_lease *l);
void pe__net_lease_from_json(json_t *o, pe_net_lease *l);
/* "a.b.c.d" of a host-order address into buf (16 bytes). */
const char *pe__net_ntoa(uint32_t addr, char *buf);

/* ---- net-nft.c: the `table inet pocketenv` ---- */

/* Create the table if it is missing, and add the lease's elements. */
int pe__nft_attach(const pe_net_lease *l, const char *pool, pe_err *err);
/* Remove the lease's elements (errors ignored: they may be gone). */
void pe__nft_detach(const pe_net_lease *l);
/* Delete the whole table: only when no lease is left. */
void pe__nft_drop_table(void);
/* Run an nft script in the calling thread's network namespace. */
int pe__nft_run(const char *script, pe_err *err);

/* ---- egress.c: a sandbox's egress policy (pocketenv/egress.h) ---- */

/* The policy stored in sandbox directory dir, NULL if none. */
json_t *pe__egress_load(const char *dir);
/* Put policy's table in force in the network namespace of pid, with keep
 * (may be NULL) in its dns4 set. */
struct pe_egress_addrs;
int pe__egress_attach(const json_t *policy, pid_t pid, const struct pe_egress_addrs *keep,
                      pe_err *err);

/* ---- netlink.c: raw rtnetlink through libmnl ---- */

/* Create (or find) bridge `name`, give it addr/prefix (network order),
 * bring it up. */
int pe__nl_bridge_ensure(const char *name, uint32_t addr_be, int prefix, pe_err *err);
/* veth `host` enslaved to `master` and up; its peer `peer` is created in
 * the network namespace netns_fd (down). */
int pe__nl_veth_add(const char *host, const char *master, const char *peer, int netns_fd,
                    pe_err *err);
/* Set IFLA_BRPORT_ISOLATED on the bridge port `dev`: isolated ports talk to
 * the bridge (the gateway) but never to each other. */
int pe__nl_port_isolate(const char *dev, pe_err *err);
/* Synchronous (tens of ms, RCU): only for orphans, from a reaper. */
int pe__nl_link_del(const char *name);
/* Names of the links starting with prefix; returns the count (<= max). */
int pe__nl_links_with_prefix(const char *prefix, char (*names)[PE_NET_IFNAME_MAX], int max);

#endif
