"""`-v HOST:PATH` as people use it (issue 14): the mounted tree is the
sandbox user's own, writable, and what the sandbox makes there belongs to
the tree's owner on the host; the sandbox gets no other host id through
the mount (tried by attack). Before, host files appeared as nobody and
the README's own `-v $PWD:/work -w /work` example could not write."""
import os
import pty
import re
import shutil
import subprocess
import time

import pytest

from conftest import BIN, BUILD, ROOT

OWNER = 1000  # a host user other than root (cloudsdk here; any uid will do)


def owned_tree(path, uid=OWNER, gid=OWNER):
    os.makedirs(path)
    with open(os.path.join(path, "old"), "w") as f:
        f.write("from the host\n")
    for p in (path, os.path.join(path, "old")):
        os.chown(p, uid, gid)
    return str(path)


def host_owners(path):
    """{(uid, gid)} of everything under path, path included."""
    seen = {(os.lstat(path).st_uid, os.lstat(path).st_gid)}
    for d, dirs, files in os.walk(path):
        for n in dirs + files:
            st = os.lstat(os.path.join(d, n))
            seen.add((st.st_uid, st.st_gid))
    return seen


def test_a_users_tree_is_writable_and_stays_theirs(pe, tmp_path):
    src = owned_tree(tmp_path / "proj")
    p = pe.sh("id -u; stat -c '%u:%g %n' . old; echo made >new; mkdir -p d/e; touch d/e/f; "
              "cat old new", "-v", f"{src}:/work", "-w", "/work")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["0", "0:0 .", "0:0 old", "from the host", "made"]
    assert host_owners(src) == {(OWNER, OWNER)}
    assert open(os.path.join(src, "new")).read() == "made\n"


def test_read_only_stays_read_only(pe, tmp_path):
    src = owned_tree(tmp_path / "proj")
    p = pe.sh("stat -c %u old; echo x >new", "-v", f"{src}:/work:ro", "-w", "/work")
    assert p.returncode != 0 and p.stdout == "0\n" and "Read-only" in p.stderr, p
    assert not os.path.exists(os.path.join(src, "new"))


ATTACK = r"""
cd /work
touch mine
for id in 1 1000 65534 12345; do
  chown $id mine 2>/dev/null && echo "chowned to $id"
  chown 0:$id mine 2>/dev/null && echo "chgrp to $id"
done
touch byroot; chown 0:0 byroot || echo "cannot chown to its own owner"
chmod 4755 mine || echo "no setuid on its own file"
cp -a /bin/busybox suid && chmod 6755 suid || echo "cannot make a setuid copy"
mkdir -p deep/er && ln -s /etc/passwd deep/er/link && ln mine hard || echo "no links"
echo done
"""


def test_attack_no_other_host_id_through_the_mount(pe, tmp_path):
    src = owned_tree(tmp_path / "proj")
    root_only = os.path.join(src, "root-only")
    with open(root_only, "w") as f:
        f.write("secret\n")
    os.chmod(root_only, 0o600)  # root's, in the user's tree
    p = pe.sh(ATTACK, "-v", f"{src}:/work")
    assert p.stdout.splitlines() == ["done"], (p.stdout, p.stderr)
    # every id the sandbox could give a file is the tree's owner's
    mine = {(OWNER, OWNER)}
    assert host_owners(src) - {(0, 0)} == mine
    for n in os.listdir(src):
        st = os.lstat(os.path.join(src, n))
        assert (st.st_uid, st.st_gid) in mine or n == "root-only", n
    # the setuid bits the sandbox set make files run as the owner, never as root
    assert os.stat(os.path.join(src, "suid")).st_uid == OWNER
    # root's file in the tree stays out of reach, and other sandbox users get nothing
    p = pe.sh("cat /work/root-only", "-v", f"{src}:/work")
    assert p.returncode != 0 and "secret" not in p.stdout
    pe.create("m", "-v", f"{src}:/work")
    pe.start("m")
    p = pe.exec("m", "/bin/sh", "-c", "touch /work/by-1000", opts=("--user", "1000"))
    assert p.returncode != 0, p
    p = pe.exec("m", "/bin/sh", "-c", "echo again >>/work/old && stat -c %u:%g /work/old")
    assert p.stdout == "0:0\n", p
    assert not os.path.exists(os.path.join(src, "by-1000"))
    assert host_owners(src) - {(0, 0)} == mine


def test_root_owned_trees_are_not_mapped_to_root(pe, tmp_path):
    src = str(tmp_path / "rootsdir")
    os.makedirs(src)
    p = pe.sh("stat -c %u .; touch made", "-v", f"{src}:/work", "-w", "/work")
    assert p.returncode != 0 and p.stdout == "65534\n", p
    assert os.listdir(src) == []


def readme_line(start):
    with open(os.path.join(ROOT, "README.md")) as f:
        for line in f:
            if line.strip().startswith(start):
                return line.strip()
    raise AssertionError(f"README has no line starting with {start!r}")


def test_readme_run_example_as_pasted(pe, tmp_path):
    """The README's `run -t ... -v $PWD:/work -w /work -- bash`, pasted in a
    user's directory. It runs the default image, debian, with bash; here that
    is the test image (busybox) under that name, with bash as busybox's sh."""
    line = readme_line("pocketenv run -t --memory")
    assert "-v $PWD:/work -w /work -- bash" in line
    images = os.path.join(pe.data, "images")
    os.makedirs(images)
    shutil.copytree(os.path.dirname(pe.image), os.path.join(images, "debian"), symlinks=True)
    with open(os.path.join(images, "debian", "rootfs", "bin", "bash"), "w") as f:
        f.write('#!/bin/sh\nexec /bin/sh "$@"\n')
    os.chmod(os.path.join(images, "debian", "rootfs", "bin", "bash"), 0o755)
    src = owned_tree(tmp_path / "project")
    env = dict(os.environ, PATH=f"{BUILD}:{os.environ['PATH']}", POCKETENV_DATA=pe.data,
               PWD=src)
    master, slave = pty.openpty()
    proc = subprocess.Popen(["/bin/bash", "-c", line], cwd=src, env=env, stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    os.write(master, b"pwd; echo written >from-sandbox && echo OK-$(stat -c %u from-sandbox); "
                     b"exit\n")
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=30)
    os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 0 and re.search(r"^OK-0\r?$", text, re.M), text
    assert "/work" in text
    st = os.stat(os.path.join(src, "from-sandbox"))
    assert (st.st_uid, st.st_gid) == (OWNER, OWNER)
