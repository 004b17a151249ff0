/* The XRPC route and validation table (generated into xrpc-table.c by
 * tools/lexicon-table.py) and the pure validators over it. Nothing here
 * touches a socket: xrpc.c turns raw query arguments and body bytes into
 * validated JSON or an error, so it can be unit-tested and fuzzed
 * (STYLE rule 16). */
#ifndef PE_HTTP_XRPC_INTERNAL_H
#define PE_HTTP_XRPC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#include "pocketenv/http.h"

enum pe_xrpc_type {
    PE_XRPC_T_ANY, /* unions, unknown, unresolved refs: any JSON value */
    PE_XRPC_T_STRING,
    PE_XRPC_T_INTEGER,
    PE_XRPC_T_BOOLEAN,
    PE_XRPC_T_OBJECT,
    PE_XRPC_T_ARRAY,
};

/* String formats of the atproto lexicon spec that are checked (the
 * generator refuses a lexicon with another one on client input). */
enum pe_xrpc_format {
    PE_XRPC_F_NONE = 0,
    PE_XRPC_F_URI,           /* scheme ":" rest, no whitespace, <= 8 KiB */
    PE_XRPC_F_AT_IDENTIFIER, /* a DID or a handle */
    PE_XRPC_F_DID,
    PE_XRPC_F_HANDLE,
};

typedef struct pe_xrpc_schema pe_xrpc_schema;

typedef struct pe_xrpc_prop {
    const char *name;
    int required;
    int nullable;
    const pe_xrpc_schema *schema;
} pe_xrpc_prop;

struct pe_xrpc_schema {
    int type; /* enum pe_xrpc_type */
    int has_min, has_max;
    long long minimum, maximum;       /* integers */
    long long min_length, max_length; /* string bytes or array items; -1: none */
    const char *const *enum_values;   /* strings: NULL-terminated closed set */
    int format;                       /* strings: enum pe_xrpc_format */
    const pe_xrpc_prop *props;        /* objects, sorted by name */
    size_t n_props;
    const pe_xrpc_schema *items; /* arrays */
};

typedef struct pe_xrpc_method {
    const char *nsid;
    int kind; /* enum pe_xrpc_kind */
    const pe_xrpc_prop *params;
    size_t n_params;
    const pe_xrpc_schema *input; /* NULL: no body expected */
    const char *input_encoding;  /* NULL when the lexicon declares no input */
} pe_xrpc_method;

extern const pe_xrpc_method pe__xrpc_methods[];
extern const size_t pe__xrpc_n_methods;

/* The table row for nsid, or NULL. */
const pe_xrpc_method *pe__xrpc_lookup(const char *nsid);

/* NSID syntax (segments of [A-Za-z0-9-], at least three, <= 317 bytes). */
int pe__xrpc_nsid_valid(const char *nsid);

/* One query argument as it came off the wire (already percent-decoded). */
typedef struct pe_xrpc_arg {
    const char *key;
    const char *value; /* NULL for a bare "?key" */
} pe_xrpc_arg;

/* Validate and coerce query arguments against m's parameters into a new
 * JSON object (*out). Unknown arguments are dropped. On failure returns -1
 * and writes a client-facing message into msg. */
int pe__xrpc_params(const pe_xrpc_method *m, const pe_xrpc_arg *args, size_t n, json_t **out,
                    char *msg, size_t msg_size);

/* Whether the string (len bytes) has the format (enum pe_xrpc_format). */
int pe__xrpc_format_ok(int format, const char *s, size_t len);

/* Validate a JSON value against a schema. path names the value in
 * messages ("Input", "Input/file"). Returns 0 or -1 with msg filled. */
int pe__xrpc_validate(const pe_xrpc_schema *s, const json_t *v, const char *path, char *msg,
                      size_t msg_size);

/* Check the Content-Type and parse + validate a body for m. content_type
 * may be NULL. framed: the request declared a body (a Content-Length, 0
 * included, or chunked); an empty body that was not declared is "missing"
 * to @atproto/xrpc-server. An empty body for an input that {} satisfies is
 * {}. Returns 0 with *out (NULL when m declares no input), or -1 with msg
 * filled (always a 400 InvalidRequest). */
int pe__xrpc_body(const pe_xrpc_method *m, const char *content_type, const char *body, size_t len,
                  bool framed, json_t **out, char *msg, size_t msg_size);

/* The one place that maps internal errors to XRPC errors (STYLE rule 5). */
typedef struct pe_xrpc_error {
    unsigned status;
    const char *name;
} pe_xrpc_error;

pe_xrpc_error pe__xrpc_error_for(int code);

#endif
