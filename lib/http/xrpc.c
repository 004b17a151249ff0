/* XRPC routing and validation over the generated lexicon table.
 *
 * Pure functions: raw query arguments and body bytes in, validated JSON or
 * a client-facing message out. No sockets, no allocation that outlives a
 * failed call, so every rule is unit-tested directly (test-http-xrpc.c).
 * Messages follow @atproto/lexicon's wording ("Input/vcpus can not be less
 * than 1") since clients show them to users.
 *
 * The lexicon rules applied are listed in tools/lexicon-table.py. Where we
 * are stricter than upstream it is on purpose: a boolean parameter must be
 * "true" or "false" (upstream reads anything else as false), and a JSON
 * integer must be written without a fraction or exponent. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/xrpc-internal.h"
#include "pocketenv/http.h"

#define PATH_MAX_LEN 256

static int cmp_method(const void *key, const void *elem)
{
    return strcmp(key, ((const pe_xrpc_method *)elem)->nsid);
}

const pe_xrpc_method *pe__xrpc_lookup(const char *nsid)
{
    return bsearch(nsid, pe__xrpc_methods, pe__xrpc_n_methods, sizeof(pe__xrpc_methods[0]),
                   cmp_method);
}

int pe__xrpc_nsid_valid(const char *nsid)
{
    size_t len = strlen(nsid), seg = 0, segs = 1;

    if (len == 0 || len > 317)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = nsid[i];
        if (ch == '.') {
            if (seg == 0 || seg > 63)
                return 0;
            seg = 0;
            segs++;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (ch >= '0' && ch <= '9') || ch == '-') {
            seg++;
        } else {
            return 0;
        }
    }
    return seg > 0 && seg <= 63 && segs >= 3;
}

__attribute__((format(printf, 3, 4))) static int fail(char *msg, size_t size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, size, fmt, ap);
    va_end(ap);
    return -1;
}

/* Decimal integer with optional '-', no '+', no spaces. */
static int parse_int(const char *s, long long *out)
{
    bool neg = false;
    unsigned long long v = 0, limit = (unsigned long long)LLONG_MAX;

    if (*s == '-') {
        neg = true;
        limit++;
        s++;
    }
    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (v > (limit - (unsigned long long)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (unsigned long long)(*s - '0');
    }
    *out = neg ? (long long)(0 - v) : (long long)v;
    return 0;
}

/* ---- string formats (atproto lexicon spec, "String Formats") ---- */

#define URI_MAX 8192
#define DID_MAX 2048
#define HANDLE_MAX 253

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A URI with a scheme (RFC 3986: ALPHA *(ALPHA / DIGIT / "+" / "-" / "."))
 * and something after the colon; no whitespace or control character
 * anywhere. Flexible as the spec is: github:o/r and https://... alike. */
static bool uri_ok(const char *s, size_t len)
{
    size_t i = 0;

    if (len > URI_MAX || len == 0 || !is_alpha(s[0]))
        return false;
    while (i < len &&
           (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.'))
        i++;
    if (i == len || s[i] != ':' || i + 1 == len)
        return false;
    for (; i < len; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return false;
    return true;
}

/* did:<method>:<identifier>: method [a-z]+, identifier of
 * [A-Za-z0-9._:%-], not ending with ':' or '%'. */
static bool did_ok(const char *s, size_t len)
{
    size_t i = 4, m;

    if (len > DID_MAX || len < 7 || memcmp(s, "did:", 4) != 0)
        return false;
    for (m = i; i < len && s[i] >= 'a' && s[i] <= 'z'; i++)
        ;
    if (i == m || i == len || s[i] != ':' || ++i == len)
        return false;
    for (; i < len; i++)
        if (!is_alpha(s[i]) && !is_digit(s[i]) && !strchr("._:%-", s[i]))
            return false;
    return s[len - 1] != ':' && s[len - 1] != '%';
}

/* A domain name: two labels or more of [A-Za-z0-9-] (1 to 63, no '-' at
 * either end), the last not starting with a digit. */
static bool handle_ok(const char *s, size_t len)
{
    size_t start = 0, labels = 0;

    if (len > HANDLE_MAX || len == 0)
        return false;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '.') {
            if (!is_alpha(s[i]) && !is_digit(s[i]) && s[i] != '-')
                return false;
            continue;
        }
        if (i == start || i - start > 63 || s[start] == '-' || s[i - 1] == '-')
            return false;
        labels++;
        if (i == len && is_digit(s[start]))
            return false; /* the top-level label */
        start = i + 1;
    }
    return labels >= 2;
}

int pe__xrpc_format_ok(int format, const char *s, size_t len)
{
    if (memchr(s, '\0', len))
        return 0; /* no format allows a NUL */
    switch (format) {
    case PE_XRPC_F_URI:
        return uri_ok(s, len);
    case PE_XRPC_F_AT_IDENTIFIER:
        return did_ok(s, len) || handle_ok(s, len);
    case PE_XRPC_F_DID:
        return did_ok(s, len);
    case PE_XRPC_F_HANDLE:
        return handle_ok(s, len);
    default:
        return 1;
    }
}

static const char *format_words(int format)
{
    switch (format) {
    case PE_XRPC_F_URI:
        return "a uri";
    case PE_XRPC_F_AT_IDENTIFIER:
        return "a valid did or a handle";
    case PE_XRPC_F_DID:
        return "a valid did";
    default:
        return "a valid handle";
    }
}

static int check_string(const pe_xrpc_schema *s, const char *v, size_t len, const char *path,
                        char *msg, size_t size)
{
    if (s->format && !pe__xrpc_format_ok(s->format, v, len))
        return fail(msg, size, "%s must be %s", path, format_words(s->format));
    if (s->max_length >= 0 && (long long)len > s->max_length)
        return fail(msg, size, "%s must not be longer than %lld characters", path, s->max_length);
    if (s->min_length >= 0 && (long long)len < s->min_length)
        return fail(msg, size, "%s must not be shorter than %lld characters", path, s->min_length);
    if (s->enum_values) {
        char list[512] = "";
        size_t used = 0;
        for (const char *const *e = s->enum_values; *e; e++) {
            if (strlen(*e) == len && memcmp(*e, v, len) == 0)
                return 0;
            used += (size_t)snprintf(list + used, used < sizeof(list) ? sizeof(list) - used : 0,
                                     "%s%s", e == s->enum_values ? "" : "|", *e);
            if (used >= sizeof(list))
                used = sizeof(list) - 1;
        }
        return fail(msg, size, "%s must be one of (%s)", path, list);
    }
    return 0;
}

static int check_integer(const pe_xrpc_schema *s, long long v, const char *path, char *msg,
                         size_t size)
{
    if (s->has_min && v < s->minimum)
        return fail(msg, size, "%s can not be less than %lld", path, s->minimum);
    if (s->has_max && v > s->maximum)
        return fail(msg, size, "%s can not be greater than %lld", path, s->maximum);
    return 0;
}

static const char *type_word(int type)
{
    switch (type) {
    case PE_XRPC_T_STRING:
        return "a string";
    case PE_XRPC_T_INTEGER:
        return "an integer";
    case PE_XRPC_T_BOOLEAN:
        return "a boolean";
    case PE_XRPC_T_OBJECT:
        return "an object";
    case PE_XRPC_T_ARRAY:
        return "an array";
    default:
        return "a value";
    }
}

static int validate_object(const pe_xrpc_schema *s, const json_t *v, const char *path, char *msg,
                           size_t size)
{
    char sub[PATH_MAX_LEN];

    for (size_t i = 0; i < s->n_props; i++) {
        const pe_xrpc_prop *p = &s->props[i];
        const json_t *pv = json_object_get(v, p->name);

        if (pv == NULL) {
            if (p->required)
                return fail(msg, size, "%s must have the property \"%s\"", path, p->name);
            continue;
        }
        if (json_is_null(pv) && p->nullable)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, p->name);
        if (pe__xrpc_validate(p->schema, pv, sub, msg, size) < 0)
            return -1;
    }
    return 0;
}

static int validate_array(const pe_xrpc_schema *s, const json_t *v, const char *path, char *msg,
                          size_t size)
{
    char sub[PATH_MAX_LEN];
    size_t n = json_array_size(v);

    if (s->max_length >= 0 && (long long)n > s->max_length)
        return fail(msg, size, "%s must not have more than %lld elements", path, s->max_length);
    if (s->min_length >= 0 && (long long)n < s->min_length)
        return fail(msg, size, "%s must not have fewer than %lld elements", path, s->min_length);
    for (size_t i = 0; i < n && s->items; i++) {
        snprintf(sub, sizeof(sub), "%s/%zu", path, i);
        if (pe__xrpc_validate(s->items, json_array_get(v, i), sub, msg, size) < 0)
            return -1;
    }
    return 0;
}

int pe__xrpc_validate(const pe_xrpc_schema *s, const json_t *v, const char *path, char *msg,
                      size_t size)
{
    switch (s->type) {
    case PE_XRPC_T_STRING:
        if (!json_is_string(v))
            break;
        return check_string(s, json_string_value(v), json_string_length(v), path, msg, size);
    case PE_XRPC_T_INTEGER:
        if (!json_is_integer(v))
            break;
        return check_integer(s, (long long)json_integer_value(v), path, msg, size);
    case PE_XRPC_T_BOOLEAN:
        if (!json_is_boolean(v))
            break;
        return 0;
    case PE_XRPC_T_OBJECT:
        if (!json_is_object(v))
            break;
        return validate_object(s, v, path, msg, size);
    case PE_XRPC_T_ARRAY:
        if (!json_is_array(v))
            break;
        return validate_array(s, v, path, msg, size);
    default:
        return 0;
    }
    return fail(msg, size, "%s must be %s", path, type_word(s->type));
}

static const char *find_arg(const pe_xrpc_arg *args, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(args[i].key, key) == 0)
            return args[i].value ? args[i].value : "";
    return NULL;
}

/* One parameter: coerce the text to the declared type, then validate. */
static json_t *param_value(const pe_xrpc_prop *p, const char *text, char *msg, size_t size)
{
    char path[PATH_MAX_LEN];
    long long iv;
    json_t *v = NULL;

    snprintf(path, sizeof(path), "Params/%s", p->name);
    switch (p->schema->type) {
    case PE_XRPC_T_INTEGER:
        if (parse_int(text, &iv) < 0) {
            fail(msg, size, "%s must be an integer", path);
            return NULL;
        }
        v = json_integer(iv);
        break;
    case PE_XRPC_T_BOOLEAN:
        if (strcmp(text, "true") != 0 && strcmp(text, "false") != 0) {
            fail(msg, size, "%s must be a boolean", path);
            return NULL;
        }
        v = json_boolean(text[0] == 't');
        break;
    default: /* strings, and "any" which only a string can express here */
        v = json_string(text);
        if (v == NULL) {
            fail(msg, size, "%s must be valid UTF-8", path);
            return NULL;
        }
        break;
    }
    if (pe__xrpc_validate(p->schema, v, path, msg, size) < 0) {
        json_decref(v);
        return NULL;
    }
    return v;
}

int pe__xrpc_params(const pe_xrpc_method *m, const pe_xrpc_arg *args, size_t n, json_t **out,
                    char *msg, size_t size)
{
    json_t *obj = json_object();

    for (size_t i = 0; i < m->n_params; i++) {
        const pe_xrpc_prop *p = &m->params[i];
        const char *text = find_arg(args, n, p->name);
        json_t *v;

        if (text == NULL) {
            if (p->required) {
                json_decref(obj);
                return fail(msg, size, "Params must have the property \"%s\"", p->name);
            }
            continue;
        }
        v = param_value(p, text, msg, size);
        if (v == NULL) {
            json_decref(obj);
            return -1;
        }
        json_object_set_new(obj, p->name, v);
    }
    *out = obj;
    return 0;
}

/* "application/json; charset=utf-8" matches "application/json". */
static bool media_type_is(const char *content_type, const char *want)
{
    size_t len = strcspn(content_type, ";");

    while (len > 0 && (content_type[len - 1] == ' ' || content_type[len - 1] == '\t'))
        len--;
    while (len > 0 && (*content_type == ' ' || *content_type == '\t')) {
        content_type++;
        len--;
    }
    return len == strlen(want) && strncasecmp(content_type, want, len) == 0;
}

/* Whether an empty body stands for {}: a JSON object input without a
 * required property (startSandbox: {repo?, keepAlive?}). Clients send such
 * calls with no body at all (the SDK's sandbox.start()). */
static bool empty_means_object(const pe_xrpc_method *m)
{
    if (!media_type_is(m->input_encoding, "application/json"))
        return false;
    if (m->input == NULL)
        return true;
    if (m->input->type != PE_XRPC_T_OBJECT)
        return false;
    for (size_t i = 0; i < m->input->n_props; i++)
        if (m->input->props[i].required)
            return false;
    return true;
}

/* As @atproto/xrpc-server reads a body (its util.ts): a request that
 * frames no body at all is refused before anything else; an empty one
 * (Content-Length: 0) goes through the Content-Type check and is parsed
 * as {} (express's JSON parser), so a missing required property is what
 * it is told. Where {} is a valid input, an empty body is {} however it
 * came (no Content-Length, no Content-Type: nothing to decode), as the
 * SDK's body-less procedures expect; a Content-Type, if given, must fit. */
int pe__xrpc_body(const pe_xrpc_method *m, const char *content_type, const char *body, size_t len,
                  bool framed, json_t **out, char *msg, size_t size)
{
    json_error_t jerr;
    json_t *v;

    *out = NULL;
    if (m->input_encoding == NULL)
        return 0; /* no input declared: a body, if any, is ignored */
    if (content_type && *content_type == '\0')
        content_type = NULL;
    if (len == 0 && empty_means_object(m)) {
        if (content_type && !media_type_is(content_type, m->input_encoding))
            return fail(msg, size, "Wrong request encoding (Content-Type): %s", content_type);
        *out = json_object();
        return 0;
    }
    if (len == 0 && !framed)
        return fail(msg, size, "A request body is expected but none was provided");
    if (content_type == NULL)
        return fail(msg, size, "Request encoding (Content-Type) required but not provided");
    if (!media_type_is(content_type, m->input_encoding))
        return fail(msg, size, "Wrong request encoding (Content-Type): %s", content_type);
    if (m->input == NULL || !media_type_is(m->input_encoding, "application/json"))
        return 0;
    /* Duplicate keys: which one wins is each parser's guess (jansson keeps
     * the last, others the first), so a body that says two things is
     * refused rather than read one way here and another elsewhere. */
    v = len == 0 ? json_object() : json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL)
        return fail(msg, size, "Malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
                    jerr.text);
    if (pe__xrpc_validate(m->input, v, "Input", msg, size) < 0) {
        json_decref(v);
        return -1;
    }
    *out = v;
    return 0;
}

pe_xrpc_error pe__xrpc_error_for(int code)
{
    switch (code) {
    case PE_EINVAL:
    case PE_ESTATE:
    case PE_ENOEXEC:
        return (pe_xrpc_error){400, "InvalidRequest"};
    case PE_EUNSUP:
        return (pe_xrpc_error){400, "NotSupported"};
    case PE_XRPC_EAUTH:
        return (pe_xrpc_error){401, "AuthenticationRequired"};
    case PE_XRPC_EFORBIDDEN:
        return (pe_xrpc_error){403, "Forbidden"};
    case PE_ENOENT:
        return (pe_xrpc_error){404, "NotFound"};
    case PE_XRPC_ENOMETHOD:
        return (pe_xrpc_error){404, "XRPCNotSupported"};
    case PE_EEXIST:
        return (pe_xrpc_error){409, "AlreadyExists"};
    case PE_XRPC_ETOOBIG:
        return (pe_xrpc_error){413, "PayloadTooLarge"};
    case PE_XRPC_ERATE:
        return (pe_xrpc_error){429, "RateLimitExceeded"};
    case PE_XRPC_ENOTIMPL:
        return (pe_xrpc_error){501, "MethodNotImplemented"};
    /* Where a sandbox runs lacks what was asked (lib/provider: "not
     * supported by daytona: pause"): the server cannot do it for this
     * sandbox, the request itself was fine. */
    case PE_ENOTCAP:
        return (pe_xrpc_error){501, "NotSupported"};
    /* The provider failed or rejected our credential: not the client's
     * fault nor its credential, so never 4xx (a 401 would read as "your
     * token is bad"). */
    case PE_XRPC_EUPSTREAM:
    case PE_EREMOTE:
    case PE_EAUTH:
        return (pe_xrpc_error){502, "UpstreamFailure"};
    case PE_ETIMEDOUT:
        return (pe_xrpc_error){504, "UpstreamTimeout"};
    case PE_XRPC_EBUSY:
        return (pe_xrpc_error){503, "NotEnoughResources"};
    default:
        return (pe_xrpc_error){500, "InternalServerError"};
    }
}
