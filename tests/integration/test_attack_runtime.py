"""Attacks on the runtime found by the attack run against the daemon: each
test performs the attack from inside a sandbox (or as its caller would be
attacked) and checks that the host does not notice."""
import os

import pytest

from conftest import run_on_pty


def probe_errnos(text, prefix):
    """{fd: (sctty, sti)} from the tiocsti probe's report lines."""
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            f = dict(kv.split("=") for kv in line.split()[1:])
            out[int(f["fd"])] = (f["sctty"], f["sti"])
    return out


# ---- seccomp: terminal injection and vsock ----

@pytest.mark.parametrize("userns", ["private", "host"])
def test_vsock_sockets_refused(pe, userns):
    p = pe.run("run", "--image", pe.image, "--userns", userns, "--", "pe-escape-probe", "vsock")
    assert p.stdout.strip() == "vsock errno=EAFNOSUPPORT", p.stdout + p.stderr
    p = pe.run("run", "--image", pe.image, "--userns", userns, "--", "pe-try-syscall",
               "socket-vsock", "socket-vsock-hi", "socketpair-vsock", "socket-unix")
    got = dict(line.split(" errno=") for line in p.stdout.splitlines())
    assert got == {"socket-vsock": "EAFNOSUPPORT", "socket-vsock-hi": "EAFNOSUPPORT",
                   "socketpair-vsock": "EAFNOSUPPORT", "socket-unix": "EINVAL"}


def test_tiocsti_refused_on_own_pty(pe):
    """With -t the command's terminal is the sandbox's own PTY, relayed to
    the caller's: a byte pushed into its input would be read back as if the
    user typed it (and, once relayed, by whatever reads the caller's)."""
    code, out = run_on_pty(pe.cmd("run", "-t", "--image", pe.image, "--",
                                  "pe-escape-probe", "tiocsti", "Zq7"))
    assert code == 0, out
    # fd 0 is the command's controlling terminal already (sctty EPERM:
    # it has one); the push itself is what the filter refuses.
    assert "sti=EPERM" in out and "sti=0" not in out, out
    assert "Zq7" not in out
    code, out = run_on_pty(pe.cmd("run", "-t", "--image", pe.image, "--",
                                  "pe-escape-probe", "tioclinux"))
    assert "tioclinux errno=EPERM" in out, out
    p = pe.run("run", "--image", pe.image, "--", "pe-try-syscall", "ioctl-tiocsti",
               "ioctl-tiocsti-hi", "ioctl-tioclinux", "ioctl-tcgets")
    got = dict(line.split(" errno=") for line in p.stdout.splitlines())
    assert got == {"ioctl-tiocsti": "EPERM", "ioctl-tiocsti-hi": "EPERM",
                   "ioctl-tioclinux": "EPERM", "ioctl-tcgets": "EBADF"}
