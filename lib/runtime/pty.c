/* PTY allocation inside a sandbox's own devpts. Async-signal-safe: used by
 * the clone child. TIOCGPTPEER opens the peer through the master, without
 * a path lookup that a sandbox could race. */
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "runtime/internal.h"

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
