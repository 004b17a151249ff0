/* The egress proxy's codecs (include/pocketenv/egress-sniff.h): TLS SNI
 * and HTTP/1.x request heads and bodies, read without copying more than a
 * ClientHello's fragments.
 *
 * Strict on purpose: what the proxy cannot read for certain is refused
 * (fail closed), so an odd encoding cannot make one name look like
 * another to us and like a second one to the server. */
#include <string.h>

#include "pocketenv/egress-sniff.h"

/* ---- names ---- */

/* A host name as servers route by it: letters, digits, '-', '_' and
 * non-empty dot-separated labels, lower-cased into out. A trailing dot is
 * dropped (servers treat "a.org." as "a.org"). */
static bool host_name(const uint8_t *s, size_t n, char *out)
{
    size_t label = 0;

    if (n > 0 && s[n - 1] == '.')
        n--;
    if (n == 0 || n > PE_SNIFF_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            label++;
        } else if (c >= 'A' && c <= 'Z') {
            c = (uint8_t)(c - 'A' + 'a');
            label++;
        } else {
            return false;
        }
        if (label > 63)
            return false;
        out[i] = (char)c;
    }
    if (label == 0)
        return false;
    out[n] = '\0';
    return true;
}

/* Dotted IPv4 ("1.2.3.4"); a name made of digits and dots only is one too,
 * for our purpose: no server routes it as a name. */
static bool all_digits_and_dots(const char *s)
{
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || *s == '.'))
            return false;
    return true;
}

/* ---- TLS ---- */

bool pe_sniff_is_tls(const uint8_t *buf, size_t n)
{
    return n >= 1 && buf[0] == 0x16;
}

typedef struct cursor {
    const uint8_t *p;
    size_t n;
    bool bad;
} cursor;

static uint32_t take(cursor *c, size_t bytes)
{
    uint32_t v = 0;

    if (c->bad || c->n < bytes) {
        c->bad = true;
        return 0;
    }
    for (size_t i = 0; i < bytes; i++)
        v = v << 8 | c->p[i];
    c->p += bytes;
    c->n -= bytes;
    return v;
}

/* The next len bytes as a cursor of their own. */
static cursor sub(cursor *c, size_t len)
{
    cursor s = {c->p, len, c->bad || c->n < len};

    if (s.bad) {
        c->bad = true;
        s.n = 0;
    } else {
        c->p += len;
        c->n -= len;
    }
    return s;
}

/* The server_name extension's body. */
static int sni_ext(cursor e, char *name)
{
    cursor list = sub(&e, take(&e, 2));
    bool found = false;

    if (e.bad || e.n != 0)
        return PE_SNIFF_BAD;
    while (list.n > 0 && !list.bad) {
        uint32_t type = take(&list, 1);
        cursor v = sub(&list, take(&list, 2));
        if (list.bad)
            break;
        if (type != 0)
            continue;
        /* two host names: which one would the server pick? */
        if (found || !host_name(v.p, v.n, name))
            return PE_SNIFF_BAD;
        found = true;
    }
    if (list.bad)
        return PE_SNIFF_BAD;
    return found ? PE_SNIFF_NAME : PE_SNIFF_BAD;
}

static int client_hello(cursor h, char *name)
{
    cursor exts;
    int found = PE_SNIFF_NONE;

    take(&h, 2);          /* legacy version */
    take(&h, 32);         /* random */
    sub(&h, take(&h, 1)); /* session id */
    sub(&h, take(&h, 2)); /* cipher suites */
    sub(&h, take(&h, 1)); /* compression methods */
    if (h.bad)
        return PE_SNIFF_BAD;
    if (h.n == 0)
        return PE_SNIFF_NONE; /* no extensions at all */
    exts = sub(&h, take(&h, 2));
    if (h.bad || h.n != 0)
        return PE_SNIFF_BAD;
    while (exts.n > 0) {
        uint32_t type = take(&exts, 2);
        cursor e = sub(&exts, take(&exts, 2));
        if (exts.bad)
            return PE_SNIFF_BAD;
        if (type != 0)
            continue;
        if (found != PE_SNIFF_NONE)
            return PE_SNIFF_BAD; /* the extension twice */
        found = sni_ext(e, name);
        if (found == PE_SNIFF_BAD)
            return found;
    }
    return found;
}

int pe_sniff_tls_sni(const uint8_t *buf, size_t n, char *name)
{
    /* The handshake message, put together from the records' fragments. */
    uint8_t hs[PE_SNIFF_MAX];
    size_t have = 0, off = 0;

    name[0] = '\0';
    for (;;) {
        size_t rlen;

        if (n - off < 5)
            return PE_SNIFF_MORE;
        if (buf[off] != 0x16 || buf[off + 1] != 3)
            return PE_SNIFF_BAD;
        rlen = (size_t)buf[off + 3] << 8 | buf[off + 4];
        if (rlen == 0 || rlen > 16384)
            return PE_SNIFF_BAD;
        if (n - off - 5 < rlen)
            return PE_SNIFF_MORE;
        if (rlen > sizeof(hs) - have)
            return PE_SNIFF_BAD;
        memcpy(hs + have, buf + off + 5, rlen);
        have += rlen;
        off += 5 + rlen;
        if (have >= 4) {
            size_t len = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
            if (hs[0] != 1 || len > sizeof(hs) - 4)
                return PE_SNIFF_BAD; /* not a ClientHello, or one too big */
            if (have >= 4 + len) {
                cursor c = {hs + 4, len, false};
                /* what follows the hello in its record is not ours to read */
                return client_hello(c, name);
            }
        }
    }
}

/* ---- HTTP ---- */

static bool is_tchar(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int pe_sniff_is_http(const uint8_t *buf, size_t n)
{
    size_t i;

    for (i = 0; i < n && i < 24; i++) {
        if (buf[i] == ' ')
            return i > 0 ? PE_SNIFF_NAME : PE_SNIFF_BAD;
        if (buf[i] < 'A' || buf[i] > 'Z')
            return PE_SNIFF_BAD;
    }
    return i == 24 ? PE_SNIFF_BAD : PE_SNIFF_MORE;
}

static bool ieq(const uint8_t *a, size_t n, const char *b)
{
    return strlen(b) == n && strncasecmp((const char *)a, b, n) == 0;
}

/* Does the comma-separated list s contain token t (any case)? */
static bool has_token(const uint8_t *s, size_t n, const char *t)
{
    size_t i = 0;

    while (i < n) {
        size_t start, end;
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
            i++;
        start = i;
        while (i < n && s[i] != ',')
            i++;
        end = i;
        while (end > start && (s[end - 1] == ' ' || s[end - 1] == '\t'))
            end--;
        if (end > start && ieq(s + start, end - start, t))
            return true;
    }
    return false;
}

/* "name[:port]" or "[v6]:port" into out; is_ip for address literals. */
static bool authority(const uint8_t *s, size_t n, pe_sniff_http *out)
{
    size_t i;

    if (n > 0 && s[0] == '[') {
        out->is_ip = true;
        out->host[0] = '\0';
        return memchr(s, ']', n) != NULL;
    }
    for (i = 0; i < n && s[i] != ':'; i++)
        ;
    if (i < n) { /* a port: digits only */
        if (i + 1 == n || n - i - 1 > 5)
            return false;
        for (size_t k = i + 1; k < n; k++)
            if (s[k] < '0' || s[k] > '9')
                return false;
    }
    if (!host_name(s, i, out->host))
        return false;
    out->is_ip = all_digits_and_dots(out->host);
    if (out->is_ip)
        out->host[0] = '\0';
    return true;
}

static bool parse_length(const uint8_t *s, size_t n, int64_t *v)
{
    int64_t x = 0;

    if (n == 0 || n > 15)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        x = x * 10 + (s[i] - '0');
    }
    *v = x;
    return true;
}

typedef struct head_state {
    int hosts;
    bool te, cl, conn_upgrade, has_upgrade;
} head_state;

static bool header(const uint8_t *l, size_t n, pe_sniff_http *out, head_state *st)
{
    const uint8_t *colon = memchr(l, ':', n);
    size_t nl, vs, ve;

    if (colon == NULL || colon == l)
        return false;
    nl = (size_t)(colon - l);
    for (size_t i = 0; i < nl; i++)
        if (!is_tchar(l[i]))
            return false; /* "Host :" and friends: refused, not guessed */
    vs = nl + 1;
    ve = n;
    while (vs < ve && (l[vs] == ' ' || l[vs] == '\t'))
        vs++;
    while (ve > vs && (l[ve - 1] == ' ' || l[ve - 1] == '\t'))
        ve--;
    if (ieq(l, nl, "host")) {
        if (st->hosts++ > 0)
            return false;
        return authority(l + vs, ve - vs, out);
    }
    if (ieq(l, nl, "content-length")) {
        int64_t v;
        if (!parse_length(l + vs, ve - vs, &v) || (st->cl && v != out->content_length))
            return false;
        st->cl = true;
        out->content_length = v;
    } else if (ieq(l, nl, "transfer-encoding")) {
        /* chunked alone: anything else has a length we cannot know */
        if (st->te || !ieq(l + vs, ve - vs, "chunked"))
            return false;
        st->te = true;
        out->chunked = true;
    } else if (ieq(l, nl, "connection")) {
        st->conn_upgrade = st->conn_upgrade || has_token(l + vs, ve - vs, "upgrade");
    } else if (ieq(l, nl, "upgrade")) {
        st->has_upgrade = true;
    }
    return true;
}

/* The request line: "METHOD target HTTP/1.x"; an absolute target's host
 * goes to abs (checked against Host once known). */
static bool request_line(const uint8_t *l, size_t n, pe_sniff_http *abs, bool *has_abs,
                         bool *http10)
{
    const uint8_t *sp1 = memchr(l, ' ', n), *sp2, *t;
    size_t tn;

    if (sp1 == NULL || ieq(l, (size_t)(sp1 - l), "CONNECT"))
        return false;
    t = sp1 + 1;
    sp2 = memchr(t, ' ', n - (size_t)(t - l));
    if (sp2 == NULL || sp2 == t)
        return false;
    tn = (size_t)(sp2 - t);
    *http10 = ieq(sp2 + 1, n - (size_t)(sp2 + 1 - l), "HTTP/1.0");
    if (!*http10 && !ieq(sp2 + 1, n - (size_t)(sp2 + 1 - l), "HTTP/1.1"))
        return false;
    *has_abs = false;
    if (t[0] != '/' && !(tn == 1 && t[0] == '*')) {
        const uint8_t *a, *end;
        if (tn > 7 && strncasecmp((const char *)t, "http://", 7) == 0)
            a = t + 7;
        else if (tn > 8 && strncasecmp((const char *)t, "https://", 8) == 0)
            a = t + 8;
        else
            return false;
        for (end = a; end < t + tn && *end != '/' && *end != '?'; end++)
            ;
        if (memchr(a, '@', (size_t)(end - a)) != NULL)
            return false;
        *has_abs = true;
        return authority(a, (size_t)(end - a), abs);
    }
    return true;
}

int pe_sniff_http_head(const uint8_t *buf, size_t n, pe_sniff_http *out)
{
    pe_sniff_http abs;
    head_state st = {0};
    bool has_abs = false, http10 = false;
    size_t off = 0, line = 0;

    memset(out, 0, sizeof(*out));
    out->content_length = -1;
    for (;;) {
        const uint8_t *nl = memchr(buf + off, '\n', n - off);
        size_t len;
        if (nl == NULL)
            return n >= PE_SNIFF_MAX ? PE_SNIFF_BAD : PE_SNIFF_MORE;
        len = (size_t)(nl - (buf + off));
        if (len == 0 || buf[off + len - 1] != '\r')
            return PE_SNIFF_BAD; /* bare LF: servers disagree on it */
        len--;
        if (off + len + 2 > PE_SNIFF_MAX)
            return PE_SNIFF_BAD;
        if (len == 0) {
            off += 2;
            break;
        }
        if (memchr(buf + off, '\0', len) != NULL)
            return PE_SNIFF_BAD;
        if (line == 0 ? !request_line(buf + off, len, &abs, &has_abs, &http10)
                      : (buf[off] == ' ' || buf[off] == '\t' || !header(buf + off, len, out, &st)))
            return PE_SNIFF_BAD; /* obsolete line folding included */
        line++;
        off += len + 2;
    }
    /* HTTP/1.0 may go without Host (and then names nothing); 1.1 may not */
    if (line == 0 || st.hosts > 1 || (st.hosts == 0 && (!http10 || has_abs)) || (st.te && st.cl))
        return PE_SNIFF_BAD;
    if (has_abs && (abs.is_ip != out->is_ip || strcmp(abs.host, out->host) != 0))
        return PE_SNIFF_BAD;
    out->upgrade = st.has_upgrade && st.conn_upgrade;
    out->head_len = off;
    return st.hosts == 0 ? PE_SNIFF_NONE : PE_SNIFF_NAME;
}

/* ---- chunked bodies ---- */

enum { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_TRAILER_LF };

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

ssize_t pe_sniff_chunked_feed(pe_sniff_chunked *c, const uint8_t *buf, size_t n, bool *done)
{
    size_t i = 0;

    *done = false;
    while (i < n) {
        uint8_t b = buf[i];
        switch (c->state) {
        case CH_SIZE:
            if (hexval(b) >= 0) {
                if (++c->line > 15)
                    return -1;
                c->left = c->left << 4 | (uint64_t)hexval(b);
            } else if (c->line > 0 && (b == ';' || b == '\r')) {
                c->state = b == ';' ? CH_EXT : CH_SIZE_LF;
            } else {
                return -1;
            }
            break;
        case CH_EXT:
            if (b == '\r')
                c->state = CH_SIZE_LF;
            else if (b == '\n' || ++c->line > 1024)
                return -1;
            break;
        case CH_SIZE_LF:
            if (b != '\n')
                return -1;
            c->line = 0;
            c->state = c->left == 0 ? CH_TRAILER : CH_DATA;
            break;
        case CH_DATA: {
            size_t k = n - i < c->left ? n - i : (size_t)c->left;
            c->left -= k;
            i += k;
            if (c->left == 0)
                c->state = CH_DATA_CR;
            continue;
        }
        case CH_DATA_CR:
            if (b != '\r')
                return -1;
            c->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (b != '\n')
                return -1;
            c->state = CH_SIZE;
            break;
        case CH_TRAILER: /* lines until an empty one */
            if (b == '\r')
                c->state = CH_TRAILER_LF;
            else if (b == '\n' || ++c->line > 8192)
                return -1;
            break;
        case CH_TRAILER_LF:
            if (b != '\n')
                return -1;
            if (c->line == 0) {
                *done = true;
                memset(c, 0, sizeof(*c));
                return (ssize_t)(i + 1);
            }
            c->line = 0;
            c->state = CH_TRAILER;
            break;
        }
        i++;
    }
    return (ssize_t)n;
}
