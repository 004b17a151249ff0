"""Bad input: one clear line on stderr, non-zero exit, nothing left behind."""
import os

import pytest

from conftest import idmap_claims


def leftovers(pe):
    out = []
    for sub in ("sandboxes", "run"):
        d = os.path.join(pe.data, sub)
        if os.path.isdir(d):
            out += os.listdir(d)
    return out + idmap_claims(pe.data)


@pytest.mark.parametrize("args,message", [
    (["--image", "nonexistent-image"], "unknown image"),
    (["--image", "/no/such/dir"], "does not exist"),
    (["--memory", "lots"], "invalid size"),
    (["--memory", "-5m"], "invalid size"),
    (["--memory", "1k"], "at least"),
    (["--cpus", "0"], "invalid CPU"),
    (["--pids", "-1"], "invalid process limit"),
    (["-v", "/no/such/path:/x"], "volume source"),
    (["-v", "relative:/x"], "absolute"),
    (["-v", "/tmp:/x/../../etc"], ".."),
    (["-e", "NOEQUALS"], "KEY=VALUE"),
    (["--user", "root"], "invalid user"),
    (["--bogus"], "unknown option"),
    (["--net", "bridge"], "unknown network mode"),
])
def test_run_rejects(pe, args, message):
    image = [] if "--image" in args else ["--image", pe.image]
    p = pe.run("run", *image, *args, "--", "true")
    assert p.returncode == 125, p.stderr
    assert message in p.stderr
    assert p.stderr.count("\n") == 1, p.stderr
    assert leftovers(pe) == []


def test_run_without_command(pe):
    p = pe.run("run", "--image", pe.image)
    assert p.returncode == 125 and "no command" in p.stderr


@pytest.mark.parametrize("name", ["a/b", "..", "../x", "", ".hidden", "x" * 64, "a b"])
def test_bad_names(pe, name):
    p = pe.run("runtime", "create", name, "--image", pe.image)
    assert p.returncode == 125 and "invalid sandbox name" in p.stderr
    assert leftovers(pe) == []


def test_unknown_sandbox(pe):
    for cmd in (["start", "ghost"], ["stop", "ghost"], ["rm", "ghost"], ["inspect", "ghost"],
                ["exec", "ghost", "--", "true"], ["pause", "ghost"]):
        p = pe.run("runtime", *cmd)
        assert p.returncode == 125, cmd
        assert "no such sandbox: ghost" in p.stderr


def test_duplicate_and_state_errors(pe):
    pe.create("one")
    p = pe.run("runtime", "create", "one", "--image", pe.image)
    assert p.returncode == 125 and "already exists" in p.stderr
    assert pe.run("runtime", "resume", "one").returncode == 125
    pe.start("one")
    p = pe.run("runtime", "start", "one")
    assert p.returncode == 125 and "already running" in p.stderr
    p = pe.run("runtime", "exec", "one")
    assert p.returncode == 125 and "no command" in p.stderr
    assert pe.exec("one", "true").returncode == 0


def test_symlinked_mountpoint_in_image_stays_inside(pe, tmp_path, image_dir):
    """A volume destination that is a symlink pointing out of the image
    resolves inside the sandbox root, never on the host."""
    import shutil
    img = tmp_path / "img"
    shutil.copytree(image_dir, img, symlinks=True)
    target = tmp_path / "host-target"
    target.mkdir()
    os.symlink(str(target), img / "escape")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    p = pe.run("run", "--image", str(img), "-v", f"{src}:/escape", "--", "ls", "/escape")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "f"
    assert os.listdir(target) == []
