/* The web page's files (issue 6): a flat folder, loaded into memory once.
 *
 * pe_web_load reads every servable file of DIR (regular, not hidden, a
 * known extension, bounded in size and count) into a table; requests are
 * answered from that table only. A URL is never turned into a path, so no
 * request can reach a file outside the table: "..", encoded slashes,
 * symlinks and subfolders simply are not in it. Editing the folder takes
 * effect at the next daemon start.
 *
 * The table is immutable after loading: lookups may run on any thread. */
#ifndef PE_DAEMON_WEB_H
#define PE_DAEMON_WEB_H

#include <stdbool.h>
#include <stddef.h>

#include "pocketenv/err.h"

#define PE_WEB_MAX_FILES 64
#define PE_WEB_MAX_FILE (4u << 20)
#define PE_WEB_BANNER_MARK "<!--pocketenv:banner-->"

typedef struct pe_web_file {
    char *name;       /* "index.html" */
    const char *type; /* Content-Type */
    char *body;
    size_t len;
    char etag[36]; /* quoted: "\"<32 hex>\"" */
} pe_web_file;

typedef struct pe_web pe_web;

/* Load dir. banner (may be NULL) replaces PE_WEB_BANNER_MARK in index.html,
 * HTML-escaped. Fails if dir cannot be read or has no index.html. */
pe_web *pe_web_load(const char *dir, const char *banner, pe_err *err);
void pe_web_free(pe_web *w);

/* The banner given to pe_web_load (NULL if none), for clients that do not
 * want the page. */
const char *pe_web_banner(const pe_web *w);

/* The file for a URL path ("/" is index.html), or NULL. The path is the
 * request's, without query string; it is matched, never resolved. */
const pe_web_file *pe_web_lookup(const pe_web *w, const char *url_path);

/* True when an If-None-Match header value (NULL: absent) names f's ETag,
 * i.e. the answer is 304 Not Modified. */
bool pe_web_not_modified(const pe_web_file *f, const char *if_none_match);

/* True when a GET / with this Accept header (NULL: absent) is from a
 * browser and gets the page; curl and friends get the text banner. */
bool pe_web_wants_html(const char *accept);

/* Headers every file answer carries. */
#define PE_WEB_CACHE_CONTROL "no-cache"
#define PE_WEB_CSP                                                                                 \
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "                 \
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

#endif
