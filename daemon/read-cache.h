/* Answers of hot reads (getSandbox) kept on the loop thread, so a repeated
 * read is answered there without a worker hand-off or a store query.
 *
 * An answer is kept for one caller (did) and the id (or name) it asked
 * for, with the store's write generation (pe_store_write_gen) taken before
 * the read that made it. It is served only while that generation is still
 * current, so never after a write of this daemon has finished, and for at
 * most a second. Answers read from an SQLite store (this daemon's alone)
 * are kept; from a PostgreSQL store, which other daemons (nodes) write
 * too, only while this node hears the store's notifications, each of
 * which bumps the generation (daemon/cluster-listen.c; getSandbox in
 * handlers/sandbox.c). A change another node makes thus ends what was
 * kept as soon as its notification arrives (a few milliseconds after its
 * commit); the second's bound covers what no notification says (a lease
 * lapsing after a crash). Loop thread only. */
#ifndef PE_DAEMON_READ_CACHE_H
#define PE_DAEMON_READ_CACHE_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

/* The kept answer of did's read of id (a new reference), or NULL; *text
 * and *len: the same answer as sent (compact JSON), valid until the next
 * put or clear. */
json_t *pe_daemon_read_cache_get(const char *did, const char *id, const char **text, size_t *len);
/* Keep out (a reference is taken) as did's answer for id, read at store
 * write generation gen. */
void pe_daemon_read_cache_put(const char *did, const char *id, uint64_t gen, json_t *out);
/* Drop every kept answer (the daemon's shutdown). */
void pe_daemon_read_cache_clear(void);
/* Its counters, in Prometheus text format (GET /metrics). */
void pe_daemon_read_cache_metrics(FILE *out);

#endif
