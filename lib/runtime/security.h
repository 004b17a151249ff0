/* The in-sandbox privilege fence: seccomp filter and capability set.
 *
 * The seccomp filter is compiled with libseccomp once per process
 * (pe_seccomp_default_prog caches it) and loaded as raw BPF in the child
 * between clone and exec, which costs ~0.1 ms instead of ~0.3 ms for
 * building it there. The profile denies what Docker's default profile
 * denies (kernel keyring, bpf, perf, kexec, module loading, handle-based
 * opens, userfaultfd, clock/time setting, swap, reboot, ...) with EPERM,
 * and kills the process on architectures other than the native one
 * (x86_64, plus i386/x32 on x86_64 hosts are denied outright).
 *
 * The capability set is Docker's default: CHOWN, DAC_OVERRIDE, FSETID,
 * FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP,
 * NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE; everything else is
 * dropped from the bounding set too. */
#ifndef PE_RUNTIME_SECURITY_H
#define PE_RUNTIME_SECURITY_H

#include <linux/filter.h>
#include <stdint.h>

#include "pocketenv/err.h"

/* The compiled default profile. The returned program is owned by the
 * library and valid for the life of the process. Thread-safe. */
int pe_seccomp_default_prog(const struct sock_fprog **out, pe_err *err);

/* Cache the compiled program in dir (must be private to root) so later
 * processes skip compiling it. Call before the first
 * pe_seccomp_default_prog; NULL disables the cache. */
void pe_seccomp_set_cache_dir(const char *dir);

/* Load prog into the calling thread with SECCOMP_FILTER_FLAG_TSYNC off.
 * Must run after PR_SET_NO_NEW_PRIVS. Async-signal-safe: no allocation,
 * returns -errno. For use in the child between clone and exec. */
int pe_seccomp_load(const struct sock_fprog *prog);

/* Bitmask (bit = CAP_*) of the default sandbox capability set. */
uint64_t pe_caps_default_mask(void);

/* Reduce the calling process to caps: drop every other capability from the
 * bounding set, set permitted/effective/inheritable to caps and raise the
 * ambient set to caps when keep_ambient (so an exec'd non-setuid program as
 * uid 0 keeps them). Async-signal-safe (raw syscalls only), returns -errno.
 * For the child between clone and exec, after setuid/setgid. */
int pe_caps_apply(uint64_t caps, int keep_ambient);

/* Learn which capabilities the kernel has, once per process, in the
 * parent before it clones: pe_caps_apply in the child then drops the
 * others from the bounding set without asking about each (42 prctl calls
 * fewer per sandbox start and exec). Without it, the child asks. */
void pe_caps_prepare(void);

/* Parse "cap_net_admin" / "NET_ADMIN" into its number; -1 if unknown. */
int pe_cap_from_name(const char *name);

#endif
