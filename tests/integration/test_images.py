"""Images through the CLI: build, import, run, list, remove."""
import io
import json
import os
import tarfile

import pytest

from conftest import DEBIAN_CHECK


def test_busybox_build_list_remove(pe):
    pe.run("image", "build", "busybox", "--name", "bb", check=True)
    images = json.loads(pe.run("image", "ls", "--json", check=True).stdout)
    assert [i["name"] for i in images] == ["bb"] and images[0]["size"] > 0
    p = pe.run("run", "--image", "bb", "--", "/bin/sh", "-c", "echo ok")
    assert p.stdout == "ok\n"
    p = pe.run("image", "build", "busybox", "--name", "bb")
    assert p.returncode == 125 and "already exists" in p.stderr
    pe.run("runtime", "create", "user", "--image", "bb", check=True)
    p = pe.run("image", "rm", "bb")
    assert p.returncode == 125 and "used by a sandbox" in p.stderr
    pe.run("runtime", "rm", "user", check=True)
    pe.run("image", "rm", "bb", check=True)
    assert json.loads(pe.run("image", "ls", "--json", check=True).stdout) == []
    assert pe.run("image", "rm", "bb").returncode == 125


def make_tar(path, entries):
    with tarfile.open(path, "w:gz") as t:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            t.addfile(info, io.BytesIO(data))


def test_import_and_run(pe, tmp_path, image_dir):
    with open(os.path.join(image_dir, "bin", "busybox"), "rb") as f:
        bb = f.read()
    tar = tmp_path / "img.tar.gz"
    make_tar(tar, [("bin/busybox", bb, 0o755), ("etc/motd", b"imported\n", 0o644)])
    pe.run("image", "import", "mine", str(tar), check=True)
    p = pe.run("run", "--image", "mine", "--", "/bin/busybox", "cat", "/etc/motd")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "imported\n"


def test_layer_on_a_parent_image(pe, tmp_path):
    """An image with a parent is overlaid on it: a sandbox sees both, in
    one-shot runs and persistent sandboxes, and the parent cannot be
    removed while the layer stands on it."""
    pe.run("image", "build", "busybox", "--name", "base", check=True)
    tar = tmp_path / "layer.tar.gz"
    make_tar(tar, [("etc/motd", b"from the layer\n", 0o644),
                   ("usr/local/bin/hello", b"#!/bin/sh\necho hello from the layer\n", 0o755)])
    p = pe.run("image", "import", "top", str(tar), "--parent", "missing")
    assert p.returncode == 125 and "parent image missing does not exist" in p.stderr, p.stderr
    pe.run("image", "import", "top", str(tar), "--parent", "base", check=True)
    p = pe.run("run", "--image", "top", "--", "/bin/sh", "-c",
               "cat /etc/motd; hello; busybox true && echo busybox from the parent")
    assert p.stdout == ("from the layer\nhello from the layer\nbusybox from the parent\n"), p.stderr
    # The layer holds only what it adds: the parent's busybox is not copied.
    images = {i["name"]: i for i in json.loads(pe.run("image", "ls", "--json", check=True).stdout)}
    assert images["top"]["size"] < images["base"]["size"] / 10, images
    pe.create("layered", "--image", "top")
    pe.start("layered")
    assert pe.exec("layered", "/bin/sh", "-c", "hello").stdout == "hello from the layer\n"
    pe.run("runtime", "stop", "layered", check=True)
    pe.run("runtime", "rm", "layered", check=True)
    p = pe.run("image", "rm", "base")
    assert p.returncode == 125 and "parent layer of image top" in p.stderr, p.stderr
    pe.run("image", "rm", "top", check=True)
    pe.run("image", "rm", "base", check=True)


def test_hostile_import_writes_nothing_outside(pe, tmp_path):
    tar = tmp_path / "evil.tar.gz"
    make_tar(tar, [("../../evil", b"x", 0o644)])
    p = pe.run("image", "import", "evil", str(tar))
    assert p.returncode == 125
    assert not (tmp_path / "evil").exists()
    assert json.loads(pe.run("image", "ls", "--json", check=True).stdout) == []
    p = pe.run("image", "import", "broken", "/etc/hostname")
    assert p.returncode == 125


@pytest.mark.slow
def test_debian_image_is_built_on_first_use(debian_first_use, pe):
    """The default image: built with mmdebstrap from Debian's archive the
    first time a sandbox needs it, then a real Debian userland runs. The
    first use is the run's shared one (conftest.py), which the templates
    then build on; a cache kept from another run is not a first use, so
    then this test builds its own."""
    p = debian_first_use or pe.run("run", "--", "bash", "-c", DEBIAN_CHECK, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert lines[0].startswith("12.")
    assert lines[1].startswith("git version")
    assert " 0 " in lines[2]
    assert lines[3] == "root"
