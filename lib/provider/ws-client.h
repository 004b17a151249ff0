/* An outbound WebSocket client (provider-ws.c): libcurl connects
 * (CURLOPT_CONNECT_ONLY: TCP, TLS, proxies), the upgrade request is written
 * by hand (custom headers), wslay frames the messages. The provider
 * adapters use it (through pe__ws_open, which adds their credentials and
 * maps their errors), and so does the daemon, to reach another node's
 * terminals and streaming exec (daemon/cluster-relay.c). One connection
 * belongs to one thread at a time; nothing here is shared. */
#ifndef PE_PROVIDER_WS_CLIENT_H
#define PE_PROVIDER_WS_CLIENT_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

#include "pocketenv/err.h"

typedef struct pe__ws pe__ws;

/* Connect to url and upgrade it with headers ("Name: value" lines, NULL
 * ended), blocking for at most timeout_ms. curl_setup (may be NULL) can set
 * options on the handle before it connects. A refused upgrade: -1 with
 * *status its HTTP status and *body (malloc'd) the start of its body; a
 * failed connection or a timeout: -1 with *status 0 and *body NULL (err
 * PE_ETIMEDOUT for a timeout). Blocking: a worker's call. */
int pe_ws_client_open(const char *url, const char *const *headers, int64_t timeout_ms,
                      void (*curl_setup)(void *ud, CURL *c), void *setup_ud, pe__ws **out,
                      long *status, char **body, pe_err *err);
/* Queue one message (opcode: WSLAY_TEXT_FRAME / WSLAY_BINARY_FRAME /
 * WSLAY_CONNECTION_CLOSE with a code) and try to send it. */
int pe__ws_send(pe__ws *w, int opcode, const void *data, size_t len);
int pe__ws_close(pe__ws *w, uint16_t code);
/* The socket to poll, and one round of I/O after poll said so (events:
 * POLLIN/POLLOUT). Messages are handed to on_msg(ud, opcode, data, len);
 * a close frame's data is its 2-byte code then the reason. Returns < 0
 * once the connection ended (closed cleanly or not: see pe__ws_closed). */
int pe__ws_fd(const pe__ws *w);
/* Bytes that came with the handshake's answer wait to be read: poll will
 * not say so, so do not wait for it before the next pe__ws_io. */
bool pe__ws_buffered(const pe__ws *w);
bool pe__ws_want_write(const pe__ws *w);
int pe__ws_io(pe__ws *w, short revents,
              void (*on_msg)(void *ud, int opcode, const unsigned char *data, size_t len),
              void *ud);
bool pe__ws_closed(const pe__ws *w); /* a close frame arrived */
/* A header of the upgrade's answer (x-deno-sandbox-id). */
bool pe__ws_header(const pe__ws *w, const char *name, char *out, size_t size);
/* Wait (poll, up to deadline) and run one round of pe__ws_io. 0 after a
 * round, -1 when the connection ended, -2 at the deadline. */
int pe__ws_step(pe__ws *w, int64_t deadline,
                void (*on_msg)(void *ud, int opcode, const unsigned char *data, size_t len),
                void *ud);
void pe__ws_free(pe__ws *w);

#endif
