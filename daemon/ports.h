/* Exposed ports and their preview proxy (issue 5): the XRPC methods in
 * handlers/ports.c, the reverse proxy in proxy.c. docs/design/ports.md
 * says what a user sees. */
#ifndef PE_DAEMON_PORTS_H
#define PE_DAEMON_PORTS_H

#include "daemon.h"

/* exposePort, unexposePort, getExposedPorts, exposeVscode, and the proxy's
 * routes. Loop thread, at start. */
int pe_daemon_register_ports(pe_daemon *d, pe_err *err);
/* The proxy: Host *.localhost and the path prefix /p/. */
int pe_daemon_register_proxy(pe_daemon *d, pe_err *err);

/* previewUrl (proxy.c) of port on the sandbox with this name and preview tag
 * (pe_store_preview_tag): http://<port>-<name>-<tag>.localhost:<daemon
 * port>/, the name left out where it is not a host label on its own. */
char *pe_daemon_preview_url(pe_daemon *d, const char *name, const char *tag, int port);
/* A new private preview's secret: 32 hex digits from the kernel's CSPRNG
 * (the caller frees it). */
char *pe_daemon_preview_secret(void);

/* The first label of a Host-form preview, "<port>-[<name>-]<tag>" (len
 * bytes): its port, tag and name part (NULL if absent), malloc'd. */
bool pe_daemon_preview_label(const char *label, size_t len, int *port, char **tag,
                             char **name_hint);

/* A preview URL taken apart: the origin ("http://host:port"), the ident
 * (preview tag or sandbox id), the Host form's name part (or NULL), the
 * port, the scope ("/" or "/p/<ident>/<port>/") and the path with its
 * query (under scope). */
typedef struct pe_preview_target {
    char *origin, *ident, *name_hint, *scope, *path;
    int port;
} pe_preview_target;

/* Parse url, a preview URL of this daemon in either form; PE_EINVAL if it
 * is none. Clear t with pe_daemon_preview_target_clear either way. */
int pe_daemon_preview_parse(const char *url, pe_preview_target *t, pe_err *err);
void pe_daemon_preview_target_clear(pe_preview_target *t);

/* The one-time sign-in link of a preview: url (a preview URL) becomes
 * <origin><scope>__pocketenv/auth?pe_code=<code>&to=<path>. */
char *pe_daemon_preview_signin_link(const pe_preview_target *t, const char *code);

/* The NAT address ("10.89.x.y") of running sandbox id, malloc'd; PE_ESTATE
 * if it is not running or has no network of its own. Blocking (reads the
 * runtime's state): worker threads. */
int pe_daemon_sandbox_address(pe_daemon *d, const char *id, char **addr, pe_err *err);

#endif
