/* Many daemons as one service (issue 22, docs/cluster.md): nodes, their
 * leases, node-to-node credentials, and forwarding a call about a sandbox
 * to the node that runs it (daemon/cluster.c, cluster-forward.c).
 *
 * A daemon on a PostgreSQL store is a node: it registers in the store's
 * nodes table at start and renews its lease every lease/3 seconds. With a
 * cluster key (--cluster-key-file) it also forwards calls about sandboxes
 * of other nodes to them, one hop, with a credential only holders of the
 * key can make. On SQLite nothing of this runs: one daemon, one node. */
#ifndef PE_DAEMON_CLUSTER_H
#define PE_DAEMON_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "daemon.h"
#include "pocketenv/store-nodes.h"

/* The Authorization scheme of node-to-node calls. */
#define PE_CLUSTER_SCHEME "PocketenvNode "
/* Header of the answer by which a node proves it holds the key too. */
#define PE_CLUSTER_PROOF_HEADER "X-Pocketenv-Node-Proof"
/* How far a credential's time may be from ours (seconds). */
#define PE_CLUSTER_SKEW_S 30
#define PE_CLUSTER_DEFAULT_LEASE 15.0
#define PE_CLUSTER_DEFAULT_SLOTS 64

/* The serve flags of this part, parsed before the daemon exists. */
typedef struct pe_cluster_cfg {
    const char *key_file; /* --cluster-key-file */
    const char *name;     /* --node-name (hostname-NODEID) */
    const char *address;  /* --node-address (http://LISTEN) */
    double lease_s;       /* --node-lease */
    int64_t slots;        /* --node-slots */
    char *labels;         /* --node-label K=V..., as JSON object text (malloc'd) */
    const char *place;    /* --place-label K=V: new sandboxes only on nodes with it */
} pe_cluster_cfg;

void pe_cluster_cfg_defaults(pe_cluster_cfg *cfg);
/* One flag by name ("cluster-key-file", "node-name", ...); PE_EINVAL for
 * a bad value. */
int pe_cluster_flag(pe_cluster_cfg *cfg, const char *name, const char *arg, pe_err *err);
void pe_cluster_cfg_free(pe_cluster_cfg *cfg);

/* At start, once the server listens (port known): on a PostgreSQL store,
 * load the key, register the node and start renewing its lease; wrap the
 * handlers of sandbox calls so that calls about other nodes' sandboxes go
 * there. Nothing on SQLite. listen_host/port: where this daemon listens. */
int pe_daemon_cluster_start(pe_daemon *d, const pe_cluster_cfg *cfg, const char *listen_host,
                            unsigned port, pe_err *err);
/* The daemon stops cleanly (SIGTERM, SIGINT; loop thread): end this
 * node's lease now and NOTIFY the other nodes, so they see it down at once
 * rather than when the lease would lapse. Once; nothing without a cluster. */
void pe_daemon_cluster_leave(pe_daemon *d);
/* Stop the lease timer and free (teardown). */
void pe_daemon_cluster_free(pe_daemon *d);
/* listNodes and drainNode (registered whatever the store). */
int pe_daemon_register_nodes(pe_daemon *d, pe_err *err);

/* Node credentials. what names the call (an XRPC nsid, a route's path). */
char *pe_cluster_cred_mint(struct pe_cluster *cl, const char *to_node, const char *did,
                           const char *what, char nonce_out[33]);
enum pe_cluster_cred_result {
    PE_CLUSTER_CRED_OK = 0,
    PE_CLUSTER_CRED_MALFORMED,
    PE_CLUSTER_CRED_BAD_MAC,
    PE_CLUSTER_CRED_WRONG_NODE, /* made for another node or another call */
    PE_CLUSTER_CRED_EXPIRED,    /* too far from our clock */
    PE_CLUSTER_CRED_REPLAYED,   /* its nonce was used already */
    PE_CLUSTER_CRED_NO_KEY,     /* this daemon has no cluster key */
};
const char *pe_cluster_cred_result_name(enum pe_cluster_cred_result r);
/* Check cred (the Authorization value after the scheme) for this node and
 * what (NULL: any call, for the rate limiter's key); on OK *did (malloc'd) is the caller it carries
 * and nonce_out its nonce. consume: remember the nonce (a second use is REPLAYED). Loop thread when
 * consume is set. */
enum pe_cluster_cred_result pe_cluster_cred_verify(pe_daemon *d, const char *cred, const char *what,
                                                   bool consume, char **did, char nonce_out[33]);
bool pe_cluster_has_key(const struct pe_cluster *cl);
/* --place-label's KEY=VALUE, or NULL. */
const char *pe_cluster_place_label(const struct pe_cluster *cl);
/* The proof a node answers with for nonce: hex of a MAC (65 bytes). */
void pe_cluster_proof(struct pe_cluster *cl, const char *nonce, char out[65]);

/* Is node n's lease still running at now_ms? */
static inline bool pe_cluster_node_up(const pe_store_node *n, int64_t now_ms)
{
    return n->lease_until > now_ms;
}

/* pe_daemon_sandbox_view(sb), with statusReason "node NAME is down" when
 * sb runs on another node whose lease has lapsed (worker thread). */
json_t *pe_daemon_cluster_view(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb);

/* Does this node hear the store's notifications now (cluster-listen.c)?
 * Only then may it keep answers read from a PostgreSQL store (getSandbox's
 * read cache): another node's change reaches it at once. Loop thread. */
bool pe_daemon_cluster_listening(const pe_daemon *d);
/* Its counters in Prometheus text (GET /metrics); nothing without a cluster. */
void pe_daemon_cluster_metrics(const pe_daemon *d, FILE *out);

/* ---- LISTEN (cluster-listen.c) ---- */
struct pe_cluster_listen;
/* Listen on d's PostgreSQL store, connecting on the pool and again after
 * a loss (with backoff): never fails, logs. The connection's
 * application_name is "pocketenv-listen/NODE_NAME". Loop thread. */
struct pe_cluster_listen *pe__cluster_listen_start(pe_daemon *d, const char *node_name);
bool pe__cluster_listen_up(const struct pe_cluster_listen *lw);
void pe__cluster_listen_metrics(const struct pe_cluster_listen *lw, FILE *out);
/* Stop listening (teardown); NULL is a no-op. */
void pe__cluster_listen_free(struct pe_cluster_listen *lw);

/* Forwarding (cluster-forward.c): wrap the sandbox calls' handlers. */
int pe_daemon_cluster_wrap(pe_daemon *d, pe_err *err);

struct pe_cluster_target;
/* Placement (worker): where a new sandbox of did made from base (NULL:
 * the default) goes. 0: here (also without a cluster key), 1: on node *t
 * (clear it; down only for a snapshot's node, which is the only one that
 * can make it), -1 with err: PE_ESTATE when no node has room (the message
 * says why), else the store's error. A node chosen by room has one of its
 * slots taken (docs/cluster.md "Placement"). createSandbox and the E2B
 * API's create share it. */
int pe_cluster_place(pe_daemon *d, pe_store *s, const char *did, const char *base,
                     struct pe_cluster_target *t, pe_err *err);

/* ---- the streaming routes (cluster-relay.c) ---- */

/* The node of a sandbox that another node runs. */
typedef struct pe_cluster_target {
    char *node_id, *node_name, *address;
    bool down; /* its lease lapsed (or it never registered) */
} pe_cluster_target;

/* Worker: 1 and *t filled when sb is another node's and this daemon can
 * reach it (it has the cluster key), else 0 (serve it here, as before). */
int pe_cluster_where(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_cluster_target *t);
void pe_cluster_target_clear(pe_cluster_target *t);
/* Does req carry a node credential (Authorization: PocketenvNode)? */
bool pe_cluster_is_node_request(const pe_http_request *req);
/* The DID of such a request, once its credential checks out for this node
 * and req's path (consumed: a replay is refused); else NULL after answering
 * 401 InvalidNodeCredential. Loop thread. */
char *pe_cluster_route_auth(pe_daemon *d, pe_http_request *req);
/* Relay req (a terminal, streaming exec or their input/resize request of
 * did, already authenticated here) to the node t, or answer 503 NodeDown.
 * Answers req, now or later. Loop thread. */
void pe_cluster_relay_route(pe_daemon *d, pe_http_request *req, const char *did,
                            const pe_cluster_target *t);
/* Called on the loop with a relayed answer that is not a stream, before
 * it goes to the client: a route that remembers what the other node made
 * (the /ssh gateway's sessions). did and t are the relay's. */
typedef void (*pe_cluster_relay_then_fn)(pe_daemon *d, const char *did, const pe_cluster_target *t,
                                         long status, const char *body, size_t len);
/* pe_cluster_relay_route, then `then` (NULL: none) with its answer. */
void pe_cluster_relay_route_then(pe_daemon *d, pe_http_request *req, const char *did,
                                 const pe_cluster_target *t, pe_cluster_relay_then_fn then);
/* Called on the loop with a relayed answer that is not a stream, before
 * it goes to the client: a new body (malloc'd, its length in *out_len) to
 * answer with instead, or NULL to relay it as it came (the E2B API puts
 * back the key it keeps here). ud as given. */
typedef char *(*pe_cluster_relay_edit_fn)(long status, const char *body, size_t len,
                                          size_t *out_len, void *ud);
/* pe_cluster_relay_route with edit; ud_free(ud) once the relay is over
 * (also when it is refused at once: NodeDown, busy). */
void pe_cluster_relay_route_edit(pe_daemon *d, pe_http_request *req, const char *did,
                                 const pe_cluster_target *t, pe_cluster_relay_edit_fn edit,
                                 void *ud, void (*ud_free)(void *));
/* The daemon stops: close the relays (their clients hear 1001). */
void pe_cluster_relay_drain(pe_daemon *d);

#endif
