/* pe-escape-probe: attempts to break out of a sandbox, run from inside one
 * by the integration tests. Static, so it needs nothing from the image.
 *
 *   pe-escape-probe chroot-escape FILE   classic chroot breakout, then
 *                                        tries to open FILE from the
 *                                        reached root; prints
 *                                        "reached" or "contained"
 *   pe-escape-probe exe-write            opens /proc/1/exe for writing
 *   pe-escape-probe fds                  lists open fds other than 0-2
 *   pe-escape-probe fork-until-fail [MAX] forks sleeping children until
 *                                        fork fails (or MAX); prints the count
 *   pe-escape-probe hog MB               touches MB MiB of memory
 *   pe-escape-probe open-until-fail      opens /dev/null until open fails;
 *                                        prints the count and the errno
 *   pe-escape-probe fill-bytes FILE MB   writes FILE 1 MiB at a time until
 *                                        a write fails (or MB); prints MiB
 *   pe-escape-probe fill-files DIR MAX   creates empty files in DIR until
 *                                        that fails (or MAX)
 *   pe-escape-probe deep-tree DIR DEPTH  makes DIR/d/d/d... DEPTH levels
 *                                        deep, one directory fd at a time
 *   pe-escape-probe tiocsti TEXT         on fds 0, 1, 2: TIOCSCTTY, then
 *                                        TIOCSTI of each byte of TEXT
 *   pe-escape-probe tioclinux            TIOCLINUX (paste selection) on fd 0
 *   pe-escape-probe vsock                socket(AF_VSOCK, SOCK_STREAM)
 *
 * Errors print as errno=NAME (0 when the call succeeded). TEXT is never
 * printed, so a test can look for it on the terminal without mistaking
 * the report for an injection.
 *
 * Every probe prints one line "PROBE result" and exits 0 unless noted. */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

static const char *ename(int e)
{
    const char *n = e ? strerrorname_np(e) : "0";
    return n ? n : "?";
}

static int chroot_escape(const char *file)
{
    int fd;

    mkdir("/tmp/.probe", 0700);
    fd = open("/", O_RDONLY | O_DIRECTORY);
    if (chroot("/tmp/.probe") < 0) {
        printf("chroot-escape chroot-denied errno=%d\n", errno);
        return 0;
    }
    if (fd >= 0 && fchdir(fd) == 0)
        for (int i = 0; i < 64; i++)
            if (chdir("..") < 0)
                break;
    if (chroot(".") < 0) {
        printf("chroot-escape chroot2-denied errno=%d\n", errno);
        return 0;
    }
    printf("chroot-escape %s\n", access(file, F_OK) == 0 ? "reached" : "contained");
    return 0;
}

static int exe_write(void)
{
    int fd = open("/proc/1/exe", O_WRONLY);
    if (fd >= 0) {
        printf("exe-write opened\n");
        return 0;
    }
    printf("exe-write denied errno=%s\n", strerror(errno));
    return 0;
}

static int list_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    if (d == NULL)
        return 1;
    printf("fds");
    while ((de = readdir(d)) != NULL) {
        int fd = atoi(de->d_name);
        char target[512];
        char path[64];
        ssize_t len;

        if (de->d_name[0] == '.' || fd <= 2 || fd == dirfd(d))
            continue;
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        len = readlink(path, target, sizeof(target) - 1);
        target[len > 0 ? len : 0] = '\0';
        printf(" %d:%s", fd, target);
        n++;
    }
    printf("%s\n", n ? "" : " none");
    closedir(d);
    return 0;
}

static int fork_until_fail(long max)
{
    int n = 0;
    for (; n < max; n++) {
        pid_t p = fork();
        if (p < 0)
            break;
        if (p == 0) {
            pause();
            _exit(0);
        }
    }
    printf("fork-until-fail %d errno=%s\n", n, strerror(errno));
    fflush(stdout);
    kill(0, SIGKILL);
    return 0;
}

static int hog(long mb)
{
    size_t n = (size_t)mb << 20;
    char *p = malloc(n);
    if (p == NULL) {
        printf("hog malloc-failed\n");
        return 1;
    }
    for (size_t i = 0; i < n; i += 4096)
        p[i] = 1;
    printf("hog survived %ld\n", mb);
    return 0;
}

static int open_until_fail(void)
{
    long n = 0;

    while (open("/dev/null", O_RDONLY) >= 0)
        n++;
    printf("open-until-fail %ld errno=%s\n", n, ename(errno));
    return 0;
}

static int fill_bytes(const char *path, long mb)
{
    static char buf[1 << 20];
    long n = 0;
    int e = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    if (fd < 0) {
        printf("fill-bytes 0 errno=%s\n", ename(errno));
        return 0;
    }
    memset(buf, 'x', sizeof(buf));
    for (; n < mb; n++) {
        ssize_t w = write(fd, buf, sizeof(buf));
        if (w != (ssize_t)sizeof(buf)) {
            e = w < 0 ? errno : ENOSPC;
            break;
        }
    }
    if (e == 0 && fsync(fd) < 0)
        e = errno;
    close(fd);
    printf("fill-bytes %ld errno=%s\n", n, ename(e));
    return 0;
}

static int fill_files(const char *dir, long max)
{
    long n = 0;
    int e = 0;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);

    for (; dfd >= 0 && n < max; n++) {
        char name[32];
        int fd;

        snprintf(name, sizeof(name), "f%ld", n);
        fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0) {
            e = errno;
            break;
        }
        close(fd);
    }
    printf("fill-files %ld errno=%s\n", n, ename(dfd < 0 ? errno : e));
    return 0;
}

static int deep_tree(const char *dir, long depth)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    long n = 0;

    for (; fd >= 0 && n < depth; n++) {
        int next;
        if (mkdirat(fd, "d", 0755) < 0)
            break;
        next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        close(fd);
        fd = next;
    }
    printf("deep-tree %ld errno=%s\n", n, ename(n == depth ? 0 : errno));
    return 0;
}

/* The terminal injection of CVE-2017-5226: become the session leader's
 * controlling terminal's owner, then push bytes into its input queue. */
static int tiocsti(const char *text)
{
    for (int fd = 0; fd < 3; fd++) {
        int sctty = ioctl(fd, TIOCSCTTY, 0) < 0 ? errno : 0;
        int sti = 0;

        for (const char *c = text; *c && sti == 0; c++)
            if (ioctl(fd, TIOCSTI, c) < 0)
                sti = errno;
        printf("tiocsti fd=%d sctty=%s sti=%s\n", fd, ename(sctty), ename(sti));
    }
    return 0;
}

static int tioclinux(void)
{
    char sub = 3; /* TIOCL_PASTESEL */
    int r = ioctl(0, TIOCLINUX, &sub);

    printf("tioclinux errno=%s\n", ename(r < 0 ? errno : 0));
    return 0;
}

static int vsock(void)
{
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);

    printf("vsock errno=%s\n", ename(s < 0 ? errno : 0));
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && strcmp(argv[1], "chroot-escape") == 0)
        return chroot_escape(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "exe-write") == 0)
        return exe_write();
    if (argc >= 2 && strcmp(argv[1], "fds") == 0)
        return list_fds();
    if (argc >= 2 && strcmp(argv[1], "fork-until-fail") == 0)
        return fork_until_fail(argc >= 3 ? atol(argv[2]) : 100000);
    if (argc >= 3 && strcmp(argv[1], "hog") == 0)
        return hog(atol(argv[2]));
    if (argc >= 2 && strcmp(argv[1], "open-until-fail") == 0)
        return open_until_fail();
    if (argc >= 4 && strcmp(argv[1], "fill-bytes") == 0)
        return fill_bytes(argv[2], atol(argv[3]));
    if (argc >= 4 && strcmp(argv[1], "fill-files") == 0)
        return fill_files(argv[2], atol(argv[3]));
    if (argc >= 4 && strcmp(argv[1], "deep-tree") == 0)
        return deep_tree(argv[2], atol(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "tiocsti") == 0)
        return tiocsti(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "tioclinux") == 0)
        return tioclinux();
    if (argc >= 2 && strcmp(argv[1], "vsock") == 0)
        return vsock();
    fprintf(stderr, "usage: pe-escape-probe chroot-escape FILE|exe-write|fds|fork-until-fail [MAX]|"
                    "hog MB|open-until-fail|fill-bytes FILE MB|fill-files DIR MAX|"
                    "deep-tree DIR DEPTH|tiocsti TEXT|tioclinux|vsock\n");
    return 2;
}
