/* Host id ranges for sandbox user namespaces.
 *
 * Each sandbox gets its own range of PE_IDMAP_SIZE host ids (sandbox id 0
 * is host id base), so root in one sandbox owns nothing of the host's nor
 * of another sandbox's files. A range is claimed by creating
 * DATA/idmap/<slot> with O_EXCL (the file holds the owner), which makes
 * allocation race-free between concurrent commands without a global lock;
 * release unlinks it. Slots start at a random point to keep probing short. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/util.h"
#include "runtime/internal.h"

int pe__idmap_alloc(const char *data_dir, const char *owner, uint32_t *base, pe_err *err)
{
    cleanup_free char *dir = pe_xasprintf("%s/idmap", data_dir);
    uint32_t start = 0;

    if (pe_fs_mkdir_p(dir, 0700, err) < 0)
        return -1;
    if (getrandom(&start, sizeof(start), 0) != (ssize_t)sizeof(start))
        start = (uint32_t)getpid();
    for (uint32_t i = 0; i < PE_IDMAP_SLOTS; i++) {
        uint32_t slot = (start + i) % PE_IDMAP_SLOTS;
        char path[4096];
        int fd;

        snprintf(path, sizeof(path), "%s/%u", dir, slot);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0)
            return pe_err_sys(err, "claim id range %s", path);
        if (write(fd, owner, strlen(owner)) < 0) {
            close(fd);
            unlink(path);
            return pe_err_sys(err, "claim id range %s", path);
        }
        close(fd);
        *base = PE_IDMAP_FIRST + slot * PE_IDMAP_SIZE;
        return 0;
    }
    return pe_err_set(err, PE_ESYS, ENOSPC, "no free user id range");
}

void pe__idmap_release(const char *data_dir, uint32_t base)
{
    char path[4096];

    if (base < PE_IDMAP_FIRST)
        return;
    snprintf(path, sizeof(path), "%s/idmap/%u", data_dir, (base - PE_IDMAP_FIRST) / PE_IDMAP_SIZE);
    unlink(path);
}
