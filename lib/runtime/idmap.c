/* Host id ranges for sandbox user namespaces.
 *
 * Each sandbox gets its own range of PE_IDMAP_SIZE host ids (sandbox id 0
 * is host id base), so root in one sandbox owns nothing of the host's nor
 * of another sandbox's files. Ranges are host-wide: every data directory
 * claims from one directory, PE_IDMAP_DIR (or $POCKETENV_IDMAP_DIR, which
 * every pocketenv process of a host must then agree on), so sandboxes of
 * two data directories (a daemon's and a user's) never share host ids.
 * It is on disk, not under /run: the files of a stopped sandbox stay owned
 * by its range across reboots.
 *
 * A range is claimed by creating <dir>/<slot> exclusively, which makes
 * allocation race-free between concurrent commands without a global lock.
 * The file says who holds it: the data directory on the first line, then
 * the owner ("sandbox:NAME:ID", "run:KEY"). It appears with that text in
 * it: written to an unnamed file (O_TMPFILE) that is then linked in
 * (linkat, which fails if the slot is taken). Created empty and written
 * after, a claim whose maker was killed in between stayed empty, owned by
 * no data directory, for ever; gc removes such claims left by older
 * builds (pe__idmap_gc_empty). Release unlinks it, only for the data
 * directory that holds it. Slots start at a random point to keep probing
 * short. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/util.h"
#include "runtime/internal.h"

char *pe__idmap_dir(void)
{
    const char *env = getenv("POCKETENV_IDMAP_DIR");

    return pe_xstrdup(env && *env ? env : PE_IDMAP_DIR);
}

static char *slot_path(uint32_t slot)
{
    cleanup_free char *dir = pe__idmap_dir();

    return pe_xasprintf("%s/%u", dir, slot);
}

int pe__idmap_alloc(const char *data_dir, const char *owner, uint32_t *base, pe_err *err)
{
    cleanup_free char *dir = pe__idmap_dir();
    cleanup_free char *text = pe_xasprintf("%s\n%s\n", data_dir, owner);
    cleanup_fd int tmp = -1;
    char self[64];
    uint32_t start = 0;

    if (pe_fs_mkdir_p(dir, 0700, err) < 0)
        return -1;
    if (getrandom(&start, sizeof(start), 0) != (ssize_t)sizeof(start))
        start = (uint32_t)getpid();
    /* The claim's text, in a file with no name yet. */
    tmp = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (tmp >= 0 && pe_fs_write_all(tmp, text, strlen(text)) < 0)
        return pe_err_sys(err, "claim id range in %s", dir);
    snprintf(self, sizeof(self), "/proc/self/fd/%d", tmp);
    for (uint32_t i = 0; i < PE_IDMAP_SLOTS; i++) {
        uint32_t slot = (start + i) % PE_IDMAP_SLOTS;
        char path[4096];
        int fd;

        snprintf(path, sizeof(path), "%s/%u", dir, slot);
        if (tmp >= 0) {
            if (linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) < 0) {
                if (errno == EEXIST)
                    continue;
                return pe_err_sys(err, "claim id range %s", path);
            }
        } else { /* a filesystem without O_TMPFILE: create, then write */
            fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd < 0 && errno == EEXIST)
                continue;
            if (fd < 0)
                return pe_err_sys(err, "claim id range %s", path);
            if (pe_fs_write_all(fd, text, strlen(text)) < 0) {
                close(fd);
                unlink(path);
                return pe_err_sys(err, "claim id range %s", path);
            }
            close(fd);
        }
        *base = PE_IDMAP_FIRST + slot * PE_IDMAP_SIZE;
        return 0;
    }
    return pe_err_set(err, PE_ESYS, ENOSPC, "no free user id range");
}

/* The owner's line of claim text ("DATA_DIR\nOWNER\n") if data_dir holds
 * it, else NULL: a data directory never frees another's range. */
static const char *claim_owner(const char *text, const char *data_dir)
{
    size_t n = strlen(data_dir);

    return strncmp(text, data_dir, n) == 0 && text[n] == '\n' ? text + n + 1 : NULL;
}

void pe__idmap_release(const char *data_dir, uint32_t base)
{
    cleanup_free char *path = NULL;
    char *text = NULL;

    if (base < PE_IDMAP_FIRST)
        return;
    path = slot_path((base - PE_IDMAP_FIRST) / PE_IDMAP_SIZE);
    if (pe_fs_read_file(path, 8192, &text, NULL, NULL) < 0)
        return;
    if (claim_owner(text, data_dir) != NULL) /* not after a stale release */
        unlink(path);
    free(text);
}

/* Does claim text ("DATA_DIR\nOWNER\n") belong to data_dir, for an owner
 * that begins with prefix and ends with suffix? */
static bool claim_matches(const char *text, const char *data_dir, const char *prefix,
                          const char *suffix)
{
    size_t np = strlen(prefix), ns = strlen(suffix), len;
    const char *owner = claim_owner(text, data_dir);

    if (owner == NULL)
        return false;
    len = strcspn(owner, "\n");
    if (owner[len] != '\n' || owner[len + 1] != '\0' || len < np + ns)
        return false;
    return strncmp(owner, prefix, np) == 0 && strncmp(owner + len - ns, suffix, ns) == 0;
}

/* Release the ranges data_dir holds for an owner that begins with prefix
 * and ends with suffix: for what died before it was done with its range (a
 * create's staging dir, a one-shot run dir), which then needs no file of
 * its own naming the range. Reads every claim: crash cleanup only. */
void pe__idmap_release_owner(const char *data_dir, const char *prefix, const char *suffix)
{
    cleanup_free char *dir = pe__idmap_dir();
    struct dirent *de;
    DIR *d = opendir(dir);

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        cleanup_free char *path = NULL;
        char *text = NULL;

        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        path = pe_xasprintf("%s/%s", dir, de->d_name);
        if (pe_fs_read_file(path, 8192, &text, NULL, NULL) < 0)
            continue;
        if (claim_matches(text, data_dir, prefix, suffix))
            unlink(path);
        free(text);
    }
    closedir(d);
}

/* An empty claim older than this is dead: a claim made by this build is
 * never empty, one made empty and then written stays so for microseconds. */
#define EMPTY_CLAIM_DEAD_S 60

void pe__idmap_gc_empty(void)
{
    cleanup_free char *dir = pe__idmap_dir();
    struct dirent *de;
    DIR *d = opendir(dir);
    time_t now = time(NULL);

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        struct stat st;

        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            st.st_size == 0 && now - st.st_mtime > EMPTY_CLAIM_DEAD_S)
            unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
}

/* A user namespace fd to idmap a mount with: it maps exactly one uid and
 * one gid, disk_uid -> kuid and disk_gid -> kgid, and nothing else. On a
 * mount idmapped with it, files the filesystem says belong to disk_uid
 * appear as kuid (a sandbox's user), what kuid creates is stored as
 * disk_uid, and every other id is unmapped: those files appear as the
 * overflow id, and a sandbox cannot create or chown to them (EOVERFLOW).
 *
 * The namespace is made by a child that only waits to be killed; the open
 * fd keeps it (and later the mount) alive without the child. */
int pe__idmap_userns_single(uint32_t disk_uid, uint32_t disk_gid, uint32_t kuid, uint32_t kgid,
                            pe_err *err)
{
    struct clone_args args;
    cleanup_fd int pidfd = -1;
    char path[64], line[64];
    int nsfd = -1;
    long pid;

    memset(&args, 0, sizeof(args));
    args.flags = CLONE_NEWUSER | CLONE_PIDFD;
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    args.exit_signal = SIGCHLD;
    pe__fork_guard(true);
    pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0)
        for (;;)
            pause();
    pe__fork_guard(false);
    if (pid < 0)
        return pe_err_sys(err, "make a user namespace for an idmapped mount");
    snprintf(path, sizeof(path), "/proc/%ld/uid_map", pid);
    snprintf(line, sizeof(line), "%u %u 1\n", disk_uid, kuid);
    if (pe_fs_write_str(path, line, err) < 0)
        goto out;
    snprintf(path, sizeof(path), "/proc/%ld/gid_map", pid);
    snprintf(line, sizeof(line), "%u %u 1\n", disk_gid, kgid);
    if (pe_fs_write_str(path, line, err) < 0)
        goto out;
    snprintf(path, sizeof(path), "/proc/%ld/ns/user", pid);
    nsfd = open(path, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0)
        pe_err_sys(err, "open %s", path);
out:
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
    waitpid((pid_t)pid, NULL, 0);
    return nsfd;
}
