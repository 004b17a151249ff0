/* Reading a public record from its repository (issue 18: templates by
 * at:// URI). The URI's authority is resolved to its PDS (resolve.c), the
 * record fetched with com.atproto.repo.getRecord, and the answer is
 * distrusted like every other: bounded, with a deadline, JSON with a CID,
 * a value of the asked collection, and a uri naming exactly the record
 * asked for (a PDS answering with another repository's record, or another
 * record, is refused). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atproto-internal.h"
#include "core/util.h"

#define RECORD_ANSWER_MAX (64 * 1024)

static bool nsid_valid(const char *s, size_t n)
{
    size_t dots = 0;

    if (n == 0 || n > 317)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.')
            dots++;
        else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-'))
            return false;
    }
    return dots >= 2;
}

/* The spec's record key: 1-512 of [A-Za-z0-9._:~-], not "." or "..". */
static bool rkey_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 512 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:~-") == n;
}

int pe_atproto_uri_parse(const char *uri, pe_atproto_uri *out, pe_err *err)
{
    const char *a, *c, *r;

    memset(out, 0, sizeof *out);
    if (uri == NULL || strncmp(uri, "at://", 5) != 0)
        return pe_err_set(err, PE_EINVAL, 0, "not an at:// URI");
    a = uri + 5;
    if ((c = strchr(a, '/')) == NULL || (r = strchr(c + 1, '/')) == NULL ||
        strchr(r + 1, '/') != NULL)
        return pe_err_set(err, PE_EINVAL, 0,
                          "an at:// URI of a record is at://DID/COLLECTION/RKEY");
    if ((size_t)(c - a) >= sizeof out->authority || (size_t)(r - c - 1) >= sizeof out->collection ||
        strlen(r + 1) >= sizeof out->rkey)
        return pe_err_set(err, PE_EINVAL, 0, "at:// URI too long");
    memcpy(out->authority, a, (size_t)(c - a));
    memcpy(out->collection, c + 1, (size_t)(r - c - 1));
    snprintf(out->rkey, sizeof out->rkey, "%s", r + 1);
    if (!(pe_atproto_did_valid(out->authority) || pe_atproto_handle_valid(out->authority)))
        return pe_err_set(err, PE_EINVAL, 0, "at:// URI: %.64s is neither a DID nor a handle",
                          out->authority);
    if (!nsid_valid(out->collection, strlen(out->collection)) || !rkey_valid(out->rkey))
        return pe_err_set(err, PE_EINVAL, 0, "at:// URI: not a collection and record key");
    return 0;
}

/* The answer of getRecord for u (whose authority is did), checked. */
static int take_record(const char *body, const char *did, const pe_atproto_uri *u,
                       pe_atproto_record *out, pe_err *err)
{
    json_t *v = json_loads(body, 0, NULL), *value = json_object_get(v, "value");
    const char *uri = json_string_value(json_object_get(v, "uri"));
    const char *cid = json_string_value(json_object_get(v, "cid"));
    const char *type = json_string_value(json_object_get(value, "$type"));
    cleanup_free char *want = pe_xasprintf("at://%s/%s/%s", did, u->collection, u->rkey);
    int rc = -1;

    if (!json_is_object(value) || uri == NULL || cid == NULL)
        pe_err_set(err, PE_EREMOTE, 0, "getRecord: the PDS answered something not a record");
    else if (strcmp(uri, want) != 0)
        pe_err_set(err, PE_EREMOTE, 0, "getRecord: the PDS answered another record than %s", want);
    else if (type == NULL || strcmp(type, u->collection) != 0)
        pe_err_set(err, PE_EREMOTE, 0, "getRecord: the record is not a %s", u->collection);
    else if (cid[0] != 'b' || strlen(cid) > 128 ||
             strspn(cid, "abcdefghijklmnopqrstuvwxyz234567") != strlen(cid))
        pe_err_set(err, PE_EREMOTE, 0, "getRecord: the PDS answered a CID that is not one");
    else {
        snprintf(out->uri, sizeof out->uri, "%s", want);
        snprintf(out->cid, sizeof out->cid, "%s", cid);
        out->value = json_incref(value);
        rc = 0;
    }
    json_decref(v);
    return rc;
}

int pe_atproto_get_record(const pe_atproto_cfg *cfg, const char *uri, pe_atproto_record *out,
                          pe_err *err)
{
    pe_atproto_uri u;
    pe_atproto_identity id;
    char handle[PE_ATPROTO_HANDLE_MAX];
    cleanup_free char *url = NULL;
    pe__atproto_req rq = {.method = "GET", .max = RECORD_ANSWER_MAX};
    pe__atproto_resp rs = {0};
    int rc;

    memset(out, 0, sizeof *out);
    if (pe_atproto_uri_parse(uri, &u, err) < 0)
        return -1;
    /* A DID: its document's PDS; a handle: verified both ways first. */
    if (pe_atproto_did_valid(u.authority)) {
        snprintf(id.did, sizeof id.did, "%s", u.authority);
        if (pe_atproto_resolve_did(cfg, id.did, id.pds, handle, err) < 0)
            return pe_err_prefix(err, "record %.200s", uri);
    } else if (pe_atproto_resolve(cfg, u.authority, &id, err) < 0) {
        return pe_err_prefix(err, "record %.200s", uri);
    }
    /* The parts were checked to the character: nothing to escape. */
    url = pe_xasprintf("%s/xrpc/com.atproto.repo.getRecord?repo=%s&collection=%s&rkey=%s", id.pds,
                       id.did, u.collection, u.rkey);
    rq.url = url;
    if (pe__atproto_http(cfg, &rq, &rs, err) < 0)
        return pe_err_prefix(err, "record %.200s", uri);
    if (rs.status == 400 || rs.status == 404)
        rc = pe_err_set(err, PE_ENOENT, 0, "record %.200s: not in its repository", uri);
    else if (rs.status != 200)
        rc = pe_err_set(err, PE_EREMOTE, 0, "record %.200s: status %ld from its PDS", uri,
                        rs.status);
    else
        rc = take_record(rs.body, id.did, &u, out, err) < 0
                 ? pe_err_prefix(err, "record %.200s", uri)
                 : 0;
    free(rs.body);
    return rc;
}
