/* What lib/http/ws.c needs from the server (server.c). Loop thread only. */
#ifndef PE_HTTP_SERVER_INTERNAL_H
#define PE_HTTP_SERVER_INTERNAL_H

#include <microhttpd.h>

#include "pocketenv/http.h"

/* The loop the server runs on. */
pe_ev_loop *pe__http_loop(pe_http_server *srv);
/* Let MHD process what changed (a resumed connection, a closed upgrade). */
void pe__http_run(pe_http_server *srv);

/* ws.c: a WebSocket whose 101 is queued but whose socket has not come. */
pe_http_ws *pe__ws_new(pe_http_server *srv, const pe_http_ws_callbacks *cb, size_t max_message,
                       void *ud);
/* MHD handed over the socket (plus bytes it read past the headers). */
void pe__ws_attach(pe_http_ws *ws, int fd, const char *extra, size_t extra_len,
                   struct MHD_UpgradeResponseHandle *urh);
/* The connection ended before the upgrade: on_close(1006), free. */
void pe__ws_abort(pe_http_ws *ws);
/* Server shutdown: close every WebSocket (1001) and free them. */
void pe__ws_close_all(pe_http_server *srv);
/* The server's list of live WebSockets, for pe__ws_close_all. */
pe_http_ws **pe__http_ws_list(pe_http_server *srv);

#endif
