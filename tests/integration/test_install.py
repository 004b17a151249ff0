"""`meson install`, and pocketenv run from where it was installed: the
programs find each other and the web page from their own place (never the
cwd or PATH), also once the installed tree is moved elsewhere; a
`pocketenv` copied away alone says what it misses and where it looked.

Each program runs with a clean environment (PATH with the installed bin
first, a fresh HOME) from a cwd that is neither the checkout nor the
installation."""
import glob
import json
import os
import shutil
import subprocess
import tarfile
import urllib.request

import pytest

from conftest import BUILD, sandbox_processes, wait_for
from test_daemon import free_port

HELPERS = ["pocketenv-client", "pocketenv-serve", "pocketenv-init", "pocketenv-archive",
           "pocketenv-import", "pocketenv-template"]


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    """The installed tree, moved away from where it was installed."""
    tmp = tmp_path_factory.mktemp("install")
    dest = tmp / "destdir"
    p = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--destdir", str(dest)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    [bindir] = glob.glob(f"{dest}/**/bin/pocketenv", recursive=True)
    installed = os.path.dirname(os.path.dirname(bindir))
    moved = tmp / "moved" / "prefix"
    shutil.move(installed, moved)
    return moved


class Installed:
    def __init__(self, prefix, tmp):
        self.prefix, self.cwd, self.data = prefix, tmp / "elsewhere", str(tmp / "data")
        self.cwd.mkdir()
        (tmp / "home").mkdir()
        self.env = {"PATH": f"{prefix}/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp / "home"),
                    "LANG": "C.UTF-8", "NO_COLOR": "1"}
        self.env.update({k: v for k, v in os.environ.items()
                         if k in ("ASAN_OPTIONS", "UBSAN_OPTIONS")})

    def run(self, *args, input=None, env=None, exe="pocketenv"):
        return subprocess.run([exe, *args], cwd=self.cwd, env=dict(self.env, **(env or {})),
                              capture_output=True, text=True, input=input, timeout=120)


@pytest.fixture
def inst(prefix, tmp_path):
    i = Installed(prefix, tmp_path)
    yield i
    if os.path.isdir(os.path.join(i.data, "sandboxes")):
        for sb in json.loads(i.run("--data", i.data, "runtime", "ls", "--json").stdout or "[]"):
            i.run("--data", i.data, "runtime", "rm", sb["name"])
    wait_for(lambda: not sandbox_processes(i.data), 10, "the sandboxes to go")
    i.run("--data", i.data, "runtime", "gc")


def test_meson_install_puts_everything_in_standard_places(prefix):
    assert os.access(prefix / "bin" / "pocketenv", os.X_OK)
    for h in HELPERS:
        assert os.access(prefix / "libexec" / "pocketenv" / h, os.X_OK), h
    assert (prefix / "share" / "pocketenv" / "web" / "index.html").is_file()
    assert sorted(os.listdir(prefix / "bin")) == ["pocketenv"]


def test_installed_runtime_commands(inst, tmp_path):
    """run (pocketenv-init) and image import (pocketenv-import)."""
    assert inst.run("--data", inst.data, "image", "build", "busybox").returncode == 0
    p = inst.run("--data", inst.data, "run", "--image", "busybox", "--", "true")
    assert p.returncode == 0, p.stderr
    rootfs = os.path.join(inst.data, "images", "busybox", "rootfs")
    with tarfile.open(tmp_path / "root.tar.gz", "w:gz") as t:
        t.add(rootfs, arcname=".")
    p = inst.run("--data", inst.data, "image", "import", "mine", str(tmp_path / "root.tar.gz"))
    assert p.returncode == 0, p.stderr
    p = inst.run("--data", inst.data, "run", "--image", "mine", "--", "sh", "-c", "echo from mine")
    assert (p.returncode, p.stdout) == (0, "from mine\n"), p.stderr


def test_installed_daemon_and_client(inst):
    """serve (pocketenv-serve, the web page, pocketenv-archive), and the
    API commands (pocketenv-client)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(inst.cwd / "daemon.log", "w")
    d = subprocess.Popen(["pocketenv", "--data", inst.data, "serve", "--listen", f"127.0.0.1:{port}"],
                         cwd=inst.cwd, env=inst.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def up():
            assert d.poll() is None, (inst.cwd / "daemon.log").read_text()
            try:
                urllib.request.urlopen(url + "/healthz", timeout=2)
                return True
            except OSError:
                return False
        wait_for(up, 30, "the installed daemon to answer")
        req = urllib.request.Request(url + "/", headers={"Accept": "text/html"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert "<html" in r.read().decode().lower()  # share/pocketenv/web found
        cli = {"POCKETENV_API_URL": url}
        p = inst.run("create", "box", "-b", "busybox", env=cli)
        assert p.returncode == 0, p.stderr
        p = inst.run("exec", "box", "--", "echo", "hi", env=cli)
        assert (p.returncode, p.stdout) == (0, "hi\n"), p.stderr
        p = inst.run("console", "box", input="echo from-console\nexit 3\n", env=cli)
        assert p.returncode == 3 and "from-console" in p.stdout, p.stderr
        p = inst.run("backup", "create", "box", "/etc", env=cli)  # pocketenv-archive
        assert p.returncode == 0, p.stderr
        p = inst.run("backup", "ls", "box", "--json", env=cli)
        assert p.returncode == 0 and json.loads(p.stdout), p.stderr
        assert inst.run("rm", "box", env=cli).returncode == 0
    finally:
        d.terminate()
        d.wait(30)


@pytest.mark.skipif(os.path.exists("/usr/local/libexec/pocketenv"),
                    reason="this host has an installation where a copy of pocketenv looks last")
def test_pocketenv_copied_alone_says_what_it_misses(inst, tmp_path):
    if os.path.exists("/usr/local/libexec/pocketenv/pocketenv-client"):
        pytest.skip("pocketenv is installed in /usr/local, which rescues a lone copy")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(inst.prefix / "bin" / "pocketenv", alone / "pocketenv")
    p = inst.run("ls", exe=str(alone / "pocketenv"))
    assert p.returncode != 0
    assert f"pocketenv-client not found in {alone}, /usr/local/libexec/pocketenv" in p.stderr, \
        p.stderr
    assert "meson install" in p.stderr
    p = inst.run("--data", inst.data, "run", "--", "true", exe=str(alone / "pocketenv"))
    assert p.returncode == 125 and "pocketenv-init not found" in p.stderr, p.stderr
