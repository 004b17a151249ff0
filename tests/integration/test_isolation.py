"""Isolation promises, each tested by trying to break it from inside."""
import os
import subprocess
import socket
import threading

import pytest

from conftest import BIN, BUILD

DOCKER_CAPS = (1 << 0 | 1 << 1 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 |
               1 << 10 | 1 << 13 | 1 << 18 | 1 << 27 | 1 << 29 | 1 << 31)


def status_field(text, name):
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in {text!r}")


def test_only_own_processes_visible(pe):
    p = pe.sh("ls /proc | grep -c '^[0-9]'")
    # init, sh, ls, grep: the host's hundreds of processes are not there
    assert int(p.stdout) <= 5


def test_host_filesystem_invisible(pe, tmp_path):
    marker = tmp_path / "host-secret"
    marker.write_text("secret")
    p = pe.sh(f"cat {marker}; ls /root /home; pe-escape-probe chroot-escape {marker}")
    assert "secret" not in p.stdout
    assert "chroot-escape contained" in p.stdout or "chroot-escape chroot" in p.stdout


def test_cannot_mount_or_make_devices(pe):
    p = pe.sh("mount -t tmpfs none /mnt; echo mount=$?; mknod /tmp/sda b 8 0; echo mknod=$?;"
              "hostname evil; echo hostname=$?")
    assert "mount=0" not in p.stdout
    assert "mknod=0" not in p.stdout
    assert "hostname=0" not in p.stdout


def test_proc_masked_and_read_only(pe):
    p = pe.sh("cat /proc/kcore 2>/dev/null | wc -c; cat /proc/keys | wc -c;"
              "echo b > /proc/sysrq-trigger; echo sysrq=$?;"
              "echo evil > /proc/sys/kernel/hostname; echo sysctl=$?")
    lines = p.stdout.split()
    assert lines[0] == "0" and lines[1] == "0"
    assert "sysrq=0" not in p.stdout
    assert "sysctl=0" not in p.stdout
    # The host's /proc/acpi and /proc/driver are behind an empty read-only
    # directory that sandbox root can neither write, remount nor lift.
    masked = [d for d in ("acpi", "driver") if os.path.isdir(f"/proc/{d}")]
    script = "".join(f"ls -A /proc/{d} | wc -l; touch /proc/{d}/x; echo w=$?;"
                     f"mount -o remount,rw /proc/{d}; echo r=$?; umount /proc/{d}; echo u=$?;"
                     f"umount -l /proc/{d}; echo l=$?; ls -A /proc/{d} | wc -l;" for d in masked)
    p = pe.sh(script)
    out = p.stdout.split()
    assert len(out) == 6 * len(masked), p.stdout + p.stderr
    for i, d in enumerate(masked):
        assert out[6 * i] == "0" and out[6 * i + 5] == "0", (d, p.stdout)
        assert not {"w=0", "r=0", "u=0", "l=0"} & set(out[6 * i:6 * i + 5]), (d, p.stdout)


def test_sys_read_only(pe):
    p = pe.sh("touch /sys/kernel/x; echo rc=$?; grep ' /sys ' /proc/mounts")
    assert "rc=0" not in p.stdout
    assert " ro," in p.stdout


def test_minimal_dev(pe):
    p = pe.sh("ls /dev | sort | tr '\\n' ' '")
    names = set(p.stdout.split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "console", "ptmx", "pts",
            "shm"} <= names
    assert not any(n.startswith(("sd", "vd", "nvme", "mem", "kmsg", "loop")) for n in names)
    p = pe.sh("echo x > /dev/null && head -c 4 /dev/zero | wc -c && head -c 8 /dev/urandom | wc -c")
    assert p.stdout.split() == ["4", "8"]
    # /dev/shm: a sticky directory every user can write to; /dev takes no
    # device nodes and runs nothing.
    p = pe.sh("stat -c %a /dev/shm; id -u; echo s > /dev/shm/n && cat /dev/shm/n;"
              "grep ' /dev ' /proc/self/mountinfo", "-u", "1000")
    lines = p.stdout.splitlines()
    assert lines[:3] == ["1777", "1000", "s"], p.stdout + p.stderr
    opts = lines[3].split()[5].split(",")
    assert {"nodev", "noexec", "nosuid"} <= set(opts), lines[3]


def test_user_namespace_maps_root_to_unprivileged_ids(pe):
    p = pe.sh("cat /proc/self/uid_map; id -u; ls -ln /etc/passwd; "
              "echo new > /etc/newfile && chown 0:0 /etc/newfile && echo chown-ok")
    inside, outside, count = p.stdout.split("\n")[0].split()
    assert inside == "0" and int(outside) >= 0x10000000 and count == "65536"
    assert p.stdout.split("\n")[1] == "0"
    assert " 0 " in p.stdout.split("\n")[2]  # image files owned by root inside
    assert "chown-ok" in p.stdout


def test_userns_host_opt_out(pe):
    p = pe.sh("cat /proc/self/uid_map", "--userns", "host")
    assert p.stdout.split() == ["0", "0", "4294967295"]


def test_capabilities_no_new_privs_seccomp(pe):
    p = pe.sh("cat /proc/self/status")
    assert int(status_field(p.stdout, "CapEff"), 16) == DOCKER_CAPS
    assert int(status_field(p.stdout, "CapBnd"), 16) == DOCKER_CAPS
    assert status_field(p.stdout, "NoNewPrivs") == "1"
    assert status_field(p.stdout, "Seccomp") == "2"
    p = pe.sh("cat /proc/self/status", "--user", "1000")
    assert int(status_field(p.stdout, "CapEff"), 16) == 0


BLOCKED = ["keyctl", "add_key", "request_key", "bpf", "perf_event_open", "kexec_load",
           "init_module", "finit_module", "delete_module", "open_by_handle_at", "userfaultfd",
           "ptrace", "mount", "umount2", "pivot_root", "setns", "unshare", "swapon", "reboot",
           "syslog", "io_uring_setup", "process_vm_readv", "acct", "quotactl",
           "clock_settime", "settimeofday"]


@pytest.mark.parametrize("userns", ["private", "host"])
def test_seccomp_blocks_dangerous_syscalls(pe, userns):
    p = pe.run("run", "--image", pe.image, "--userns", userns, "--",
               "pe-try-syscall", *BLOCKED, "getpid", "clone3")
    assert p.returncode == 0, p.stderr
    got = dict(line.split(" errno=") for line in p.stdout.splitlines())
    for name in BLOCKED:
        assert got[name] == "EPERM", f"{name}: {got[name]}"
    assert got["getpid"] == "0"
    assert got["clone3"] == "ENOSYS"


@pytest.mark.parametrize("abi", ["int80", "x32"])
def test_foreign_syscall_abi_is_killed(pe, abi):
    probe = f"{abi}-getpid"
    if abi == "int80":
        # Without IA32 emulation the kernel faults int $0x80 (SIGSEGV)
        # before any filter sees it: nothing for seccomp to prove then.
        host = subprocess.run([os.path.join(BUILD, "tests", "pe-try-syscall"), probe],
                              capture_output=True, text=True)
        if host.returncode != 0:
            pytest.skip("no i386 syscall emulation on this kernel")
    p = pe.run("run", "--image", pe.image, "--", "pe-try-syscall", probe)
    assert p.returncode == 128 + 31  # SIGSYS


def test_cannot_write_host_init_binary(pe):
    for userns in ("private", "host"):
        p = pe.run("run", "--image", pe.image, "--userns", userns, "--",
                   "pe-escape-probe", "exe-write")
        assert "exe-write denied" in p.stdout, p.stdout + p.stderr


def test_no_host_fds_leak_in(pe):
    p = pe.run("run", "--image", pe.image, "--", "pe-escape-probe", "fds")
    assert p.stdout.strip() == "fds none"


def test_network_is_loopback_only(pe):
    """A server on the host's loopback is unreachable; the sandbox has its
    own loopback, which works."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    hits = []

    def accept():
        srv.settimeout(15)
        try:
            c, _ = srv.accept()
            hits.append(1)
            c.close()
        except OSError:
            pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    p = pe.sh(f"cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ';"
              f"nc -w 1 127.0.0.1 {port} </dev/null; echo host=$?;"
              # the listener's stdin stays open: busybox nc -l, its stdin at
              # EOF, may close the connection before it reads the ping
              "(tail -f /dev/null | nc -l -p 9000 > /tmp/got &);"
              "for i in $(seq 100); do echo ping | nc 127.0.0.1 9000 && break; usleep 20000; done;"
              "for i in $(seq 100); do [ -s /tmp/got ] && break; usleep 20000; done; cat /tmp/got")
    srv.close()
    lines = p.stdout.split()
    assert lines[0] == "lo" and "host=0" not in p.stdout
    assert lines[-1] == "ping"
    assert hits == []


def test_cgroup_namespace_hides_host_paths(pe):
    p = pe.sh("cat /proc/self/cgroup")
    for line in p.stdout.splitlines():
        assert line.split(":", 2)[2] == "/", line


def test_cached_seccomp_program_still_blocks(pe):
    """The compiled filter is cached in DATA/cache; a later start that loads
    it (or finds the file damaged, and compiles again) enforces the same."""
    probes = ["keyctl", "bpf", "mount", "ptrace", "getpid"]
    first = pe.run("run", "--image", pe.image, "--", "pe-try-syscall", *probes)
    cache = os.path.join(pe.data, "cache")
    files = [f for f in os.listdir(cache) if f.startswith("seccomp-")]
    assert len(files) == 1
    second = pe.run("run", "--image", pe.image, "--", "pe-try-syscall", *probes)
    assert first.stdout == second.stdout
    assert "keyctl errno=EPERM" in second.stdout and "getpid errno=0" in second.stdout
    with open(os.path.join(cache, files[0]), "r+b") as f:
        f.truncate(13)  # not a whole number of BPF instructions
    third = pe.run("run", "--image", pe.image, "--", "pe-try-syscall", *probes)
    assert third.stdout == first.stdout


def test_two_data_directories_never_share_host_ids(pe, tmp_path):
    """Id ranges are claimed host-wide. With one range left and held by a
    sandbox of one data directory, another data directory gets none (each
    data directory used to keep claims of its own, and would have reused it)."""
    claims = tmp_path / "idmap"
    claims.mkdir(mode=0o700)
    free = 4242
    for slot in range(32768):
        if slot != free:
            (claims / str(slot)).write_text("/elsewhere\nsandbox:x:y\n")
    env = {"POCKETENV_IDMAP_DIR": str(claims)}
    other = str(tmp_path / "other-data")
    pe.run("runtime", "create", "holder", "--image", pe.image, env=env, check=True)
    assert (claims / str(free)).read_text().startswith(os.path.realpath(pe.data) + "\n")
    p = subprocess.run([BIN, "--data", other, "runtime", "create", "intruder", "--image",
                        pe.image], capture_output=True, text=True, env=dict(os.environ, **env))
    assert p.returncode != 0 and "no free user id range" in p.stderr, p.stderr
    # A release from the wrong data directory frees nothing.
    subprocess.run([BIN, "--data", other, "runtime", "gc"], env=dict(os.environ, **env),
                   check=True, capture_output=True)
    assert (claims / str(free)).exists()
    pe.run("runtime", "rm", "holder", env=env, check=True)
    assert not (claims / str(free)).exists()
    p = subprocess.run([BIN, "--data", other, "runtime", "create", "intruder", "--image",
                        pe.image], capture_output=True, text=True, env=dict(os.environ, **env))
    assert p.returncode == 0, p.stderr
    subprocess.run([BIN, "--data", other, "runtime", "rm", "intruder"],
                   env=dict(os.environ, **env), check=True, capture_output=True)
    assert sorted(os.listdir(claims)) == sorted(str(s) for s in range(32768) if s != free)
