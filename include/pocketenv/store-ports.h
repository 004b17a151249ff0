/* The store's typed operations for exposed ports (io.pocketenv.sandbox.
 * exposePort / unexposePort / getExposedPorts / exposeVscode, issue 5),
 * over the sandbox_ports table (migration 1, access columns migration 2).
 * A row belongs to a sandbox (ON DELETE CASCADE) and through it to the
 * sandbox's owner; the daemon's reverse proxy (daemon/proxy.c) reads it to
 * decide what a preview URL reaches. Threading: none; one pe_store per
 * thread. */
#ifndef POCKETENV_STORE_PORTS_H
#define POCKETENV_STORE_PORTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pocketenv/err.h"
#include "pocketenv/store.h"

typedef struct pe_store_port {
    const char *id;         /* "port_..." */
    const char *sandbox_id; /* the sandbox the port is inside */
    int port;               /* 1..65535 (the API takes 1024..65535) */
    const char *description;
    const char *preview_url;
    bool public_access; /* anyone with the URL, no token or secret */
    const char *secret; /* per-port secret that opens a private preview */
    int64_t created_at;
    const char *owner_did;    /* the sandbox's owner: filled by pe_store_port_find only */
    const char *sandbox_name; /* the sandbox's name: filled by pe_store_port_find only */
} pe_store_port;

void pe_store_port_clear(pe_store_port *p);
void pe_store_port_list_free(pe_store_port *list, size_t n);

/* Insert p (id, sandbox_id, port required). The port already exposed on
 * that sandbox is PE_EEXIST; an unknown sandbox PE_ENOENT. */
int pe_store_port_add(pe_store *s, const pe_store_port *p, pe_err *err);
/* The row of (sandbox_id, port); PE_ENOENT if the port is not exposed. */
int pe_store_port_get(pe_store *s, const char *sandbox_id, int port, pe_store_port *out,
                      pe_err *err);
/* Every port of sandbox_id, by port number. */
int pe_store_port_list(pe_store *s, const char *sandbox_id, pe_store_port **out, size_t *n,
                       pe_err *err);
/* The row of port on the one sandbox whose id or preview tag is ident,
 * whoever owns it, with its owner and name filled in; PE_ENOENT if there
 * is none. Never a lookup by name: names are unique per owner only, and a
 * preview must never resolve to another user's sandbox. */
int pe_store_port_find(pe_store *s, const char *ident, int port, pe_store_port *out, pe_err *err);

/* Length of a preview tag: lowercase base32 (a-z, 2-7), 50 random bits. */
#define PE_STORE_PREVIEW_TAG_LEN 10

/* The preview tag of sandbox_id (malloc'd into *tag), made on first call.
 * PE_ENOENT for an unknown sandbox. */
int pe_store_preview_tag(pe_store *s, const char *sandbox_id, char **tag, pe_err *err);
/* Remove (sandbox_id, port); PE_ENOENT if it was not exposed. */
int pe_store_port_delete(pe_store *s, const char *sandbox_id, int port, pe_err *err);

#endif
