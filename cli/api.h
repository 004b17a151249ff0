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

#include "pocketenv/err.h"

#define PE_API_DEFAULT_URL "http://127.0.0.1:8789"

/* Error codes of API failures, beyond err.h's (pe_err.code). */
enum {
    PE_API_EHTTP = 200, /* the daemon answered an XRPC error: see status/name */
    PE_API_ECONNECT,    /* no daemon there */
    PE_API_ELOGIN,      /* no token: not logged in */
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

/* Raw routes outside the XRPC prefix (the cp transfer store). POST data to path
 * and parse the JSON answer into *out; GET path into *data, *len
 * (malloc'd). A progress line goes to stderr when it is a terminal. */
int pe_api_post_raw(pe_api *a, const char *path, const void *data, size_t len, json_t **out,
                    pe_err *err);
int pe_api_get_raw(pe_api *a, const char *path, char **data, size_t *len, pe_err *err);

/* A secret value: piped standard input, or a prompt that does not echo
 * on a terminal; trailing whitespace trimmed (cli/cmd-res.c). */
char *pe_cli_read_secret(const char *name, size_t *len, pe_err *err);
/* plain sealed (crypto_box_seal, base64url) to the daemon's public key. */
char *pe_cli_seal(pe_api *a, const char *plain, size_t len, pe_err *err);

/* Path of the token file (malloc'd), or NULL if HOME is unset. */
char *pe_api_token_path(void);

#endif
