/* Unit tests of lib/core: sizes, names, errors, atomic writes, rm -rf. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>
#include <sys/stat.h>

#include "core/fs.h"
#include "core/util.h"
#include "task.h"

TEST_CASE(parse_size)
{
    long long v = 0;
    ASSERT_EQ_INT(pe_parse_size("512", &v), 0);
    ASSERT_EQ_INT(v, 512);
    ASSERT_EQ_INT(pe_parse_size("64k", &v), 0);
    ASSERT_EQ_INT(v, 65536);
    ASSERT_EQ_INT(pe_parse_size("512m", &v), 0);
    ASSERT_EQ_INT(v, 512LL << 20);
    ASSERT_EQ_INT(pe_parse_size("1.5G", &v), 0);
    ASSERT_EQ_INT(v, 3LL << 29);
    ASSERT_EQ_INT(pe_parse_size("2GiB", &v), 0);
    ASSERT_EQ_INT(v, 2LL << 30);
    ASSERT_EQ_INT(pe_parse_size("", &v), -1);
    ASSERT_EQ_INT(pe_parse_size("-5m", &v), -1);
    ASSERT_EQ_INT(pe_parse_size("lots", &v), -1);
    ASSERT_EQ_INT(pe_parse_size("5x", &v), -1);
    ASSERT_EQ_INT(pe_parse_size("99999999999999T", &v), -1);
    ASSERT_EQ_INT(pe_parse_size("nan", &v), -1);
}

TEST_CASE(name_valid)
{
    ASSERT(pe_name_valid("box-1_a.b"));
    ASSERT(!pe_name_valid(""));
    ASSERT(!pe_name_valid(".."));
    ASSERT(!pe_name_valid("a/b"));
    ASSERT(!pe_name_valid(".hidden"));
    ASSERT(!pe_name_valid("a b"));
    ASSERT(pe_name_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    ASSERT(!pe_name_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}

TEST_CASE(error_context)
{
    pe_err e;
    errno = ENOENT;
    ASSERT_EQ_INT(pe_err_sys(&e, "open %s", "/x"), -1);
    ASSERT_EQ_INT(pe_err_prefix(&e, "start sandbox %s", "b"), -1);
    ASSERT_EQ_STR(e.msg, "start sandbox b: open /x: No such file or directory");
    ASSERT_EQ_INT(e.code, PE_ESYS);
    ASSERT_EQ_INT(e.errnum, ENOENT);
    ASSERT_EQ_INT(pe_err_set(NULL, PE_EINVAL, 0, "ignored"), -1);
}

TEST_CASE(atomic_write_and_bounded_read)
{
    char dir[] = "/tmp/pe-core-XXXXXX";
    char *text = NULL;
    size_t len = 0;
    pe_err e;
    ASSERT(mkdtemp(dir) != NULL);
    cleanup_free char *p = pe_xasprintf("%s/f", dir);
    ASSERT_EQ_INT(pe_fs_write_atomic(p, "hello", 5, 0600, &e), 0);
    ASSERT_EQ_INT(pe_fs_write_atomic(p, "world!", 6, 0600, &e), 0);
    ASSERT_EQ_INT(pe_fs_read_file(p, 100, &text, &len, &e), 0);
    ASSERT_EQ_STR(text, "world!");
    ASSERT_EQ_INT(len, 6);
    free(text);
    {
        /* A stale, world-readable tmp file does not loosen the result. */
        cleanup_free char *stale = pe_xasprintf("%s.tmp.%d", p, (int)getpid());
        struct stat st;
        int fd = open(stale, O_WRONLY | O_CREAT, 0644);
        ASSERT(fd >= 0);
        close(fd);
        ASSERT_EQ_INT(chmod(stale, 0644), 0);
        ASSERT_EQ_INT(pe_fs_write_atomic(p, "again", 5, 0600, &e), 0);
        ASSERT_EQ_INT(stat(p, &st), 0);
        ASSERT_EQ_INT(st.st_mode & 0777, 0600);
    }
    ASSERT_EQ_INT(pe_fs_read_file(p, 3, &text, &len, &e), -1);
    ASSERT_EQ_INT(e.errnum, E2BIG);
    ASSERT_EQ_INT(pe_fs_rm_rf(dir, &e), 0);
}

/* pe_fs_write_whole (a start's state): the same replace as the atomic
 * write, its mode, no temporary file left beside it. */
TEST_CASE(whole_write_replaces)
{
    char dir[] = "/tmp/pe-core-XXXXXX";
    char *text = NULL;
    struct stat st;
    pe_err e;
    ASSERT(mkdtemp(dir) != NULL);
    cleanup_free char *p = pe_xasprintf("%s/state.json", dir);
    cleanup_free char *tmp = pe_xasprintf("%s.tmp.%d", p, (int)getpid());
    ASSERT_EQ_INT(pe_fs_write_atomic(p, "created", 7, 0600, &e), 0);
    ASSERT_EQ_INT(pe_fs_write_whole(p, "running", 7, 0600, &e), 0);
    ASSERT_EQ_INT(pe_fs_read_file(p, 100, &text, NULL, &e), 0);
    ASSERT_EQ_STR(text, "running");
    free(text);
    ASSERT_EQ_INT(stat(p, &st), 0);
    ASSERT_EQ_INT(st.st_mode & 0777, 0600);
    ASSERT_EQ_INT(access(tmp, F_OK), -1);
    ASSERT_EQ_INT(pe_fs_rm_rf(dir, &e), 0);
}

TEST_CASE(rm_rf_does_not_follow_symlinks_or_cross_mounts)
{
    char dir[] = "/tmp/pe-core-XXXXXX";
    char keep[] = "/tmp/pe-keep-XXXXXX";
    pe_err e;
    ASSERT(mkdtemp(dir) != NULL && mkdtemp(keep) != NULL);
    cleanup_free char *kf = pe_xasprintf("%s/precious", keep);
    cleanup_free char *link = pe_xasprintf("%s/link", dir);
    cleanup_free char *sub = pe_xasprintf("%s/a/b/c", dir);
    cleanup_free char *mnt = pe_xasprintf("%s/mnt", dir);
    ASSERT_EQ_INT(pe_fs_write_atomic(kf, "x", 1, 0600, &e), 0);
    ASSERT_EQ_INT(symlink(keep, link), 0);
    ASSERT_EQ_INT(pe_fs_mkdir_p(sub, 0755, &e), 0);
    ASSERT_EQ_INT(pe_fs_mkdir_p(mnt, 0755, &e), 0);
    if (geteuid() == 0 && unshare(CLONE_NEWNS) == 0 &&
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
        mount("tmpfs", mnt, "tmpfs", 0, NULL) == 0) {
        ASSERT_EQ_INT(pe_fs_rm_rf(dir, &e), -1);
        ASSERT_EQ_INT(e.errnum, EXDEV);
        ASSERT_EQ_INT(umount(mnt), 0);
    }
    ASSERT_EQ_INT(pe_fs_rm_rf(dir, &e), 0);
    ASSERT_EQ_INT(access(dir, F_OK), -1);
    ASSERT_EQ_INT(access(kf, F_OK), 0);
    ASSERT_EQ_INT(pe_fs_rm_rf(keep, &e), 0);
}

/* Build dir/d/d/... depth levels deep, relative to one fd at a time (a
 * path that long could not be named), with a symlink to keep, a fifo and
 * a symlink to keep's file at every 500th level. */
static void make_hostile_chain(const char *dir, const char *keep, int depth)
{
    cleanup_free char *kf = pe_xasprintf("%s/precious", keep);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    ASSERT(fd >= 0);
    for (int i = 0; i < depth; i++) {
        int next;
        if (i % 500 == 0) {
            ASSERT_EQ_INT(symlinkat(keep, fd, "up"), 0);
            ASSERT_EQ_INT(symlinkat(kf, fd, "file"), 0);
            ASSERT_EQ_INT(mkfifoat(fd, "fifo", 0600), 0);
        }
        ASSERT_EQ_INT(mkdirat(fd, "d", 0700), 0);
        next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT(next >= 0);
        close(fd);
        fd = next;
    }
    /* A name the remover would pick for a moved subtree is taken. */
    ASSERT_EQ_INT(mkdirat(fd, ".pe-rm-0", 0), 0);
    close(fd);
}

/* The attack of a sandbox on its own removal: deeper than any recursion
 * or fd budget, hostile links at every level. */
TEST_CASE(rm_rf_any_depth_without_following)
{
    char dir[] = "/tmp/pe-core-XXXXXX";
    char keep[] = "/tmp/pe-keep-XXXXXX";
    pe_err e;
    struct stat st;
    ASSERT(mkdtemp(dir) != NULL && mkdtemp(keep) != NULL);
    cleanup_free char *kf = pe_xasprintf("%s/precious", keep);
    ASSERT_EQ_INT(pe_fs_write_atomic(kf, "x", 1, 0600, &e), 0);
    make_hostile_chain(dir, keep, 5000);
    {
        cleanup_free char *top = pe_xasprintf("%s/.pe-rm-1", dir);
        ASSERT_EQ_INT(mkdir(top, 0755), 0); /* taken at the top too */
    }
    ASSERT_EQ_INT(pe_fs_rm_rf(dir, &e), 0);
    ASSERT_EQ_INT(lstat(dir, &st), -1);
    ASSERT_EQ_INT(stat(kf, &st), 0);
    ASSERT_EQ_INT(st.st_size, 1);
    /* A symlink or a missing path is removed / nothing to do. */
    {
        cleanup_free char *link = pe_xasprintf("%s/link", keep);
        ASSERT_EQ_INT(symlink(keep, link), 0);
        ASSERT_EQ_INT(pe_fs_rm_rf(link, &e), 0);
        ASSERT_EQ_INT(lstat(link, &st), -1);
        ASSERT_EQ_INT(access(kf, F_OK), 0);
        ASSERT_EQ_INT(pe_fs_rm_rf(link, &e), 0);
    }
    ASSERT_EQ_INT(pe_fs_rm_rf(keep, &e), 0);
}

int main(void)
{
    return RUN_TESTS(parse_size, name_valid, error_context, atomic_write_and_bounded_read,
                     whole_write_replaces, rm_rf_does_not_follow_symlinks_or_cross_mounts,
                     rm_rf_any_depth_without_following);
}
