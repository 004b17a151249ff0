/* The web page's files, loaded into memory (see web.h).
 *
 * Only the loader touches the filesystem, once, at start-up: it opens the
 * folder, then each entry relative to it with O_NOFOLLOW, and keeps what
 * is a regular file with a servable name. ETags are a BLAKE2b hash of the
 * content, so they survive restarts and change exactly when a file does.
 * Answers carry "Cache-Control: no-cache": the browser may keep a copy but
 * revalidates it every time (a cheap 304), so a rebuilt page is never
 * stale, which matters more here than saving a round trip on loopback. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "web.h"

struct pe_web {
    char *banner;
    pe_web_file files[PE_WEB_MAX_FILES];
    size_t n;
};

static const struct {
    const char *ext, *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".json", "application/json; charset=utf-8"},
    {".map", "application/json; charset=utf-8"},
    {".txt", "text/plain; charset=utf-8"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".woff2", "font/woff2"},
};

static const char *type_for(const char *name)
{
    size_t nl = strlen(name);

    for (size_t i = 0; i < PE_ARRAY_LEN(types); i++) {
        size_t el = strlen(types[i].ext);
        if (nl > el && strcmp(name + nl - el, types[i].ext) == 0)
            return types[i].type;
    }
    return NULL;
}

/* Names we serve: [A-Za-z0-9._-], not starting with '.'. */
static bool name_ok(const char *s)
{
    if (*s == '\0' || *s == '.')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return false;
    return true;
}

/* Read a regular file of dirfd into f->body. 1: loaded, 0: not a regular
 * file (skipped), -1: error. */
static int read_entry(int dirfd, const char *name, pe_web_file *f, pe_err *err)
{
    cleanup_fd int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    struct stat st;
    size_t got = 0;

    if (fd < 0)
        return errno == ELOOP ? 0 : pe_err_sys(err, "open %s", name);
    if (fstat(fd, &st) < 0)
        return pe_err_sys(err, "stat %s", name);
    if (!S_ISREG(st.st_mode))
        return 0;
    if (st.st_size > PE_WEB_MAX_FILE)
        return pe_err_set(err, PE_EINVAL, 0, "%s: larger than %u bytes", name, PE_WEB_MAX_FILE);
    f->body = pe_xmalloc((size_t)st.st_size + 1);
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, f->body + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(f->body);
            f->body = NULL;
            return r < 0 ? pe_err_sys(err, "read %s", name)
                         : pe_err_set(err, PE_ESYS, 0, "read %s: file shrank", name);
        }
        got += (size_t)r;
    }
    f->body[got] = '\0';
    f->len = got;
    return 1;
}

/* s with <, >, & and quotes escaped; malloc'd. */
static char *html_escape(const char *s)
{
    char *out = pe_xmalloc(strlen(s) * 6 + 1), *o = out;

    for (; *s; s++) {
        const char *rep = *s == '<'    ? "&lt;"
                          : *s == '>'  ? "&gt;"
                          : *s == '&'  ? "&amp;"
                          : *s == '"'  ? "&quot;"
                          : *s == '\'' ? "&#39;"
                                       : NULL;
        if (rep) {
            size_t l = strlen(rep);
            memcpy(o, rep, l);
            o += l;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
    return out;
}

static void fill_banner(pe_web_file *f, const char *banner)
{
    char *mark = strstr(f->body, PE_WEB_BANNER_MARK);
    cleanup_free char *esc = NULL;
    size_t pre, ml = strlen(PE_WEB_BANNER_MARK), el;
    char *body;

    if (mark == NULL || banner == NULL)
        return;
    esc = html_escape(banner);
    el = strlen(esc);
    pre = (size_t)(mark - f->body);
    body = pe_xmalloc(f->len - ml + el + 1);
    memcpy(body, f->body, pre);
    memcpy(body + pre, esc, el);
    memcpy(body + pre + el, mark + ml, f->len - pre - ml + 1);
    free(f->body);
    f->body = body;
    f->len = f->len - ml + el;
}

static void set_etag(pe_web_file *f)
{
    unsigned char h[16];
    static const char hex[] = "0123456789abcdef";

    crypto_generichash(h, sizeof(h), (const unsigned char *)f->body, f->len, NULL, 0);
    f->etag[0] = '"';
    for (size_t i = 0; i < sizeof(h); i++) {
        f->etag[1 + 2 * i] = hex[h[i] >> 4];
        f->etag[2 + 2 * i] = hex[h[i] & 15];
    }
    f->etag[33] = '"';
    f->etag[34] = '\0';
}

static int load_dir(pe_web *w, DIR *dir, const char *path, const char *banner, pe_err *err)
{
    struct dirent *de;

    while ((errno = 0, de = readdir(dir)) != NULL) {
        pe_web_file *f = &w->files[w->n];
        const char *type = type_for(de->d_name);
        int r;

        if (!name_ok(de->d_name) || type == NULL)
            continue;
        if (w->n == PE_WEB_MAX_FILES)
            return pe_err_set(err, PE_EINVAL, 0, "%s: more than %d files", path, PE_WEB_MAX_FILES);
        r = read_entry(dirfd(dir), de->d_name, f, err);
        if (r < 0)
            return pe_err_prefix(err, "%s", path);
        if (r == 0)
            continue;
        f->name = pe_xstrdup(de->d_name);
        f->type = type;
        if (strcmp(f->name, "index.html") == 0)
            fill_banner(f, banner);
        set_etag(f);
        w->n++;
    }
    if (errno)
        return pe_err_sys(err, "read folder %s", path);
    return 0;
}

pe_web *pe_web_load(const char *path, const char *banner, pe_err *err)
{
    pe_web *w = pe_xcalloc(1, sizeof(*w));
    DIR *dir = opendir(path);
    int r;

    if (sodium_init() < 0) /* idempotent; picks the hash implementation */
        abort();
    if (dir == NULL) {
        pe_err_sys(err, "open web folder %s", path);
        free(w);
        return NULL;
    }
    w->banner = banner ? pe_xstrdup(banner) : NULL;
    r = load_dir(w, dir, path, banner, err);
    closedir(dir);
    if (r == 0 && pe_web_lookup(w, "/") == NULL)
        r = pe_err_set(err, PE_ENOENT, 0, "%s: no index.html", path);
    if (r < 0) {
        pe_web_free(w);
        return NULL;
    }
    return w;
}

void pe_web_free(pe_web *w)
{
    if (w == NULL)
        return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->files[i].name);
        free(w->files[i].body);
    }
    free(w->banner);
    free(w);
}

const char *pe_web_banner(const pe_web *w)
{
    return w->banner;
}

const pe_web_file *pe_web_lookup(const pe_web *w, const char *url_path)
{
    const char *name;

    if (w == NULL || url_path[0] != '/')
        return NULL;
    name = url_path[1] ? url_path + 1 : "index.html";
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->files[i].name, name) == 0)
            return &w->files[i];
    return NULL;
}

/* If-None-Match: "*" or a comma-separated list of (possibly weak) tags. */
bool pe_web_not_modified(const pe_web_file *f, const char *inm)
{
    size_t tl = strlen(f->etag);

    if (inm == NULL)
        return false;
    while (*inm) {
        size_t n;
        inm += strspn(inm, " \t,");
        if (strncmp(inm, "W/", 2) == 0)
            inm += 2;
        n = strcspn(inm, " \t,");
        if ((n == 1 && inm[0] == '*') || (n == tl && memcmp(inm, f->etag, tl) == 0))
            return true;
        inm += n;
    }
    return false;
}

bool pe_web_wants_html(const char *accept)
{
    return accept != NULL && strstr(accept, "text/html") != NULL;
}
