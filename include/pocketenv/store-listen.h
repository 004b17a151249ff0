/* Notifications of a PostgreSQL store (LISTEN/NOTIFY): how a daemon hears
 * at once of rows other daemons (nodes) change, rather than when it next
 * reads them (issue 22, docs/cluster.md).
 *
 * The store's triggers (migration 12, PostgreSQL only) send, at the commit
 * of the change:
 *   PE_STORE_SANDBOXES_CHANNEL  a sandbox's id, when its row (or its
 *                               atproto record's row) was inserted,
 *                               updated or deleted
 *   PE_STORE_NODES_CHANNEL      a node's id, when it registered (a start),
 *                               left (clean stop), was renamed, its
 *                               draining flag changed, or it renewed a
 *                               lease that had lapsed; not on renewals
 *   PE_STORE_USERS_CHANNEL      a user's DID, when their API tokens were
 *                               revoked (users.tokens_valid_after)
 * Payloads are ids only: no secret ever travels on a channel.
 *
 * A listener is a connection of its own, never used for queries. Its fd
 * becomes readable when something arrives; pe_store_listen_read then
 * consumes it without blocking. A connection that breaks stays broken:
 * the owner closes it and opens a new one (what was sent meanwhile is
 * lost, so it re-reads what it keeps).
 * Threading: one listener per thread at a time; open may block (connect),
 * read never does. */
#ifndef POCKETENV_STORE_LISTEN_H
#define POCKETENV_STORE_LISTEN_H

#include <stddef.h>

#include "pocketenv/err.h"

#define PE_STORE_SANDBOXES_CHANNEL "pocketenv_sandboxes"
#define PE_STORE_USERS_CHANNEL "pocketenv_users"

typedef struct pe_store_listener pe_store_listener;

/* Connect to the PostgreSQL store at url and LISTEN on the channels.
 * name: the connection's application_name (what pg_stat_activity shows;
 * NULL: "pocketenv-listen"). PE_EUNSUP for an SQLite URL (one daemon:
 * nothing to hear). Blocks for the connection (a worker's job). */
pe_store_listener *pe_store_listen_open(const char *url, const char *name, pe_err *err);
/* The socket to watch for input (EPOLLIN). */
int pe_store_listen_fd(const pe_store_listener *l);
/* Called for each notification; channel and payload are valid during
 * the call. */
typedef void (*pe_store_notify_fn)(const char *channel, const char *payload, void *ud);
/* Consume what the socket holds, calling fn for each notification, in
 * the order sent. Never blocks. Returns the number of notifications, or
 * -1 if the connection broke (err says why; close it). */
int pe_store_listen_read(pe_store_listener *l, pe_store_notify_fn fn, void *ud, pe_err *err);
/* NULL is a no-op. */
void pe_store_listen_close(pe_store_listener *l);

#endif
