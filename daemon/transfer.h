/* Copies of a sandbox's directories (issue 5): pushDirectory /
 * pullDirectory and the /cp transfer store (handlers/copy.c); backups are
 * backups.h's. docs/design/transfer.md says what a user sees. */
#ifndef PE_DAEMON_TRANSFER_H
#define PE_DAEMON_TRANSFER_H

#include "daemon.h"

/* The largest POST /cp upload by default (the stored tar.gz, bytes);
 * `pocketenv serve --cp-max` sets another. The one place the cap lives:
 * a per-user disk quota belongs next to it, in handlers/copy.c's head
 * callback, which sees the declared length before a byte is stored. */
#define PE_CP_UPLOAD_MAX_DEFAULT (1ULL << 30)

/* pushDirectory, pullDirectory, POST /cp, GET /cp/<uuid>; uploads of at
 * most upload_max bytes. Loop thread, at start. */
int pe_daemon_register_copy(pe_daemon *d, unsigned long long upload_max, pe_err *err);

/* Housekeeping, on a worker (the tick): remove /cp objects never
 * downloaded before their expiry. */
void pe_daemon_copy_expire(pe_daemon *d);

/* Bytes of owner's /cp objects waiting on disk (their disk quota). Any
 * thread. */
int64_t pe_daemon_copy_usage(pe_daemon *d, const char *owner);

/* /cp objects for the MCP tools (daemon/mcp-tools.c), on a worker. put:
 * data (a tar or tar.gz of at most the upload cap) checked as an upload
 * and kept as a new object of owner, its id in uuid. take: owner's object
 * uuid read whole into *data (malloc'd) and used up; one of more than max
 * bytes is refused (and used up as well: it was made for this call). */
#define PE_DAEMON_COPY_UUID_LEN 36
int pe_daemon_copy_put(pe_daemon *d, pe_store *s, const char *owner, const void *data, size_t len,
                       char uuid[PE_DAEMON_COPY_UUID_LEN + 1], pe_err *err);
int pe_daemon_copy_take(pe_daemon *d, const char *owner, const char *uuid, size_t max, char **data,
                        size_t *len, pe_err *err);

/* A pushDirectory or pullDirectory forwarded to another node (daemon/
 * cluster-forward.c) moves the object along, on a worker, with cred (a
 * node credential, Authorization's value) for POST /cp or GET /cp/<uuid>
 * of that node (address). send: owner's object uuid, if this node has it
 * (else 0), goes there and is used up here: 1 and *out its uuid there.
 * fetch: that node's object uuid of owner becomes one here, same uuid. */
int pe_daemon_copy_send(pe_daemon *d, const char *owner, const char *uuid, const char *address,
                        const char *cred, char out[PE_DAEMON_COPY_UUID_LEN + 1], pe_err *err);
int pe_daemon_copy_fetch(pe_daemon *d, pe_store *s, const char *owner, const char *uuid,
                         const char *address, const char *cred, pe_err *err);

#endif
