/* pocketenv cp|copy SRC DST, and pocketenv backup create|list|restore.
 *
 * cp: `NAME:/path` is a path in sandbox NAME, anything else a local path.
 *   local -> sandbox   a tar.gz of the path (a directory's contents, or one
 *                      file), POST /cp, then pullDirectory into the path
 *   sandbox -> local   pushDirectory, GET /cp/<uuid>, unpacked into the path
 *   sandbox -> sandbox pushDirectory on one, pullDirectory on the other
 * Archives are written and read with libarchive. Unpacking refuses absolute
 * paths, '..' and writes through symlinks (ARCHIVE_EXTRACT_SECURE_*), and
 * keeps no owners, device nodes or setuid bits.
 *
 * A local directory is packed honouring the ignore files found at any depth
 * (.pocketenvignore, .gitignore, .npmignore, .dockerignore), as upstream's
 * CLI (reference §3.6): each file's patterns apply below its directory; a
 * pattern matches a path when it matches any of its trailing component
 * runs, with or without a trailing '/'; '#' lines are comments; '!'
 * negations are not supported (they are skipped). Hand-written over
 * fnmatch(3): no Debian library implements these rules. Symbolic links are
 * not packed (as upstream). */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/fs.h"
#include "core/util.h"

#define EXIT_API 1
#define EXIT_USAGE 2
#define ARCHIVE_MAX (32u << 20) /* the daemon's /cp body limit */

static const char *const ignore_files[] = {".pocketenvignore", ".gitignore", ".npmignore",
                                           ".dockerignore"};

/* ---- ignore rules ---- */

typedef struct rules {
    char **pat; /* patterns of this level */
    size_t n;
    size_t base; /* length of the relative path of this level's directory */
    struct rules *up;
} rules;

static void rules_load(rules *r, const char *dir)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(ignore_files); i++) {
        cleanup_free char *p = pe_xasprintf("%s/%s", dir, ignore_files[i]);
        FILE *f = fopen(p, "re");
        char line[1024];

        if (f == NULL)
            continue;
        while (fgets(line, sizeof(line), f)) {
            size_t len = strcspn(line, "\r\n");
            line[len] = '\0';
            while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '/'))
                line[--len] = '\0';
            if (len == 0 || line[0] == '#' || line[0] == '!')
                continue;
            r->pat = pe_xrealloc(r->pat, (r->n + 1) * sizeof(char *));
            r->pat[r->n++] = pe_xstrdup(line[0] == '/' ? line + 1 : line);
        }
        fclose(f);
    }
}

static void rules_free(rules *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->pat[i]);
    free(r->pat);
}

/* Does rel (relative to the top) match a pattern of any level above? */
static bool ignored(const rules *r, const char *rel)
{
    for (; r; r = r->up) {
        const char *sub = rel + r->base; /* relative to the rules' directory */
        for (size_t i = 0; i < r->n; i++) {
            for (const char *s = sub; s; s = strchr(s, '/') ? strchr(s, '/') + 1 : NULL)
                if (fnmatch(r->pat[i], s, 0) == 0)
                    return true;
        }
    }
    return false;
}

/* ---- packing ---- */

typedef struct packer {
    struct archive *a;
    size_t files;
    pe_err *err;
} packer;

static int add_file(packer *p, const char *path, const char *name, const struct stat *st)
{
    struct archive_entry *e = archive_entry_new();
    char buf[65536];
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0) {
        archive_entry_free(e);
        return pe_err_sys(p->err, "open %s", path);
    }
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, st->st_mode & 0777);
    archive_entry_set_size(e, st->st_size);
    archive_entry_set_mtime(e, st->st_mtim.tv_sec, 0);
    if (archive_write_header(p->a, e) != ARCHIVE_OK) {
        close(fd);
        archive_entry_free(e);
        return pe_err_set(p->err, PE_ESYS, 0, "pack %s: %s", path, archive_error_string(p->a));
    }
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        if (archive_write_data(p->a, buf, (size_t)n) < 0)
            break;
    close(fd);
    archive_entry_free(e);
    p->files++;
    return n < 0 ? pe_err_sys(p->err, "read %s", path) : 0;
}

static int add_dir(packer *p, const char *path, const char *rel, rules *up)
{
    rules r = {.up = up, .base = *rel ? strlen(rel) + 1 : 0};
    struct dirent *de;
    DIR *d = opendir(path);
    int ret = 0;

    if (d == NULL)
        return pe_err_sys(p->err, "open %s", path);
    rules_load(&r, path);
    while (ret == 0 && (de = readdir(d)) != NULL) {
        cleanup_free char *full = NULL;
        cleanup_free char *name = NULL;
        struct stat st;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        full = pe_xasprintf("%s/%s", path, de->d_name);
        name = *rel ? pe_xasprintf("%s/%s", rel, de->d_name) : pe_xstrdup(de->d_name);
        if (lstat(full, &st) < 0 || ignored(&r, name))
            continue;
        if (S_ISDIR(st.st_mode))
            ret = add_dir(p, full, name, &r);
        else if (S_ISREG(st.st_mode))
            ret = add_file(p, full, name, &st);
        /* symlinks, devices, sockets: not copied */
    }
    closedir(d);
    rules_free(&r);
    return ret;
}

/* A tar.gz of local path: a directory's contents, or the file by name. */
static int pack(const char *path, char **out, size_t *out_len, pe_err *err)
{
    size_t cap = ARCHIVE_MAX, used = 0;
    char *mem = pe_xmalloc(cap);
    packer p = {.a = archive_write_new(), .err = err};
    struct stat st;
    int r;

    archive_write_set_format_pax_restricted(p.a);
    archive_write_add_filter_gzip(p.a);
    archive_write_set_bytes_in_last_block(p.a, 1);
    if (archive_write_open_memory(p.a, mem, cap, &used) != ARCHIVE_OK) {
        archive_write_free(p.a);
        free(mem);
        return pe_err_set(err, PE_ESYS, 0, "archive: %s", archive_error_string(p.a));
    }
    if (stat(path, &st) < 0) {
        r = pe_err_sys(err, "%s", path);
    } else if (S_ISDIR(st.st_mode)) {
        r = add_dir(&p, path, "", NULL);
    } else if (S_ISREG(st.st_mode)) {
        const char *base = strrchr(path, '/');
        r = add_file(&p, path, base ? base + 1 : path, &st);
    } else {
        r = pe_err_set(err, PE_EINVAL, 0, "%s: not a file or directory", path);
    }
    if (archive_write_close(p.a) != ARCHIVE_OK && r == 0)
        r = pe_err_set(err, PE_EINVAL, 0, "archive larger than %u MiB: %s", ARCHIVE_MAX >> 20,
                       archive_error_string(p.a));
    archive_write_free(p.a);
    if (r < 0) {
        free(mem);
        return -1;
    }
    *out = mem;
    *out_len = used;
    return 0;
}

/* Unpack a tar.gz into local directory dest (created if missing). */
static int unpack(const char *data, size_t len, const char *dest, pe_err *err)
{
    struct archive *a = archive_read_new();
    struct archive *w = archive_write_disk_new();
    struct archive_entry *e;
    int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
    cleanup_fd int here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = 0;

    if (pe_fs_mkdir_p(dest, 0755, err) < 0 || chdir(dest) < 0) {
        archive_read_free(a);
        archive_write_free(w);
        return err->msg[0] ? -1 : pe_err_sys(err, "%s", dest);
    }
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    archive_write_disk_set_options(w, flags);
    if (archive_read_open_memory(a, data, len) != ARCHIVE_OK)
        r = pe_err_set(err, PE_EINVAL, 0, "unpack: %s", archive_error_string(a));
    while (r == 0) {
        int rc = archive_read_next_header(a, &e);
        mode_t type;

        if (rc == ARCHIVE_EOF)
            break;
        if (rc != ARCHIVE_OK) {
            r = pe_err_set(err, PE_EINVAL, 0, "unpack: %s", archive_error_string(a));
            break;
        }
        type = archive_entry_filetype(e);
        if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
            continue;                                            /* no devices, fifos or sockets */
        archive_entry_set_perm(e, archive_entry_perm(e) & 0777); /* no setuid/setgid */
        if (archive_write_header(w, e) != ARCHIVE_OK) {
            r = pe_err_set(err, PE_EINVAL, 0, "unpack %s: %s", archive_entry_pathname(e),
                           archive_error_string(w));
            break;
        }
        if (type == AE_IFREG) {
            const void *buf;
            size_t size;
            la_int64_t off;
            while ((rc = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK)
                if (archive_write_data_block(w, buf, size, off) != ARCHIVE_OK)
                    break;
        }
        archive_write_finish_entry(w);
    }
    archive_read_free(a);
    archive_write_free(w);
    if (here >= 0 && fchdir(here) < 0)
        r = pe_err_sys(err, "back to the working directory");
    return r;
}

/* ---- cp ---- */

/* "NAME:/path" -> sandbox NAME and path; else local. */
static bool sandbox_side(const char *arg, char **name, const char **path)
{
    const char *colon = strchr(arg, ':');

    if (colon == NULL || colon == arg || memchr(arg, '/', (size_t)(colon - arg)))
        return false;
    *name = pe_xasprintf("%.*s", (int)(colon - arg), arg);
    *path = colon + 1;
    return true;
}

static int push(pe_api *a, const char *sb, const char *path, char **uuid, pe_err *err)
{
    json_t *body = json_pack("{s:s, s:s}", "sandboxId", sb, "directoryPath", path), *out = NULL;
    int r = pe_api_call(a, "io.pocketenv.sandbox.pushDirectory", NULL, body, &out, err);

    json_decref(body);
    if (r == 0)
        *uuid = pe_xstrdup(json_string_value(json_object_get(out, "uuid")) ?: "");
    json_decref(out);
    return r;
}

static int pull(pe_api *a, const char *sb, const char *uuid, const char *path, pe_err *err)
{
    json_t *body =
               json_pack("{s:s, s:s, s:s}", "sandboxId", sb, "uuid", uuid, "directoryPath", path),
           *out = NULL;
    int r = pe_api_call(a, "io.pocketenv.sandbox.pullDirectory", NULL, body, &out, err);

    json_decref(body);
    json_decref(out);
    return r;
}

static int cp(int argc, char **argv)
{
    cleanup_free char *src_sb = NULL;
    cleanup_free char *dst_sb = NULL;
    cleanup_free char *uuid = NULL;
    cleanup_free char *data = NULL;
    const char *src = argv[1], *dst = argv[2];
    size_t len = 0;
    pe_api a;
    pe_err err;
    int r = 0;

    bool from_sb = sandbox_side(argv[1], &src_sb, &src);
    bool to_sb = sandbox_side(argv[2], &dst_sb, &dst);

    if (!from_sb && !to_sb) {
        fprintf(stderr, "pocketenv: one side must be a sandbox path, NAME:/path\n");
        return EXIT_USAGE;
    }
    pe_err_clear(&err);
    if (!from_sb && access(src, R_OK) < 0) {
        fprintf(stderr, "pocketenv: %s: %s\n", src, strerror(errno));
        return EXIT_USAGE;
    }
    if (pe_api_open(&a, true, &err) < 0) {
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return EXIT_API;
    }
    if (from_sb) {
        r = push(&a, src_sb, src, &uuid, &err);
    } else {
        json_t *out = NULL;
        r = pack(src, &data, &len, &err);
        if (r == 0)
            r = pe_api_post_raw(&a, "/cp", data, len, &out, &err);
        if (r == 0)
            uuid = pe_xstrdup(json_string_value(json_object_get(out, "uuid")) ?: "");
        json_decref(out);
        free(pe_steal_ptr(&data));
    }
    if (r == 0 && to_sb) {
        r = pull(&a, dst_sb, uuid, dst, &err);
    } else if (r == 0) {
        cleanup_free char *path = pe_xasprintf("/cp/%s", uuid);
        r = pe_api_get_raw(&a, path, &data, &len, &err);
        if (r == 0)
            r = unpack(data, len, dst, &err);
    }
    if (r < 0 && strcmp(a.error_name, "SandboxNotFound") == 0)
        pe_err_set(&err, PE_API_EHTTP, 0, "sandbox %s not found",
                   from_sb && (!to_sb || strstr(err.msg, src_sb)) ? src_sb : dst_sb);
    pe_api_close(&a);
    if (r < 0) {
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return err.code == PE_EINVAL ? EXIT_USAGE : EXIT_API;
    }
    printf("Copied files from %s to %s\n", argv[1], argv[2]);
    return 0;
}

/* ---- backup ---- */

static int ttl_seconds(const char *s, long long *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || v <= 0 || end[1] != '\0' || !strchr("mhd", *end))
        return -1;
    *out = v * (*end == 'm' ? 60 : *end == 'h' ? 3600 : 86400);
    return 0;
}

static int backup(int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : "";
    json_t *params = NULL, *body = NULL, *out = NULL, *b;
    const char *nsid, *sb = NULL;
    size_t i;
    int r;

    if (strcmp(verb, "create") == 0 && argc >= 4) {
        long long ttl = 3 * 86400;
        body = json_pack("{s:s}", "directory", argv[3]);
        for (int k = 4; k < argc; k++) {
            if ((strcmp(argv[k], "-d") == 0 || strcmp(argv[k], "--description") == 0) &&
                k + 1 < argc) {
                json_object_set_new(body, "description", json_string(argv[++k]));
            } else if ((strcmp(argv[k], "-t") == 0 || strcmp(argv[k], "--ttl") == 0) &&
                       k + 1 < argc) {
                if (ttl_seconds(argv[++k], &ttl) < 0) {
                    json_decref(body);
                    fprintf(stderr, "pocketenv: --ttl: a number with m, h or d, e.g. 3d\n");
                    return EXIT_USAGE;
                }
            } else {
                json_decref(body);
                fprintf(stderr, "pocketenv: unexpected argument '%s'\n", argv[k]);
                return EXIT_USAGE;
            }
        }
        json_object_set_new(body, "ttl", json_integer(ttl));
        sb = argv[2];
        params = json_pack("{s:s}", "id", sb);
        nsid = "io.pocketenv.sandbox.createBackup";
    } else if ((strcmp(verb, "list") == 0 || strcmp(verb, "ls") == 0) && argc == 3) {
        sb = argv[2];
        params = json_pack("{s:s}", "id", sb);
        nsid = "io.pocketenv.sandbox.getBackups";
    } else if (strcmp(verb, "restore") == 0 && argc == 3) {
        body = json_pack("{s:s}", "backupId", argv[2]);
        nsid = "io.pocketenv.sandbox.restoreBackup";
    } else {
        fprintf(stderr, "usage: pocketenv backup create SANDBOX DIRECTORY [-d DESC] [-t TTL]\n"
                        "       pocketenv backup list|ls SANDBOX\n"
                        "       pocketenv backup restore BACKUP_ID\n");
        return EXIT_USAGE;
    }
    r = pe_cli_call(nsid, params, body, &out, sb);
    json_decref(params);
    json_decref(body);
    if (r != 0)
        return r;
    if (strcmp(verb, "create") == 0) {
        const char *id =
            json_string_value(json_object_get(json_object_get(out, "backup"), "id")) ?: "";
        printf("Backup %s of %s:%s created\n", id, argv[2], argv[3]);
        printf("Run `pocketenv backup list %s` to see it.\n", argv[2]);
    } else if (strcmp(verb, "restore") == 0) {
        printf("Backup %s restored\n", argv[2]);
    } else if (pe_cli_json) {
        pe_cli_print_json(json_object_get(out, "backups"));
    } else {
        printf("%-28s %-24s %-26s %s\n", "BACKUP ID", "DIRECTORY", "CREATED AT", "EXPIRES AT");
        json_array_foreach(json_object_get(out, "backups"), i, b)
        {
            const char *exp = json_string_value(json_object_get(b, "expiresAt"));
            printf("%-28s %-24s %-26s %s\n", json_string_value(json_object_get(b, "id")) ?: "-",
                   json_string_value(json_object_get(b, "directory")) ?: "-",
                   json_string_value(json_object_get(b, "createdAt")) ?: "-", exp ? exp : "Never");
        }
    }
    json_decref(out);
    return 0;
}

int pe_cmd_cp(int argc, char **argv)
{
    if (strcmp(argv[0], "backup") == 0)
        return backup(argc, argv);
    if (strcmp(argv[0], "cp") != 0 && strcmp(argv[0], "copy") != 0)
        return -1;
    if (argc != 3 || argv[1][0] == '-') {
        fprintf(stderr, "usage: pocketenv cp|copy SRC DST   (NAME:/path for a sandbox path)\n");
        return EXIT_USAGE;
    }
    return cp(argc, argv);
}
