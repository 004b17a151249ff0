/* Nodes: daemons sharing one PostgreSQL store as one service (issue 22,
 * docs/cluster.md). Each daemon keeps one row, renewed on its tick: where
 * other nodes reach it, how much room it has, and a lease. A node whose
 * lease has lapsed is down; its row (and its sandboxes' rows) stay.
 * Threading: none; one pe_store per thread. */
#ifndef POCKETENV_STORE_NODES_H
#define POCKETENV_STORE_NODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pocketenv/err.h"
#include "pocketenv/store.h"

typedef struct pe_store_node {
    const char *id;      /* DATA/node-id */
    const char *name;    /* unique: what an operator types (node drain NAME) */
    const char *address; /* base URL other nodes call: "http://10.0.0.2:8789" */
    const char *version;
    const char *labels;  /* JSON object text: {"zone": "a"} */
    int64_t mem_free;    /* bytes of memory the host has free */
    int64_t cpus;        /* online CPUs */
    int64_t slots_free;  /* sandboxes it may still run */
    int64_t sandboxes;   /* sandboxes it runs */
    int draining;        /* no new placements (kept across renewals) */
    int64_t lease_until; /* unix ms: down after this */
    int64_t started_at;
    int64_t updated_at;
} pe_store_node;

void pe_store_node_clear(pe_store_node *n);
void pe_store_node_list_free(pe_store_node *list, size_t n);

/* Register n or renew its row: everything but draining (which only
 * pe_store_node_set_draining changes) and started_at (kept unless
 * restart is set). n->slots_free is the node's capacity: the row gets it
 * less the node's INITIALIZING and RUNNING sandboxes (and n->sandboxes is
 * not read: the row counts them). A name another node id holds is
 * PE_EEXIST. */
int pe_store_node_put(pe_store *s, const pe_store_node *n, bool restart, pe_err *err);
/* The channel of NOTIFY/LISTEN on which a node's id is sent when it
 * starts, leaves, or is drained or undrained (PostgreSQL; the store's
 * triggers send it: pocketenv/store-listen.h). */
#define PE_STORE_NODES_CHANNEL "pocketenv_nodes"

/* Node id stops cleanly: its lease ends now (lease_until 0, kept so until
 * it registers again with restart set; renewals do not bring it back),
 * and its id is sent on PE_STORE_NODES_CHANNEL (by the store's trigger).
 * PostgreSQL only. */
int pe_store_node_leave(pe_store *s, const char *id, pe_err *err);
/* A node that is down (lease over before now_ms) gives up its name: it
 * becomes "NAME~ID", so a host rebuilt with a new node id can take it.
 * 1 if a row was renamed, 0 if none (the name is free or held by a node
 * that is up). */
int pe_store_node_free_name(pe_store *s, const char *name, int64_t now_ms, pe_err *err);
int pe_store_node_get(pe_store *s, const char *id, pe_store_node *out, pe_err *err);
/* Every node by name. */
int pe_store_node_list(pe_store *s, pe_store_node **out, size_t *n, pe_err *err);
/* By name or id; PE_ENOENT if neither. *id_out (may be NULL) gets the id. */
int pe_store_node_set_draining(pe_store *s, const char *name, bool draining, char **id_out,
                               pe_err *err);

/* Choose the node for a new sandbox and take one of its slots, in one
 * transaction under an advisory lock (PostgreSQL), so two daemons placing
 * at once never take the same last slot: the node whose lease runs, not
 * draining, with the most free slots (then memory), and with label
 * "key=value" when label is not NULL. PE_ESTATE when none has room.
 * *id_out is malloc'd. */
int pe_store_node_place(pe_store *s, const char *label, char **id_out, pe_err *err);

#endif
