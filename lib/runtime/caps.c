/* Capabilities: the sandbox's default capability set, applying a set to the
 * calling process, and capability names.
 *
 * pe_caps_apply runs in the child between clone and exec, so it uses raw
 * syscalls only (capget/capset through syscall(2), prctl): no allocation,
 * no libcap, no files. The other functions are pure and thread-safe. */
#include <errno.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/capability.h>

#include "core/util.h"
#include "runtime/security.h"

/* Older kernel headers lack the newest capabilities; the numbers are ABI. */
#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif
#ifndef CAP_CHECKPOINT_RESTORE
#define CAP_CHECKPOINT_RESTORE 40
#endif

#define CAP_BIT(c) (UINT64_C(1) << (c))

/* The kernel has at most 64 capabilities in its ABI (two 32-bit words). */
#define CAP_ABI_MAX 64

static const char *const cap_names[] = {
    [CAP_CHOWN] = "chown",
    [CAP_DAC_OVERRIDE] = "dac_override",
    [CAP_DAC_READ_SEARCH] = "dac_read_search",
    [CAP_FOWNER] = "fowner",
    [CAP_FSETID] = "fsetid",
    [CAP_KILL] = "kill",
    [CAP_SETGID] = "setgid",
    [CAP_SETUID] = "setuid",
    [CAP_SETPCAP] = "setpcap",
    [CAP_LINUX_IMMUTABLE] = "linux_immutable",
    [CAP_NET_BIND_SERVICE] = "net_bind_service",
    [CAP_NET_BROADCAST] = "net_broadcast",
    [CAP_NET_ADMIN] = "net_admin",
    [CAP_NET_RAW] = "net_raw",
    [CAP_IPC_LOCK] = "ipc_lock",
    [CAP_IPC_OWNER] = "ipc_owner",
    [CAP_SYS_MODULE] = "sys_module",
    [CAP_SYS_RAWIO] = "sys_rawio",
    [CAP_SYS_CHROOT] = "sys_chroot",
    [CAP_SYS_PTRACE] = "sys_ptrace",
    [CAP_SYS_PACCT] = "sys_pacct",
    [CAP_SYS_ADMIN] = "sys_admin",
    [CAP_SYS_BOOT] = "sys_boot",
    [CAP_SYS_NICE] = "sys_nice",
    [CAP_SYS_RESOURCE] = "sys_resource",
    [CAP_SYS_TIME] = "sys_time",
    [CAP_SYS_TTY_CONFIG] = "sys_tty_config",
    [CAP_MKNOD] = "mknod",
    [CAP_LEASE] = "lease",
    [CAP_AUDIT_WRITE] = "audit_write",
    [CAP_AUDIT_CONTROL] = "audit_control",
    [CAP_SETFCAP] = "setfcap",
    [CAP_MAC_OVERRIDE] = "mac_override",
    [CAP_MAC_ADMIN] = "mac_admin",
    [CAP_SYSLOG] = "syslog",
    [CAP_WAKE_ALARM] = "wake_alarm",
    [CAP_BLOCK_SUSPEND] = "block_suspend",
    [CAP_AUDIT_READ] = "audit_read",
    [CAP_PERFMON] = "perfmon",
    [CAP_BPF] = "bpf",
    [CAP_CHECKPOINT_RESTORE] = "checkpoint_restore",
};

uint64_t pe_caps_default_mask(void)
{
    return CAP_BIT(CAP_CHOWN) | CAP_BIT(CAP_DAC_OVERRIDE) | CAP_BIT(CAP_FSETID) |
           CAP_BIT(CAP_FOWNER) | CAP_BIT(CAP_MKNOD) | CAP_BIT(CAP_NET_RAW) | CAP_BIT(CAP_SETGID) |
           CAP_BIT(CAP_SETUID) | CAP_BIT(CAP_SETFCAP) | CAP_BIT(CAP_SETPCAP) |
           CAP_BIT(CAP_NET_BIND_SERVICE) | CAP_BIT(CAP_SYS_CHROOT) | CAP_BIT(CAP_KILL) |
           CAP_BIT(CAP_AUDIT_WRITE);
}

int pe_cap_from_name(const char *name)
{
    if (name == NULL)
        return -1;
    if (strncasecmp(name, "cap_", 4) == 0)
        name += 4;
    for (size_t i = 0; i < PE_ARRAY_LEN(cap_names); i++)
        if (cap_names[i] != NULL && strcasecmp(name, cap_names[i]) == 0)
            return (int)i;
    return -1;
}

static int caps_get(uint64_t *permitted, uint64_t *inheritable)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2] = {{0}};

    if (syscall(SYS_capget, &hdr, data) < 0)
        return -errno;
    *permitted = (uint64_t)data[1].permitted << 32 | data[0].permitted;
    *inheritable = (uint64_t)data[1].inheritable << 32 | data[0].inheritable;
    return 0;
}

static int caps_set(uint64_t effective, uint64_t permitted, uint64_t inheritable)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2] = {
        {(uint32_t)effective, (uint32_t)permitted, (uint32_t)inheritable},
        {(uint32_t)(effective >> 32), (uint32_t)(permitted >> 32), (uint32_t)(inheritable >> 32)},
    };

    if (syscall(SYS_capset, &hdr, data) < 0)
        return -errno;
    return 0;
}

/* The kernel's capabilities (pe_caps_prepare), 0 until learnt. Written
 * by a parent before it clones, read by its children: set once, to the
 * same value by whichever thread gets there. */
static uint64_t known_valid;

static uint64_t probe_valid(void)
{
    uint64_t valid = 0;

    for (int cap = 0; cap < CAP_ABI_MAX; cap++) {
        if (prctl(PR_CAPBSET_READ, (unsigned long)cap, 0, 0, 0) < 0)
            break;
        valid |= CAP_BIT(cap);
    }
    return valid;
}

void pe_caps_prepare(void)
{
    if (__atomic_load_n(&known_valid, __ATOMIC_RELAXED) == 0)
        __atomic_store_n(&known_valid, probe_valid(), __ATOMIC_RELAXED);
}

/* Drop every capability not in keep from the bounding set. The kernel's
 * last capability is found by asking, not from /proc/sys/kernel/cap_last_cap:
 * PR_CAPBSET_READ fails with EINVAL past it. Stores the kernel's valid
 * capabilities in *valid. Needs CAP_SETPCAP in the effective set. When the
 * parent learnt them (pe_caps_prepare), each is dropped without asking:
 * dropping one no longer in the set is not an error. */
static int bounding_drop(uint64_t keep, uint64_t *valid)
{
    *valid = __atomic_load_n(&known_valid, __ATOMIC_RELAXED);
    for (int cap = 0; *valid != 0 && cap < CAP_ABI_MAX; cap++)
        if ((*valid & CAP_BIT(cap)) && !(keep & CAP_BIT(cap)) &&
            prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0) < 0)
            return -errno;
    if (*valid != 0)
        return 0;
    for (int cap = 0; cap < CAP_ABI_MAX; cap++) {
        int in = prctl(PR_CAPBSET_READ, (unsigned long)cap, 0, 0, 0);

        if (in < 0 && errno == EINVAL)
            break;
        if (in < 0)
            return -errno;
        *valid |= CAP_BIT(cap);
        if (in == 1 && !(keep & CAP_BIT(cap)) &&
            prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0) < 0)
            return -errno;
    }
    return 0;
}

static int ambient_set(uint64_t caps, int raise)
{
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) {
        /* EINVAL: a kernel without ambient capabilities (< 4.3), where the
         * set is empty anyway; only a failure if we were to raise. */
        if (errno != EINVAL || raise)
            return -errno;
        return 0;
    }
    for (int cap = 0; raise && cap < CAP_ABI_MAX; cap++)
        if ((caps & CAP_BIT(cap)) &&
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, (unsigned long)cap, 0, 0) < 0)
            return -errno;
    return 0;
}

int pe_caps_apply(uint64_t caps, int keep_ambient)
{
    uint64_t permitted = 0, inheritable = 0, valid = 0;
    int r;

    /* Make effective = permitted first: after a setuid with keep-caps the
     * effective set is empty, and dropping from the bounding set needs
     * CAP_SETPCAP in it. */
    r = caps_get(&permitted, &inheritable);
    if (r == 0)
        r = caps_set(permitted, permitted, inheritable);
    if (r == 0)
        r = bounding_drop(caps, &valid);
    if (r < 0)
        return r;
    /* Bits the kernel does not know are ignored rather than refused, so a
     * mask written for a newer kernel still applies on an older one.
     * Inheritable must hold a capability before it may become ambient. */
    caps &= valid;
    r = caps_set(caps, caps, caps);
    if (r < 0)
        return r;
    return ambient_set(caps, keep_ambient);
}
