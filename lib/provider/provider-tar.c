/* tar in/out for providers that have files but no archive call of their
 * own (provider-internal.h): a tar is unpacked into file writes, and a
 * directory is walked with file_list and packed from file_read.
 *
 * Copies and backups speak tar whatever the provider; a provider that can
 * list, read and write files can serve them, one request per file. Names
 * are checked before anything is written: absolute names and ".." are
 * refused (the provider would resolve them, not us), and so are links and
 * devices, which a file API cannot make. Sizes are bounded by the input
 * (in) and by max (out). libarchive does the format. */
#include <archive.h>
#include <archive_entry.h>
#include <stdio.h>
#include <string.h>

#include "core/util.h"
#include "provider-internal.h"

#define WALK_DEPTH_MAX 64

bool pe__tar_name_ok(const char *name)
{
    const char *seg = name;

    if (name == NULL || name[0] == '/' || name[0] == '\0')
        return false;
    for (;;) {
        const char *end = strchr(seg, '/');
        size_t n = end ? (size_t)(end - seg) : strlen(seg);
        if (n == 2 && seg[0] == '.' && seg[1] == '.')
            return false;
        if (!end)
            return true;
        seg = end + 1;
    }
}

int pe__provider_tar_in_by_files(pe_provider *p, const char *id, const char *dir, const void *tar,
                                 size_t len, pe_err *err)
{
    struct archive *a = archive_read_new();
    struct archive_entry *e;
    int r = 0, rc;

    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    archive_read_support_filter_all(a);
    if (archive_read_open_memory(a, tar, len) != ARCHIVE_OK) {
        r = pe_err_set(err, PE_EINVAL, 0, "%s: not a tar archive", p->ops->name);
        goto out;
    }
    while (r == 0 && (rc = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(e);
        la_int64_t size = archive_entry_size(e);
        char *path, *data;
        if (!pe__tar_name_ok(name)) {
            r = pe_err_set(err, PE_EINVAL, 0, "%s: tar entry '%s': names must be relative, no '..'",
                           p->ops->name, name ? name : "");
            break;
        }
        if (archive_entry_filetype(e) == AE_IFDIR)
            continue; /* every provider's write makes the parents */
        if (archive_entry_filetype(e) != AE_IFREG) {
            r = pe_err_set(err, PE_EINVAL, 0, "%s: tar entry '%s': only files and directories",
                           p->ops->name, name);
            break;
        }
        /* a size larger than the archive is a lie: the input bounds it */
        if (size < 0 || (size_t)size > len) {
            r = pe_err_set(err, PE_EINVAL, 0, "%s: tar entry '%s': bad size", p->ops->name, name);
            break;
        }
        data = pe_xmalloc((size_t)size + 1);
        if (archive_read_data(a, data, (size_t)size) != size) {
            free(data);
            r = pe_err_set(err, PE_EINVAL, 0, "%s: tar entry '%s': truncated", p->ops->name, name);
            break;
        }
        path = pe_xasprintf("%s/%s", strcmp(dir, "/") == 0 ? "" : dir, name);
        r = p->ops->file_write(p, id, path, data, (size_t)size, archive_entry_perm(e), err);
        free(path);
        free(data);
    }
    if (r == 0 && rc != ARCHIVE_EOF)
        r = pe_err_set(err, PE_EINVAL, 0, "%s: bad tar archive: %s", p->ops->name,
                       archive_error_string(a) ? archive_error_string(a) : "?");
out:
    archive_read_free(a);
    return r;
}

la_ssize_t pe__tar_membuf_write(struct archive *a, void *ud, const void *data, size_t len)
{
    pe__tar_membuf *m = ud;

    if (m->len + len > m->max) {
        m->toobig = true;
        archive_set_error(a, E2BIG, "archive too large");
        return -1;
    }
    m->buf = pe_xrealloc(m->buf, m->len + len);
    memcpy(m->buf + m->len, data, len);
    m->len += len;
    return (la_ssize_t)len;
}

static int add_entry(struct archive *a, const char *name, bool is_dir, const char *data, size_t len)
{
    struct archive_entry *e = archive_entry_new();
    int r = 0;

    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, is_dir ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e, is_dir ? 0755 : 0644);
    archive_entry_set_size(e, is_dir ? 0 : (la_int64_t)len);
    if (archive_write_header(a, e) != ARCHIVE_OK ||
        (len && archive_write_data(a, data, len) != (la_ssize_t)len))
        r = -1;
    archive_entry_free(e);
    return r;
}

/* dir/rel (rel "" = dir itself) into the archive, depth first. */
static int walk(pe_provider *p, const char *id, const char *dir, const char *rel, int depth,
                struct archive *a, pe__tar_membuf *m, pe_err *err)
{
    char *path = rel[0] ? pe_xasprintf("%s/%s", dir, rel) : pe_xstrdup(dir);
    pe_provider_dirent *ents = NULL;
    size_t n = 0;
    int r;

    if (depth > WALK_DEPTH_MAX) {
        free(path);
        return pe_err_set(err, PE_EINVAL, 0, "%s: %s: deeper than %d directories", p->ops->name,
                          dir, WALK_DEPTH_MAX);
    }
    r = p->ops->file_list(p, id, path, &ents, &n, err);
    for (size_t i = 0; r == 0 && i < n; i++) {
        char *child = rel[0] ? pe_xasprintf("%s/%s", rel, ents[i].name) : pe_xstrdup(ents[i].name);
        if (ents[i].is_dir) {
            r = add_entry(a, child, true, NULL, 0);
            if (r == 0)
                r = walk(p, id, dir, child, depth + 1, a, m, err);
        } else {
            char *full = pe_xasprintf("%s/%s", dir, child), *data = NULL;
            size_t len = 0;
            r = p->ops->file_read(p, id, full, m->max - m->len, &data, &len, err);
            if (r == 0)
                r = add_entry(a, child, false, data, len);
            free(data);
            free(full);
        }
        if (r < 0 && err->code == PE_OK)
            pe_err_set(err, m->toobig ? PE_EINVAL : PE_ESYS, 0, "%s: pack %s: %s", p->ops->name,
                       child, m->toobig ? "larger than allowed" : archive_error_string(a));
        free(child);
    }
    free(ents);
    free(path);
    return r;
}

int pe__provider_tar_out_by_files(pe_provider *p, const char *id, const char *dir, size_t max,
                                  char **tar, size_t *len, pe_err *err)
{
    struct archive *a = archive_write_new();
    pe__tar_membuf m = {.max = max};
    int r;

    pe_err_clear(err);
    archive_write_set_format_pax_restricted(a);
    if (archive_write_open(a, &m, NULL, pe__tar_membuf_write, NULL) != ARCHIVE_OK) {
        archive_write_free(a);
        return pe_err_set(err, PE_ESYS, 0, "%s: pack %s", p->ops->name, dir);
    }
    r = walk(p, id, dir, "", 0, a, &m, err);
    if (r == 0 && archive_write_close(a) != ARCHIVE_OK)
        r = pe_err_set(err, m.toobig ? PE_EINVAL : PE_ESYS, 0, "%s: pack %s: %s", p->ops->name, dir,
                       m.toobig ? "larger than allowed" : archive_error_string(a));
    archive_write_free(a);
    if (r < 0) {
        free(m.buf);
        return -1;
    }
    *tar = m.buf ? m.buf : pe_xstrdup("");
    *len = m.len;
    return 0;
}
