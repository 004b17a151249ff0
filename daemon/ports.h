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

/* previewUrl of port on sandbox name: http://<port>-<name>.localhost:<daemon port>/ */
char *pe_daemon_preview_url(pe_daemon *d, const char *name, int port);

/* The NAT address ("10.89.x.y") of running sandbox id, malloc'd; PE_ESTATE
 * if it is not running or has no network of its own. Blocking (reads the
 * runtime's state): worker threads. */
int pe_daemon_sandbox_address(pe_daemon *d, const char *id, char **addr, pe_err *err);

#endif
