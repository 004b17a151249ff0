/* Image store, builders and import. Every case gets its own data directory
 * under a fresh mkdtemp base, removed at exit. Archives are made here with
 * libarchive's write API, hostile ones included: each attack checks both
 * the error and that nothing appeared outside the image, and that no image
 * or staging directory is left. The debian builder needs the network and a
 * minute; it only runs with PE_TEST_SLOW=1. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "core/fs.h"
#include "core/util.h"
#include "image/image-internal.h"
#include "image/image.h"
#include "task.h"

static char base[64];
static char data[128];
static pid_t owner_pid;

static void teardown(void)
{
    if (getpid() == owner_pid && base[0] != '\0')
        pe_fs_rm_rf(base, NULL);
}

static void setup(void)
{
    snprintf(base, sizeof(base), "/tmp/pe-test-image-XXXXXX");
    if (mkdtemp(base) == NULL)
        TEST_FAIL("mkdtemp: %s", strerror(errno));
    snprintf(data, sizeof(data), "%s/data", base);
    owner_pid = getpid();
    atexit(teardown);
}

/* Strings that live as long as the case: kept reachable here, so cases
 * can build paths inline and LeakSanitizer has nothing to report. */
static char *hold(char *s)
{
    static char *all[1024];
    static size_t n;

    if (n == PE_ARRAY_LEN(all))
        TEST_FAIL("too many test strings");
    all[n++] = s;
    return s;
}

#define P(...) hold(pe_xasprintf(__VA_ARGS__))

/* DATA/images/<name>[/<sub>] */
static char *img_path(const char *name, const char *sub)
{
    return sub ? P("%s/images/%s/%s", data, name, sub) : P("%s/images/%s", data, name);
}

static int exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static char *slurp(const char *path)
{
    char *s = NULL;
    pe_err err = {0};

    if (pe_fs_read_file(path, 1 << 20, &s, NULL, &err) < 0)
        TEST_FAIL("%s", err.msg);
    return hold(s);
}

/* Entries of DATA/images other than ".", ".." and ".lock". */
static int images_entries(void)
{
    char *dir = P("%s/images", data);
    struct dirent *de;
    int n = 0;
    DIR *d = opendir(dir);

    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, ".lock"))
            n++;
    closedir(d);
    return n;
}

static void build_busybox(const char *name)
{
    pe_err err = {0};

    if (access("/bin/busybox", X_OK) < 0)
        TEST_SKIP("no /bin/busybox (busybox-static)");
    if (pe_image_build(data, "busybox", name, NULL, &err) < 0)
        TEST_FAIL("build %s: %s", name, err.msg);
}

/* ---- archives --------------------------------------------------------- */

typedef struct {
    const char *path;
    char type;        /* f file, d dir, s symlink, h hard link, c char device, p fifo */
    const char *data; /* contents or link target */
    int mode;
} ent;

/* xattrs (NULL or name, value, ..., NULL) go on every regular file. */
static void make_tar_x(const char *out, const char *filter, const ent *ents, size_t n,
                       const char *const *xattrs)
{
    struct archive *a = archive_write_new();

    archive_write_set_format_pax(a);
    if (filter && strcmp(filter, "gzip") == 0)
        ASSERT(archive_write_add_filter_gzip(a) >= ARCHIVE_WARN);
    if (filter && strcmp(filter, "zstd") == 0)
        ASSERT(archive_write_add_filter_zstd(a) >= ARCHIVE_WARN);
    if (filter && strcmp(filter, "xz") == 0)
        ASSERT(archive_write_add_filter_xz(a) >= ARCHIVE_WARN);
    ASSERT_EQ_INT(archive_write_open_filename(a, out), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        size_t len = ents[i].type == 'f' ? strlen(ents[i].data) : 0;

        archive_entry_set_pathname(e, ents[i].path);
        archive_entry_set_perm(e, ents[i].mode ? ents[i].mode : 0755);
        archive_entry_set_uid(e, 0);
        archive_entry_set_gid(e, 0);
        archive_entry_set_mtime(e, 1700000000, 0);
        switch (ents[i].type) {
        case 'f':
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_size(e, (la_int64_t)len);
            break;
        case 'd':
            archive_entry_set_filetype(e, AE_IFDIR);
            break;
        case 's':
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_symlink(e, ents[i].data);
            break;
        case 'h':
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_hardlink(e, ents[i].data);
            break;
        case 'c':
            archive_entry_set_filetype(e, AE_IFCHR);
            archive_entry_set_rdev(e, makedev(1, 3));
            break;
        case 'p':
            archive_entry_set_filetype(e, AE_IFIFO);
            break;
        default:
            TEST_FAIL("bad entry type %c", ents[i].type);
        }
        for (const char *const *x = xattrs; ents[i].type == 'f' && x && x[0]; x += 2)
            archive_entry_xattr_add_entry(e, x[0], x[1], strlen(x[1]));
        if (archive_write_header(a, e) < ARCHIVE_WARN)
            TEST_FAIL("write header %s: %s", ents[i].path, archive_error_string(a));
        if (len > 0)
            ASSERT_EQ_INT(archive_write_data(a, ents[i].data, len), len);
        archive_entry_free(e);
    }
    ASSERT_EQ_INT(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

static void make_tar(const char *out, const char *filter, const ent *ents, size_t n)
{
    make_tar_x(out, filter, ents, n, NULL);
}

static const ent basic_tree[] = {
    {"./", 'd', NULL, 0755},
    {"./bin", 'd', NULL, 0755},
    {"./bin/hello", 'f', "#!/bin/sh\necho hi\n", 0755},
    {"./etc", 'd', NULL, 0755},
    {"./etc/motd", 'f', "hello\n", 0640},
    {"./etc/link", 's', "motd", 0777},
    {"./etc/hard", 'h', "./etc/motd", 0640},
};

static void check_basic_import(const char *filter, const char *file)
{
    char *tar = P("%s/%s", base, file);
    char *root = NULL;
    char *motd = NULL;
    char *hello = NULL;
    char *json = NULL;
    char buf[64] = {0};
    struct stat a, b;
    pe_err err = {0};

    make_tar(tar, filter, basic_tree, PE_ARRAY_LEN(basic_tree));
    if (pe_image_import(data, "imp", tar, &err) < 0)
        TEST_FAIL("import %s: %s", file, err.msg);
    root = img_path("imp", "rootfs");
    hello = P("%s/bin/hello", root);
    motd = P("%s/etc/motd", root);
    ASSERT_EQ_STR(slurp(hello), "#!/bin/sh\necho hi\n");
    ASSERT_EQ_STR(slurp(motd), "hello\n");
    ASSERT_EQ_INT(stat(hello, &a), 0);
    ASSERT_EQ_INT(a.st_mode & 07777, 0755);
    ASSERT_EQ_INT(stat(motd, &a), 0);
    ASSERT_EQ_INT(a.st_mode & 07777, 0640);
    ASSERT_EQ_INT(a.st_mtime, 1700000000);
    ASSERT(readlink(P("%s/etc/link", root), buf, sizeof(buf) - 1) > 0);
    ASSERT_EQ_STR(buf, "motd");
    ASSERT_EQ_INT(stat(P("%s/etc/hard", root), &b), 0);
    ASSERT_EQ_INT(a.st_ino, b.st_ino);
    json = slurp(img_path("imp", "image.json"));
    ASSERT_CONTAINS(json, "\"source\": \"import ");
    ASSERT_EQ_INT(images_entries(), 1);
}

/* Import must fail, leave no image and no staging directory. */
static void expect_refused(const ent *ents, size_t n, const char *want)
{
    char *tar = P("%s/hostile.tar", base);
    pe_image_info *v = NULL;
    size_t count = 9;
    pe_err err = {0};

    make_tar(tar, NULL, ents, n);
    ASSERT_EQ_INT(pe_image_import(data, "hostile", tar, &err), -1);
    ASSERT_CONTAINS(err.msg, "import image hostile");
    if (want != NULL)
        ASSERT_CONTAINS(err.msg, want);
    ASSERT_EQ_INT(images_entries(), 0);
    ASSERT_EQ_INT(pe_image_list(data, &v, &count, &err), 0);
    ASSERT_EQ_INT(count, 0);
    pe_image_info_free(v, count);
}

/* ---- builders and store ----------------------------------------------- */

TEST_CASE(busybox_build)
{
    char *root = NULL;
    char buf[64] = {0};
    struct stat sb;
    int status = 0;
    pid_t pid;

    setup();
    build_busybox("bb");
    root = img_path("bb", "rootfs");
    ASSERT(readlink(P("%s/bin/sh", root), buf, sizeof(buf) - 1) > 0);
    ASSERT_EQ_STR(buf, "/bin/busybox");
    ASSERT_EQ_INT(lstat(P("%s/bin/busybox", root), &sb), 0);
    ASSERT(S_ISREG(sb.st_mode));
    ASSERT_EQ_INT(sb.st_mode & 07777, 0755);
    ASSERT_CONTAINS(slurp(P("%s/etc/passwd", root)), "root:x:0:0:root:/root:/bin/sh");
    ASSERT_CONTAINS(slurp(P("%s/etc/passwd", root)), "nobody:x:65534:65534:");
    ASSERT_CONTAINS(slurp(P("%s/etc/group", root)), "root:x:0:");
    ASSERT_CONTAINS(slurp(P("%s/etc/hosts", root)), "127.0.0.1\tlocalhost");
    ASSERT_EQ_STR(slurp(P("%s/etc/resolv.conf", root)), "");
    ASSERT(exists(P("%s/etc/hostname", root)));
    ASSERT_EQ_INT(stat(P("%s/tmp", root), &sb), 0);
    ASSERT_EQ_INT(sb.st_mode & 07777, 01777);
    ASSERT_EQ_INT(stat(P("%s/var/tmp", root), &sb), 0);
    ASSERT_EQ_INT(sb.st_mode & 07777, 01777);
    for (const char *d = "proc\0sys\0dev\0root\0home\0run\0usr/sbin\0"; *d; d += strlen(d) + 1) {
        ASSERT_EQ_INT(stat(P("%s/%s", root, d), &sb), 0);
        ASSERT(S_ISDIR(sb.st_mode));
    }
    if (geteuid() == 0) {
        ASSERT_EQ_INT(lstat(P("%s/usr/bin/awk", root), &sb), 0);
        ASSERT_EQ_INT(sb.st_uid, 0);
        ASSERT_EQ_INT(sb.st_gid, 0);
    }
    /* The copied binary runs on its own. */
    pid = fork();
    if (pid == 0) {
        execl(P("%s/bin/busybox", root), "busybox", "true", (char *)NULL);
        _exit(127);
    }
    ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT_EQ_INT(images_entries(), 1);
}

TEST_CASE(list_sorted_with_metadata)
{
    char *broken = NULL;
    pe_image_info *v = NULL;
    size_t n = 0;
    pe_err err = {0};

    setup();
    ASSERT_EQ_INT(pe_image_list(data, &v, &n, &err), 0); /* no DATA yet */
    ASSERT_EQ_INT(n, 0);
    build_busybox("b2");
    build_busybox("a1");
    broken = img_path("broken", NULL);
    ASSERT_EQ_INT(mkdir(broken, 0755), 0);
    ASSERT_EQ_INT(pe_fs_write_atomic(P("%s/image.json", broken), "{nope", 5, 0644, &err), 0);
    ASSERT_EQ_INT(pe_image_list(data, &v, &n, &err), 0);
    ASSERT_EQ_INT(n, 2);
    ASSERT_EQ_STR(v[0].name, "a1");
    ASSERT_EQ_STR(v[1].name, "b2");
    ASSERT(v[0].size > 1000000); /* busybox itself is ~2 MB */
    ASSERT(v[0].created > 1700000000);
    ASSERT_CONTAINS(v[0].source, "busybox");
    pe_image_info_free(v, n);
    /* one by name, as the list has it (a template's create asks so) */
    ASSERT(pe_image_listed(data, "a1"));
    ASSERT(!pe_image_listed(data, "broken"));
    ASSERT(!pe_image_listed(data, "missing"));
    ASSERT(!pe_image_listed(data, "../images/a1"));
}

TEST_CASE(build_twice_is_eexist)
{
    pe_err err = {0};

    setup();
    build_busybox("bb");
    ASSERT_EQ_INT(pe_image_build(data, "busybox", "bb", NULL, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    ASSERT_CONTAINS(err.msg, "image bb already exists");
    ASSERT_EQ_INT(images_entries(), 1);
}

TEST_CASE(invalid_names_create_nothing)
{
    static const char *const bad[] = {"../x", "a/b", "", ".hidden", "..", "x y"};
    char *tar = NULL;
    pe_err err = {0};
    char *out = NULL;

    setup();
    tar = P("%s/t.tar", base);
    make_tar(tar, NULL, basic_tree, PE_ARRAY_LEN(basic_tree));
    for (size_t i = 0; i < PE_ARRAY_LEN(bad); i++) {
        ASSERT_EQ_INT(pe_image_build(data, "busybox", bad[i], NULL, &err), -1);
        ASSERT_EQ_INT(err.code, PE_EINVAL);
        ASSERT_EQ_INT(pe_image_import(data, bad[i], tar, &err), -1);
        ASSERT_EQ_INT(err.code, PE_EINVAL);
        if (strchr(bad[i], '/') == NULL) {
            ASSERT_EQ_INT(pe_image_remove(data, bad[i], &err), -1);
            ASSERT_EQ_INT(err.code, PE_EINVAL);
            ASSERT_EQ_INT(pe_image_resolve(data, bad[i], &out, &err), -1);
            ASSERT_EQ_INT(err.code, PE_EINVAL);
        }
    }
    ASSERT_EQ_INT(pe_image_build(data, "busybox", NULL, NULL, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT(!exists(data));
    ASSERT(!exists(P("%s/x", base)));
}

TEST_CASE(bad_builder_arguments)
{
    pe_err err = {0};

    setup();
    ASSERT_EQ_INT(pe_image_build(data, "alpine", "a", NULL, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_CONTAINS(err.msg, "unknown image builder \"alpine\"");
    ASSERT_EQ_INT(pe_image_build(data, NULL, "a", NULL, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_EQ_INT(pe_image_build(data, "debian", "d", "--foreign", &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_CONTAINS(err.msg, "invalid mirror");
    ASSERT_EQ_INT(pe_image_build(data, "debian", "d", "http://x/\ndeb http://evil/", &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_EQ_INT(pe_image_build(data, "debian", "d", "", &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_EQ_INT(pe_image_build(data, "debian", "d", "/etc/apt/sources.list", &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_EQ_INT(pe_image_build(data, "debian", "d", "http://x/debian bookworm contrib", &err),
                  -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT(!exists(data));
}

TEST_CASE(debian_without_mmdebstrap)
{
    pe_err err = {0};

    setup();
    setenv("PATH", "/nonexistent", 1);
    ASSERT_EQ_INT(pe_image_build(data, "debian", "deb", NULL, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EUNSUP);
    ASSERT_CONTAINS(err.msg, "mmdebstrap not found: install mmdebstrap");
    ASSERT_EQ_INT(images_entries(), 0);
}

TEST_CASE(resolve_dir_name_unknown)
{
    char *out = NULL;
    char real[PATH_MAX];
    char *want = NULL;
    pe_err err = {0};

    setup();
    ASSERT(realpath(base, real) != NULL);
    ASSERT_EQ_INT(pe_image_resolve(data, base, &out, &err), 0);
    ASSERT_EQ_STR(out, real);
    free(out);
    ASSERT_EQ_INT(pe_image_resolve(data, "/nonexistent/rootfs", &out, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_CONTAINS(err.msg, "image directory /nonexistent/rootfs does not exist");
    ASSERT(out == NULL);
    ASSERT_EQ_INT(pe_image_resolve(data, "/etc/passwd", &out, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_image_resolve(data, "nope", &out, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_CONTAINS(err.msg, "unknown image nope (see: pocketenv image ls)");
    ASSERT(!exists(P("%s/images/nope", data)));
    build_busybox("bb");
    ASSERT_EQ_INT(pe_image_resolve(data, "bb", &out, &err), 0);
    want = P("%s/data/images/bb/rootfs", real);
    ASSERT_EQ_STR(out, want);
    free(out);
}

/* Four sandboxes ask for "busybox" at once: one build, four answers. */
TEST_CASE(resolve_builds_on_demand_once)
{
    char *want = NULL;
    char real[PATH_MAX];
    pid_t pids[4];

    setup();
    if (access("/bin/busybox", X_OK) < 0)
        TEST_SKIP("no /bin/busybox (busybox-static)");
    ASSERT(realpath(base, real) != NULL);
    want = P("%s/data/images/busybox/rootfs", real);
    for (size_t i = 0; i < PE_ARRAY_LEN(pids); i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            char *out = NULL;
            pe_err err = {0};
            int r = pe_image_resolve(data, "busybox", &out, &err);
            if (r < 0)
                fprintf(stderr, "  resolve: %s\n", err.msg);
            _exit(r == 0 && strcmp(out, want) == 0 ? 0 : 1);
        }
    }
    for (size_t i = 0; i < PE_ARRAY_LEN(pids); i++) {
        int status = 0;
        ASSERT_EQ_INT(waitpid(pids[i], &status, 0), pids[i]);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    ASSERT_EQ_INT(images_entries(), 1);
    ASSERT(exists(P("%s/bin/sh", want)));
}

TEST_CASE(remove_image)
{
    pe_image_info *v = NULL;
    size_t n = 9;
    pe_err err = {0};

    setup();
    build_busybox("bb");
    ASSERT_EQ_INT(pe_image_remove(data, "bb", &err), 0);
    ASSERT_EQ_INT(pe_image_list(data, &v, &n, &err), 0);
    ASSERT_EQ_INT(n, 0);
    ASSERT_EQ_INT(images_entries(), 0);
    ASSERT_EQ_INT(pe_image_remove(data, "bb", &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_CONTAINS(err.msg, "unknown image bb");
}

TEST_CASE(gc_removes_dead_leftovers)
{
    char *dead = NULL;
    char *dead_rm = NULL;
    char *live = NULL;
    char *keep = NULL;
    char *odd = NULL;
    pe_err err = {0};

    setup();
    if (kill(999999, 0) == 0 || errno != ESRCH)
        TEST_SKIP("pid 999999 exists");
    ASSERT_EQ_INT(pe_image_gc(data, &err), 0); /* nothing there yet */
    dead = img_path(".tmp-x-999999", NULL);
    dead_rm = img_path(".tmp-rm-y-999999", NULL);
    live = P("%s/images/.tmp-z-%d", data, (int)getpid());
    keep = img_path("keep", NULL);
    odd = img_path(".tmp-nopid", NULL);
    ASSERT_EQ_INT(pe_fs_mkdir_p(P("%s/rootfs/etc", dead), 0755, &err), 0);
    ASSERT_EQ_INT(pe_fs_mkdir_p(dead_rm, 0755, &err), 0);
    ASSERT_EQ_INT(pe_fs_mkdir_p(live, 0755, &err), 0);
    ASSERT_EQ_INT(pe_fs_mkdir_p(keep, 0755, &err), 0);
    ASSERT_EQ_INT(pe_fs_mkdir_p(odd, 0755, &err), 0);
    ASSERT_EQ_INT(pe_image_gc(data, &err), 0);
    ASSERT(!exists(dead));
    ASSERT(!exists(dead_rm));
    ASSERT(exists(live));
    ASSERT(exists(keep));
    ASSERT(exists(odd));
}

TEST_CASE(member_path_rules)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"a", "a"},       {"./a/b", "a/b"},       {"a//b/", "a/b"}, {"./", ""},     {".", ""},
        {"a/./b", "a/b"}, {"..a/b..", "..a/b.."}, {"/a", NULL},     {"../a", NULL}, {"a/..", NULL},
        {"a/../b", NULL}, {"./../a", NULL},       {"//a", NULL},
    };

    for (size_t i = 0; i < PE_ARRAY_LEN(cases); i++) {
        char *out = NULL;
        int r = pe__image_member_path(cases[i].in, &out);
        if (cases[i].out == NULL) {
            if (r != -1)
                TEST_FAIL("\"%s\" accepted as \"%s\"", cases[i].in, out);
        } else {
            ASSERT_EQ_INT(r, 0);
            ASSERT_EQ_STR(out, cases[i].out);
        }
        free(out);
    }
}

/* ---- import ----------------------------------------------------------- */

TEST_CASE(import_tar)
{
    setup();
    check_basic_import(NULL, "root.tar");
}

TEST_CASE(import_tar_gz)
{
    setup();
    check_basic_import("gzip", "root.tar.gz");
}

TEST_CASE(import_tar_zst_and_xz)
{
    pe_err err = {0};

    setup();
    check_basic_import("zstd", "root.tar.zst");
    ASSERT_EQ_INT(pe_image_remove(data, "imp", &err), 0);
    check_basic_import("xz", "root.tar.xz");
}

TEST_CASE(import_refuses_dotdot)
{
    static const char *const names[] = {"../evil", "a/../../evil", "../../../../evil",
                                        "./../../../../evil"};

    setup();
    for (size_t i = 0; i < PE_ARRAY_LEN(names); i++) {
        const ent t[] = {{"ok", 'f', "fine", 0644}, {names[i], 'f', "pwned", 0644}};
        expect_refused(t, PE_ARRAY_LEN(t), "refusing member");
        ASSERT(!exists(P("%s/evil", base)));
        ASSERT(!exists(P("%s/images/evil", data)));
    }
}

TEST_CASE(import_refuses_absolute)
{
    char *abs = NULL;

    setup();
    abs = P("%s/abs-evil", base);
    const ent t[] = {{"ok", 'f', "fine", 0644}, {abs, 'f', "pwned", 0644}};
    expect_refused(t, PE_ARRAY_LEN(t), "refusing member");
    ASSERT(!exists(abs));
}

/* A symlink to the outside, then a member written through it. */
TEST_CASE(import_refuses_write_through_symlink)
{
    char *outside = NULL;

    setup();
    outside = P("%s/outside", base);
    ASSERT_EQ_INT(mkdir(outside, 0755), 0);
    const ent abs_link[] = {{"link", 's', outside, 0777}, {"link/evil", 'f', "pwned", 0644}};
    expect_refused(abs_link, PE_ARRAY_LEN(abs_link), "symlink");
    const ent rel_link[] = {{"d", 'd', NULL, 0755},
                            {"d/up", 's', "../../../../../outside", 0777},
                            {"d/up/evil", 'f', "pwned", 0644}};
    expect_refused(rel_link, PE_ARRAY_LEN(rel_link), "symlink");
    const ent dir_link[] = {{"etc", 's', outside, 0777}, {"etc/sub", 'd', NULL, 0755}};
    expect_refused(dir_link, PE_ARRAY_LEN(dir_link), "symlink");
    ASSERT(!exists(P("%s/evil", outside)));
    ASSERT(!exists(P("%s/sub", outside)));
}

/* "./" as a symlink would carry every later member out of the tree. */
TEST_CASE(import_refuses_root_symlink)
{
    char *outside = NULL;

    setup();
    outside = P("%s/outside", base);
    ASSERT_EQ_INT(mkdir(outside, 0755), 0);
    const ent t[] = {{"./", 's', outside, 0777}, {"./evil", 'f', "pwned", 0644}};
    expect_refused(t, PE_ARRAY_LEN(t), "the root must be a directory");
    ASSERT(!exists(P("%s/evil", outside)));
}

/* Overlayfs reads trusted.overlay.* (and user.overlay.* with userxattr)
 * on lower layers: an image must not be able to set them. */
TEST_CASE(import_filters_xattrs)
{
    static const char *const xattrs[] = {
        "user.keep", "yes", "trusted.overlay.opaque", "y", "user.overlay.redirect", "/etc", NULL};
    const ent t[] = {{"f", 'f', "hi", 0644}};
    char *tar = NULL, *probe = NULL, *f = NULL;
    char buf[16] = {0};
    pe_err err = {0};

    setup();
    probe = P("%s/probe", base);
    ASSERT_EQ_INT(pe_fs_write_atomic(probe, "", 0, 0644, &err), 0);
    if (setxattr(probe, "user.probe", "1", 1, 0) < 0)
        TEST_SKIP("no user xattrs on %s: %s", base, strerror(errno));
    tar = P("%s/x.tar", base);
    make_tar_x(tar, NULL, t, PE_ARRAY_LEN(t), xattrs);
    if (pe_image_import(data, "x", tar, &err) < 0)
        TEST_FAIL("%s", err.msg);
    f = img_path("x", "rootfs/f");
    ASSERT_EQ_INT(getxattr(f, "user.keep", buf, sizeof(buf)), 3);
    ASSERT_EQ_STR(buf, "yes");
    ASSERT_EQ_INT(getxattr(f, "trusted.overlay.opaque", buf, sizeof(buf)), -1);
    ASSERT_EQ_INT(errno, ENODATA);
    ASSERT_EQ_INT(getxattr(f, "user.overlay.redirect", buf, sizeof(buf)), -1);
    ASSERT_EQ_INT(errno, ENODATA);
}

TEST_CASE(import_refuses_hardlinks_outside)
{
    char *victim = NULL;
    struct stat before, sb;
    pe_err err = {0};

    setup();
    victim = P("%s/victim", base);
    ASSERT_EQ_INT(pe_fs_write_atomic(victim, "secret\n", 7, 0644, &err), 0);
    ASSERT_EQ_INT(stat("/etc/passwd", &before), 0);
    const ent to_etc[] = {{"h", 'h', "/etc/passwd", 0644}};
    expect_refused(to_etc, PE_ARRAY_LEN(to_etc), "hard link target");
    const ent to_up[] = {{"h", 'h', "../../../../victim", 0644}};
    expect_refused(to_up, PE_ARRAY_LEN(to_up), "hard link target");
    const ent via_link[] = {{"link", 's', base, 0777}, {"h", 'h', "link/victim", 0644}};
    expect_refused(via_link, PE_ARRAY_LEN(via_link), NULL);
    ASSERT_EQ_INT(stat("/etc/passwd", &sb), 0);
    ASSERT_EQ_INT(sb.st_nlink, before.st_nlink);
    ASSERT_EQ_INT(stat(victim, &sb), 0);
    ASSERT_EQ_INT(sb.st_nlink, 1);
}

TEST_CASE(import_skips_devices_and_fifos)
{
    char *tar = NULL;
    char *root = NULL;
    const ent t[] = {{"dev", 'd', NULL, 0755},
                     {"dev/null", 'c', NULL, 0666},
                     {"fifo", 'p', NULL, 0644},
                     {"ok", 'f', "fine", 0644}};
    pe_err err = {0};

    setup();
    tar = P("%s/dev.tar", base);
    make_tar(tar, NULL, t, PE_ARRAY_LEN(t));
    if (pe_image_import(data, "dev", tar, &err) < 0)
        TEST_FAIL("%s", err.msg);
    root = img_path("dev", "rootfs");
    ASSERT(exists(P("%s/dev", root)));
    ASSERT(!exists(P("%s/dev/null", root)));
    ASSERT(!exists(P("%s/fifo", root)));
    ASSERT_EQ_STR(slurp(P("%s/ok", root)), "fine");
}

TEST_CASE(import_bad_archives)
{
    cleanup_free char *big = pe_xmalloc(512 * 1024);
    char *tar = NULL;
    char *junk = NULL;
    const ent only_dev[] = {{"null", 'c', NULL, 0666}};
    struct stat sb;
    unsigned x = 12345;
    pe_err err = {0};

    setup();
    /* Incompressible content, so half the .gz is half the data. */
    for (size_t i = 0; i < 512 * 1024 - 1; i++) {
        x = x * 1103515245 + 12345;
        big[i] = (char)('a' + (x >> 16) % 26);
    }
    big[512 * 1024 - 1] = '\0';
    const ent t[] = {{"a", 'f', "small", 0644}, {"big", 'f', big, 0644}};
    tar = P("%s/cut.tar.gz", base);
    make_tar(tar, "gzip", t, PE_ARRAY_LEN(t));
    ASSERT_EQ_INT(stat(tar, &sb), 0);
    ASSERT_EQ_INT(truncate(tar, sb.st_size / 2), 0);
    ASSERT_EQ_INT(pe_image_import(data, "cut", tar, &err), -1);
    ASSERT_CONTAINS(err.msg, "import image cut from");
    ASSERT_EQ_INT(images_entries(), 0);

    junk = P("%s/junk.tar", base);
    ASSERT_EQ_INT(pe_fs_write_atomic(junk, "this is not a tarball\n", 22, 0644, &err), 0);
    ASSERT_EQ_INT(pe_image_import(data, "junk", junk, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_CONTAINS(err.msg, "read archive");
    ASSERT_EQ_INT(images_entries(), 0);

    make_tar(junk, NULL, only_dev, PE_ARRAY_LEN(only_dev));
    ASSERT_EQ_INT(pe_image_import(data, "junk", junk, &err), -1);
    ASSERT_CONTAINS(err.msg, "nothing to import");

    ASSERT_EQ_INT(pe_image_import(data, "none", "/nonexistent.tar", &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_CONTAINS(err.msg, "tarball /nonexistent.tar does not exist");
    ASSERT_EQ_INT(images_entries(), 0);
}

TEST_CASE(debian_build_slow)
{
    char *root = NULL;
    pe_err err = {0};

    if (getenv("PE_TEST_SLOW") == NULL || strcmp(getenv("PE_TEST_SLOW"), "1") != 0)
        TEST_SKIP("set PE_TEST_SLOW=1 (needs the network, takes a minute)");
    setup();
    if (pe_image_build(data, "debian", "debian", NULL, &err) < 0)
        TEST_FAIL("%s", err.msg);
    root = img_path("debian", "rootfs");
    ASSERT(exists(P("%s/usr/bin/bash", root)));
    ASSERT(exists(P("%s/usr/bin/git", root)));
    ASSERT_CONTAINS(slurp(P("%s/etc/os-release", root)), "bookworm");
    /* Not the build host's. */
    ASSERT_EQ_STR(slurp(P("%s/etc/resolv.conf", root)), "");
    ASSERT_EQ_STR(slurp(P("%s/etc/hostname", root)), "pocketenv\n");
}

int main(void)
{
    int r =
        RUN_TESTS(busybox_build, list_sorted_with_metadata, build_twice_is_eexist,
                  invalid_names_create_nothing, bad_builder_arguments, debian_without_mmdebstrap,
                  resolve_dir_name_unknown, resolve_builds_on_demand_once, remove_image,
                  gc_removes_dead_leftovers, member_path_rules);
    r |= RUN_TESTS(import_tar, import_tar_gz, import_tar_zst_and_xz, import_refuses_dotdot,
                   import_refuses_absolute, import_refuses_write_through_symlink,
                   import_refuses_root_symlink, import_filters_xattrs,
                   import_refuses_hardlinks_outside, import_skips_devices_and_fifos,
                   import_bad_archives, debian_build_slow);
    return r;
}
