/* proc-common.h: what the exec helper and the sandbox's init both run
 * before exec. PTYs are opened inside the sandbox's own devpts;
 * TIOCGPTPEER opens the peer through the master, without a path lookup
 * that a sandbox could race. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "runtime/proc-common.h"

int pe__pty_open_master(void)
{
    int unlock = 0;
    int fd = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    if (ioctl(fd, TIOCSPTLCK, &unlock) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int pe__pty_open_peer(int master)
{
    int fd = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

void pe__exec_path(char *const *argv, char *const *envp)
{
    const char *file = argv[0], *path = "/bin:/usr/bin";
    size_t flen = strlen(file), argc = 0;
    bool denied = false;

    if (strchr(file, '/')) {
        execve(file, argv, envp);
        path = NULL;
    }
    for (size_t i = 0; path && envp[i]; i++)
        if (strncmp(envp[i], "PATH=", 5) == 0)
            path = envp[i] + 5;
    while (argv[argc])
        argc++;
    for (const char *p = path; p != NULL;) {
        const char *end = strchr(p, ':');
        size_t dlen = end ? (size_t)(end - p) : strlen(p);
        char buf[4096];

        if (dlen + 1 + flen < sizeof(buf)) {
            memcpy(buf, p, dlen);
            buf[dlen] = '/';
            memcpy(buf + dlen + 1, file, flen + 1);
            execve(dlen ? buf : file, argv, envp);
            if (errno == ENOEXEC) {
                char *sh[1024]; /* 8 KiB of a 128 KiB stack */

                if (argc + 2 > sizeof(sh) / sizeof(sh[0])) {
                    errno = E2BIG;
                    return;
                }
                sh[0] = (char *)"/bin/sh";
                sh[1] = dlen ? buf : (char *)file;
                for (size_t i = 1; i <= argc; i++)
                    sh[i + 1] = argv[i];
                execve(sh[0], sh, envp);
                return;
            }
            if (errno == EACCES)
                denied = true;
            else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE && errno != ENODEV &&
                     errno != ETIMEDOUT)
                return;
        }
        p = end ? end + 1 : NULL;
    }
    if (denied)
        errno = EACCES;
}
