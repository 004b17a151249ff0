/* The CLI's client of the daemon's XRPC API (libcurl + jansson).
 *
 * Where and as whom, as upstream's CLI (reference §6.1):
 *   POCKETENV_API_URL   the daemon (default http://127.0.0.1:8789)
 *   POCKETENV_TOKEN     the token; else ~/.pocketenv/token.json {"token"}
 * Commands built on it never touch the store or the runtime directly. */
#ifndef PE_CLI_API_H
#define PE_CLI_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "pocketenv/err.h"

#define PE_API_DEFAULT_URL "http://127.0.0.1:8789"

/* Error codes of API failures, beyond err.h's (pe_err.code). */
enum {
    PE_API_EHTTP = 200, /* the daemon answered an XRPC error: see status/name */
    PE_API_ECONNECT,    /* no daemon there */
    PE_API_ELOGIN,      /* no token: not logged in */
    PE_API_ECUT,        /* the daemon stopped reading an upload and closed */
};

typedef struct pe_api {
    char *url;   /* base, no trailing slash */
    char *token; /* NULL: anonymous */
    void *curl;  /* CURL *, one connection reused for every call */
    long status; /* HTTP status of the last call */
    char error_name[64];
} pe_api;

/* need_token: fail with PE_API_ELOGIN when there is none. */
int pe_api_open(pe_api *a, bool need_token, pe_err *err);
void pe_api_close(pe_api *a);

/* Call nsid. params: an object of string/integer/boolean values for the
 * query string, or NULL. body: JSON for a procedure (NULL: a query, GET).
 * *out gets the parsed answer (NULL for an empty one); on an XRPC error,
 * err holds "message" with code PE_API_EHTTP, a->status and a->error_name
 * are set. Steals neither params nor body. */
int pe_api_call(pe_api *a, const char *nsid, json_t *params, json_t *body, json_t **out,
                pe_err *err);

/* A progress line on stderr for a long transfer (cp), drawn only when
 * stderr is a terminal and not quiet: "sent [####   ]  52%  1.3 MiB /
 * 2.5 MiB", or the bytes alone when total <= 0 (unknown). show may be
 * called as often as wanted (it redraws at most every 100 ms, and at
 * 100%); end clears the line. */
typedef struct pe_progress {
    const char *what; /* "sent", "received" */
    bool on, drawn;
    int64_t last_ms, last_now;
} pe_progress;

void pe_progress_init(pe_progress *p, const char *what, bool quiet);
void pe_progress_show(pe_progress *p, int64_t now, int64_t total);
void pe_progress_end(pe_progress *p);

/* Raw routes outside the XRPC prefix (the cp transfer store), streamed:
 * a thread runs the request while the caller writes the body into *fd
 * (upload: POST, chunked; close *fd at its end) or reads the answer's body
 * from *fd until EOF (download: GET; prog, if not NULL, shows what came).
 * stream_end waits for the request: 0, or err with the daemon's error (its
 * message rather than a broken pipe's), and for an upload the JSON answer
 * in *out. stream_abort before closing *fd makes an upload fail instead of
 * ending the body. The stream is freed by stream_end. */
typedef struct pe_api_stream pe_api_stream;

int pe_api_upload_begin(pe_api *a, const char *path, pe_api_stream **s, int *fd, pe_err *err);
int pe_api_download_begin(pe_api *a, const char *path, pe_progress *prog, pe_api_stream **s,
                          int *fd, pe_err *err);
void pe_api_stream_abort(pe_api_stream *s);
int pe_api_stream_end(pe_api_stream *s, json_t **out, pe_err *err);

/* A secret value: piped standard input, or a prompt that does not echo
 * on a terminal; trailing whitespace trimmed (cli/cmd-res.c). */
char *pe_cli_read_secret(const char *name, size_t *len, pe_err *err);
/* plain sealed (crypto_box_seal, base64url) to the daemon's public key. */
char *pe_cli_seal(pe_api *a, const char *plain, size_t len, pe_err *err);

/* Path of the token file (malloc'd), or NULL if HOME is unset. */
char *pe_api_token_path(void);

#endif
