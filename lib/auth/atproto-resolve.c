/* AT Protocol identity resolution over HTTP: the well-known handle URL,
 * DID documents from the PLC directory or did:web, and the PDS endpoint
 * (contract in include/pocketenv/atproto.h).
 *
 * Requests go through pe__atproto_http (atproto-http.c: bounded body,
 * deadline, no redirects, https only unless the configuration allows http
 * for a local PDS). Nothing here is cached: the daemon resolves at sign-in
 * only.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/atproto-internal.h"
#include "core/util.h"

/* ---- syntax ---- */

static bool label_valid(const char *s, size_t n)
{
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-')
            return false;
    return true;
}

bool pe_atproto_handle_valid(const char *handle)
{
    size_t len = strnlen(handle, PE_ATPROTO_HANDLE_MAX);
    const char *p = handle, *last = NULL;
    int labels = 0;

    if (len == 0 || len >= PE_ATPROTO_HANDLE_MAX)
        return false;
    for (;;) {
        const char *dot = memchr(p, '.', (size_t)(handle + len - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(handle + len - p);
        if (!label_valid(p, n))
            return false;
        labels++;
        last = p;
        if (dot == NULL)
            break;
        p = dot + 1;
    }
    return labels >= 2 && isalpha((unsigned char)last[0]);
}

bool pe_atproto_did_valid(const char *did)
{
    size_t len = strnlen(did, PE_AUTH_DID_MAX);

    if (len >= PE_AUTH_DID_MAX)
        return false;
    if (strncmp(did, "did:plc:", 8) == 0) {
        if (len != 8 + 24)
            return false;
        for (size_t i = 8; i < len; i++)
            if (!((did[i] >= 'a' && did[i] <= 'z') || (did[i] >= '2' && did[i] <= '7')))
                return false;
        return true;
    }
    if (strncmp(did, "did:web:", 8) == 0) {
        /* A hostname, optionally "%3A" and a port (localhost in
         * development); atproto allows no path in did:web. */
        char host[PE_ATPROTO_HANDLE_MAX];
        const char *pct = strstr(did + 8, "%3A");
        size_t n = pct ? (size_t)(pct - did - 8) : len - 8;
        if (n == 0 || n >= sizeof host)
            return false;
        if (pct != NULL) {
            const char *port = pct + 3;
            size_t digits = strspn(port, "0123456789");
            if (digits == 0 || digits > 5 || port[digits] != '\0')
                return false;
        }
        memcpy(host, did + 8, n);
        host[n] = '\0';
        return pe_atproto_handle_valid(host) || strcmp(host, "localhost") == 0;
    }
    return false;
}

/* GET url into a NUL-terminated buffer of at most max bytes (caller frees
 * *out). Any status but 200 fails: 404 with PE_ENOENT. */
static int http_get(const pe_atproto_cfg *cfg, const char *url, size_t max, char **out, pe_err *err)
{
    pe__atproto_req rq = {.method = "GET", .url = url, .max = max};
    pe__atproto_resp rs = {0};

    if (pe__atproto_http(cfg, &rq, &rs, err) < 0)
        return -1;
    if (rs.status != 200) {
        free(rs.body);
        return pe_err_set(err, rs.status == 404 ? PE_ENOENT : PE_EREMOTE, 0, "GET %s: status %ld",
                          url, rs.status);
    }
    *out = rs.body;
    return 0;
}

/* ---- handle -> DID ---- */

static int wellknown_did(const pe_atproto_cfg *cfg, const char *handle, char did[PE_AUTH_DID_MAX],
                         pe_err *err)
{
    char url[PE_ATPROTO_URL_MAX];
    cleanup_free char *txt = NULL;
    size_t len;

    snprintf(url, sizeof url, "https://%s/.well-known/atproto-did", handle);
    if (cfg->allow_http)
        snprintf(url, sizeof url, "http://%s/.well-known/atproto-did", handle);
    if (http_get(cfg, url, PE_ATPROTO_WELLKNOWN_MAX, &txt, err) < 0)
        return -1;
    len = strlen(txt);
    while (len > 0 && isspace((unsigned char)txt[len - 1]))
        txt[--len] = '\0';
    if (!pe_atproto_did_valid(txt))
        return pe_err_set(err, PE_EREMOTE, 0, "GET %s: the answer is not a DID", url);
    memcpy(did, txt, len + 1);
    return 0;
}

static void lower(char *dst, const char *src, size_t n)
{
    size_t i = 0;
    for (; src[i] != '\0' && i + 1 < n; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = '\0';
}

int pe_atproto_resolve_handle(const pe_atproto_cfg *cfg, const char *handle,
                              char did[PE_AUTH_DID_MAX], pe_err *err)
{
    char h[PE_ATPROTO_HANDLE_MAX];
    int rc;

    if (!pe_atproto_handle_valid(handle))
        return pe_err_set(err, PE_EINVAL, 0, "\"%.64s\" is not a handle (like alice.example.com)",
                          handle);
    lower(h, handle, sizeof h);
    rc = pe__atproto_dns_did(cfg, h, did, err);
    if (rc != 0)
        return rc < 0 ? pe_err_prefix(err, "resolve handle %s", h) : 0;
    if (wellknown_did(cfg, h, did, err) < 0)
        return pe_err_prefix(err, "resolve handle %s", h);
    return 0;
}

/* ---- DID -> document -> PDS ---- */

static int doc_url(const pe_atproto_cfg *cfg, const char *did, char *url, size_t n, pe_err *err)
{
    const char *plc = cfg->plc_url ? cfg->plc_url : PE_ATPROTO_PLC_DEFAULT;
    char host[PE_AUTH_DID_MAX];
    const char *pct;

    if (strncmp(did, "did:plc:", 8) == 0) {
        if ((size_t)snprintf(url, n, "%s/%s", plc, did) >= n)
            return pe_err_set(err, PE_EINVAL, 0, "PLC directory URL too long");
        return 0;
    }
    /* did:web:HOST or did:web:HOST%3APORT -> HOST[:PORT] */
    snprintf(host, sizeof host, "%s", did + 8);
    if ((pct = strstr(host, "%3A")) != NULL) {
        char *p = host + (pct - host);
        p[0] = ':';
        memmove(p + 1, p + 3, strlen(p + 3) + 1);
    }
    snprintf(url, n, "%s://%s/.well-known/did.json", cfg->allow_http ? "http" : "https", host);
    return 0;
}

/* The PDS endpoint: an http(s) URL with a host and nothing after it. */
static int endpoint_ok(const pe_atproto_cfg *cfg, const char *url, char out[PE_ATPROTO_URL_MAX])
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *user = NULL, *query = NULL, *frag = NULL, *path = NULL;
    bool ok = false;

    if (u == NULL || strlen(url) >= PE_ATPROTO_URL_MAX)
        goto out;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
        goto out;
    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    curl_url_get(u, CURLUPART_HOST, &host, 0);
    curl_url_get(u, CURLUPART_USER, &user, 0);
    curl_url_get(u, CURLUPART_QUERY, &query, 0);
    curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0);
    curl_url_get(u, CURLUPART_PATH, &path, 0);
    ok = scheme && host && !user && !query && !frag && (!path || strcmp(path, "/") == 0) &&
         (strcmp(scheme, "https") == 0 || (cfg->allow_http && strcmp(scheme, "http") == 0));
    if (ok) {
        size_t len = strlen(url);
        memcpy(out, url, len + 1);
        if (len > 0 && out[len - 1] == '/')
            out[len - 1] = '\0';
    }
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(query);
    curl_free(frag);
    curl_free(path);
    curl_url_cleanup(u);
    return ok ? 0 : -1;
}

static bool is_pds_service(json_t *svc, const char *did)
{
    const char *id = json_string_value(json_object_get(svc, "id"));
    const char *type = json_string_value(json_object_get(svc, "type"));
    size_t dl = strlen(did);

    if (id == NULL || type == NULL || strcmp(type, "AtprotoPersonalDataServer") != 0)
        return false;
    return strcmp(id, "#atproto_pds") == 0 ||
           (strncmp(id, did, dl) == 0 && strcmp(id + dl, "#atproto_pds") == 0);
}

static int doc_pds(const pe_atproto_cfg *cfg, json_t *doc, const char *did,
                   char pds[PE_ATPROTO_URL_MAX], pe_err *err)
{
    json_t *svcs = json_object_get(doc, "service"), *svc;
    size_t i;

    json_array_foreach(svcs, i, svc)
    {
        const char *ep;
        if (!is_pds_service(svc, did))
            continue;
        ep = json_string_value(json_object_get(svc, "serviceEndpoint"));
        if (ep == NULL || endpoint_ok(cfg, ep, pds) < 0)
            return pe_err_set(err, PE_EREMOTE, 0,
                              "the DID document's PDS endpoint is not an %s URL",
                              cfg->allow_http ? "http(s)" : "https");
        return 0;
    }
    return pe_err_set(err, PE_ENOENT, 0, "the DID document names no PDS");
}

/* The first "at://HANDLE" of alsoKnownAs, lower case; "" when none. */
static void doc_handle(json_t *doc, char handle[PE_ATPROTO_HANDLE_MAX])
{
    json_t *aka = json_object_get(doc, "alsoKnownAs"), *v;
    size_t i;

    handle[0] = '\0';
    json_array_foreach(aka, i, v)
    {
        const char *s = json_string_value(v);
        if (s != NULL && strncmp(s, "at://", 5) == 0 && pe_atproto_handle_valid(s + 5)) {
            lower(handle, s + 5, PE_ATPROTO_HANDLE_MAX);
            return;
        }
    }
}

int pe_atproto_resolve_did(const pe_atproto_cfg *cfg, const char *did, char pds[PE_ATPROTO_URL_MAX],
                           char handle[PE_ATPROTO_HANDLE_MAX], pe_err *err)
{
    char url[PE_ATPROTO_URL_MAX];
    cleanup_free char *txt = NULL;
    json_error_t jerr;
    json_t *doc = NULL;
    const char *id;
    int rc = -1;

    if (!pe_atproto_did_valid(did))
        return pe_err_set(err, PE_EINVAL, 0, "\"%.64s\" is not a did:plc or did:web DID", did);
    if (doc_url(cfg, did, url, sizeof url, err) < 0 ||
        http_get(cfg, url, PE_ATPROTO_DOC_MAX, &txt, err) < 0)
        return pe_err_prefix(err, "resolve %s", did);
    doc = json_loads(txt, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        pe_err_set(err, PE_EREMOTE, 0, "resolve %s: %s is not a DID document", did, url);
        goto out;
    }
    id = json_string_value(json_object_get(doc, "id"));
    if (id == NULL || strcmp(id, did) != 0) {
        /* A directory or host answering with another identity's document
         * would hand that identity's sign-in to whoever controls it. */
        pe_err_set(err, PE_EREMOTE, 0, "resolve %s: %s answered the document of another DID", did,
                   url);
        goto out;
    }
    if (doc_pds(cfg, doc, did, pds, err) < 0) {
        pe_err_prefix(err, "resolve %s", did);
        goto out;
    }
    doc_handle(doc, handle);
    rc = 0;
out:
    json_decref(doc);
    return rc;
}

int pe_atproto_resolve(const pe_atproto_cfg *cfg, const char *handle_or_did,
                       pe_atproto_identity *out, pe_err *err)
{
    char claimed[PE_ATPROTO_HANDLE_MAX], back[PE_AUTH_DID_MAX];
    bool is_did = strncmp(handle_or_did, "did:", 4) == 0;
    pe_err ignored = {0};

    memset(out, 0, sizeof *out);
    if (is_did)
        snprintf(out->did, sizeof out->did, "%s", handle_or_did);
    else if (pe_atproto_resolve_handle(cfg, handle_or_did, out->did, err) < 0)
        return -1;
    if (pe_atproto_resolve_did(cfg, out->did, out->pds, claimed, err) < 0)
        return -1;
    if (!is_did) {
        char asked[PE_ATPROTO_HANDLE_MAX];
        lower(asked, handle_or_did, sizeof asked);
        if (strcmp(claimed, asked) != 0)
            return pe_err_set(err, PE_EREMOTE, 0,
                              "resolve handle %s: %s's DID document does not name it back", asked,
                              out->did);
        memcpy(out->handle, asked, sizeof asked);
        return 0;
    }
    /* Given a DID: its claimed handle counts only if it resolves back. */
    if (claimed[0] != '\0' && pe_atproto_resolve_handle(cfg, claimed, back, &ignored) == 0 &&
        strcmp(back, out->did) == 0)
        memcpy(out->handle, claimed, sizeof claimed);
    else
        snprintf(out->handle, sizeof out->handle, "handle.invalid");
    return 0;
}
