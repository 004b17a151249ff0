/* pe-escape-probe: attempts to break out of a sandbox, run from inside one
 * by the integration tests. Static, so it needs nothing from the image.
 *
 *   pe-escape-probe chroot-escape FILE   classic chroot breakout, then
 *                                        tries to open FILE from the
 *                                        reached root; prints
 *                                        "reached" or "contained"
 *   pe-escape-probe exe-write            opens /proc/1/exe for writing
 *   pe-escape-probe fds                  lists open fds other than 0-2
 *   pe-escape-probe fork-until-fail      forks sleeping children until
 *                                        fork fails; prints the count
 *   pe-escape-probe hog MB               touches MB MiB of memory
 *
 * Every probe prints one line "PROBE result" and exits 0 unless noted. */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

static int fork_until_fail(void)
{
    int n = 0;
    for (; n < 100000; n++) {
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
        return fork_until_fail();
    if (argc >= 3 && strcmp(argv[1], "hog") == 0)
        return hog(atol(argv[2]));
    fprintf(stderr,
            "usage: pe-escape-probe chroot-escape FILE|exe-write|fds|fork-until-fail|hog MB\n");
    return 2;
}
