/* Host tuning for cgroup attach latency (explicit, opt-in).
 *
 * Moving a process into a cgroup takes cgroup_threadgroup_rwsem for
 * writing, which waits for an RCU grace period (~10-20 ms here) unless the
 * lock was taken recently. Every sandbox start pays it once. cgroup2's
 * "favordynmods" mount option switches that lock to a mode without the
 * wait, at a small cost to fork/exit elsewhere (kernel >= 6.0). It is a
 * host-wide setting, so pocketenv never changes it by itself: the
 * administrator turns it on with `pocketenv runtime tune favordynmods=on`
 * (and off again), as documented in the README. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>

#include "core/fs.h"
#include "core/util.h"
#include "runtime/cgroup.h"

/* Mount point, per-mount flags and super options of the first cgroup2. */
static int find_cgroup2(char *mp, size_t mplen, unsigned long *flags, char *sopts, size_t slen,
                        pe_err *err)
{
    cleanup_free char *text = NULL;
    char *line, *next;

    if (pe_fs_read_file("/proc/self/mountinfo", 1 << 22, &text, NULL, err) < 0)
        return -1;
    for (line = text; line != NULL && *line != '\0'; line = next) {
        char *f[12] = {0}, *p = line, *sep;
        int n = 0;

        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        sep = strstr(line, " - ");
        if (sep == NULL || strncmp(sep + 3, "cgroup2 ", 8) != 0)
            continue;
        *sep = '\0';
        while (n < 12 && (f[n] = strsep(&p, " ")) != NULL)
            n++;
        if (n < 6)
            continue;
        snprintf(mp, mplen, "%s", f[4]);
        *flags = 0;
        for (char *o = f[5], *tok; (tok = strsep(&o, ",")) != NULL;) {
            if (strcmp(tok, "ro") == 0)
                *flags |= MS_RDONLY;
            else if (strcmp(tok, "nosuid") == 0)
                *flags |= MS_NOSUID;
            else if (strcmp(tok, "nodev") == 0)
                *flags |= MS_NODEV;
            else if (strcmp(tok, "noexec") == 0)
                *flags |= MS_NOEXEC;
            else if (strcmp(tok, "relatime") == 0)
                *flags |= MS_RELATIME;
            else if (strcmp(tok, "noatime") == 0)
                *flags |= MS_NOATIME;
        }
        /* after " - ": fstype source superoptions */
        {
            char *rest = sep + 3, *tok, *last = NULL;
            while ((tok = strsep(&rest, " ")) != NULL)
                last = tok;
            snprintf(sopts, slen, "%s", last ? last : "");
        }
        return 0;
    }
    return pe_err_set(err, PE_EUNSUP, 0, "no cgroup2 mount on this host");
}

int pe_cgroup_favordynmods(int enable, pe_err *err)
{
    char mp[4096], sopts[1024];
    unsigned long flags = 0;
    bool on;

    if (find_cgroup2(mp, sizeof(mp), &flags, sopts, sizeof(sopts), err) < 0)
        return -1;
    on = strstr(sopts, "favordynmods") != NULL;
    if (enable < 0 || (enable > 0) == on)
        return on;
    /* A superblock remount: the per-mount flags must be passed again or
     * they would be cleared. */
    if (mount(NULL, mp, NULL, MS_REMOUNT | flags, enable ? "favordynmods" : "") < 0)
        return pe_err_sys(err, "remount %s %s favordynmods", mp, enable ? "with" : "without");
    return enable ? 1 : 0;
}
