/* Strict request-head checks and the in-memory body budget (see
 * request-check.h). Loop thread only, like the server that calls them. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"
#include "http/request-check.h"

#define BUDGET_BUCKETS 256

__attribute__((format(printf, 4, 5))) static int refuse(int status, char *msg, size_t size,
                                                        const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, size, fmt, ap);
    va_end(ap);
    return status;
}

static bool is_ctl(unsigned char ch)
{
    return ch < 0x20 || ch == 0x7f;
}

int pe__http_check_target(const char *target, char *msg, size_t size)
{
    for (const char *p = target; *p; p++) {
        if (is_ctl((unsigned char)*p))
            return refuse(400, msg, size, "control character in the request target");
        if (p[0] == '%' && p[1] == '0' && p[2] == '0')
            return refuse(400, msg, size, "%%00 (NUL) in the request target");
    }
    return 0;
}

/* RFC 9110 token characters: the only ones a header name may have. */
static bool is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

int pe__http_check_header(pe_http_framing *f, const char *name, size_t name_len, const char *value,
                          size_t value_len, char *msg, size_t size)
{
    if (name_len == 0)
        return refuse(400, msg, size, "empty header name");
    for (size_t i = 0; i < name_len; i++)
        if (!is_tchar((unsigned char)name[i]))
            return refuse(400, msg, size, "invalid character in a header name");
    for (size_t i = 0; i < value_len; i++)
        if (is_ctl((unsigned char)value[i]) && value[i] != '\t')
            return refuse(400, msg, size, "control character in the value of header %.64s", name);
    if (strcasecmp(name, "Content-Length") == 0) {
        f->n_content_length++;
        f->content_length = value;
    } else if (strcasecmp(name, "Transfer-Encoding") == 0) {
        f->n_transfer_encoding++;
        f->transfer_encoding = value;
    } else if (strcasecmp(name, "Host") == 0) {
        f->n_host++;
    }
    return 0;
}

int pe__http_check_framing(const pe_http_framing *f, bool http10, char *msg, size_t size)
{
    if (f->n_content_length > 1)
        return refuse(400, msg, size, "more than one Content-Length header");
    if (f->n_host > 1)
        return refuse(400, msg, size, "more than one Host header");
    if (f->n_transfer_encoding == 0)
        return 0;
    if (f->n_transfer_encoding > 1)
        return refuse(400, msg, size, "more than one Transfer-Encoding header");
    if (f->n_content_length > 0)
        return refuse(400, msg, size, "Transfer-Encoding together with Content-Length");
    if (http10)
        return refuse(400, msg, size, "Transfer-Encoding in an HTTP/1.0 request");
    /* libmicrohttpd decodes exactly "chunked" (any case), nothing else:
     * no other coding, no list, no padding it would read differently. */
    if (strcasecmp(f->transfer_encoding, "chunked") != 0)
        return refuse(501, msg, size, "Transfer-Encoding \"%.64s\" is not supported (only chunked)",
                      f->transfer_encoding);
    return 0;
}

static int span_cmp(const void *a, const void *b)
{
    const pe_http_span *x = a, *y = b;

    return x->off < y->off ? -1 : x->off > y->off;
}

int pe__http_check_hidden(const char *head, size_t head_len, pe_http_span *spans, size_t n,
                          char *msg, size_t size)
{
    qsort(spans, n, sizeof(*spans), span_cmp);
    for (size_t i = 0; i < n; i++) {
        size_t from = spans[i].off + spans[i].len;
        size_t to = i + 1 < n ? spans[i + 1].off : head_len;
        for (size_t j = from; j < to && j < head_len; j++) {
            unsigned char ch = (unsigned char)head[j];
            if (ch == '\0' || ch == '\r' || ch == '\n' || ch == ' ' || ch == '\t' ||
                (spans[i].name && ch == ':'))
                continue;
            return refuse(400, msg, size,
                          "a NUL byte or a folded line (obs-fold) in the request head");
        }
    }
    return 0;
}

/* ---- the body budget ---- */

struct budget_entry {
    struct budget_entry *next;
    size_t bytes;
    char client[];
};

struct pe_http_budget {
    size_t total, total_max, per_client_max;
    struct budget_entry *tab[BUDGET_BUCKETS];
};

pe_http_budget *pe__http_budget_new(size_t total_max, size_t per_client_max)
{
    pe_http_budget *b = pe_xcalloc(1, sizeof(*b));

    b->total_max = total_max;
    b->per_client_max = per_client_max;
    return b;
}

void pe__http_budget_free(pe_http_budget *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < BUDGET_BUCKETS; i++) {
        while (b->tab[i]) {
            struct budget_entry *e = b->tab[i];
            b->tab[i] = e->next;
            free(e);
        }
    }
    free(b);
}

static struct budget_entry **slot(pe_http_budget *b, const char *client)
{
    uint32_t h = 2166136261u;
    struct budget_entry **pp;

    for (const char *p = client; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    for (pp = &b->tab[h % BUDGET_BUCKETS]; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->client, client) == 0)
            break;
    return pp;
}

enum pe_http_budget_result pe__http_budget_take(pe_http_budget *b, const char *client, size_t n)
{
    struct budget_entry **pp = slot(b, client), *e = *pp;
    size_t mine = e ? e->bytes : 0;

    if (n > b->per_client_max || mine > b->per_client_max - n)
        return PE_HTTP_BUDGET_CLIENT;
    if (n > b->total_max || b->total > b->total_max - n)
        return PE_HTTP_BUDGET_TOTAL;
    if (n == 0)
        return PE_HTTP_BUDGET_OK;
    if (e == NULL) {
        size_t len = strlen(client);
        e = pe_xcalloc(1, sizeof(*e) + len + 1);
        memcpy(e->client, client, len + 1);
        *pp = e;
    }
    e->bytes += n;
    b->total += n;
    return PE_HTTP_BUDGET_OK;
}

void pe__http_budget_give(pe_http_budget *b, const char *client, size_t n)
{
    struct budget_entry **pp = slot(b, client), *e = *pp;

    if (n == 0 || e == NULL || e->bytes < n)
        abort(); /* giving back what was never taken: a broken invariant */
    e->bytes -= n;
    b->total -= n;
    if (e->bytes == 0) {
        *pp = e->next;
        free(e);
    }
}

size_t pe__http_budget_total(const pe_http_budget *b)
{
    return b->total;
}
