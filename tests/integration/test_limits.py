"""Resource limits: the sandbox hits them, the host does not notice."""
import glob
import os
import subprocess
import time

from conftest import wait_for


def test_memory_hog_is_killed_inside_only(pe):
    p = pe.run("run", "--image", pe.image, "--memory", "64m", "--",
               "pe-escape-probe", "hog", "400")
    assert p.returncode == 137
    assert "survived" not in p.stdout
    # The same program without the limit is fine: it was the limit.
    p = pe.run("run", "--image", pe.image, "--", "pe-escape-probe", "hog", "100")
    assert p.stdout.strip() == "hog survived 100"


def test_pids_limit_stops_fork_bomb(pe):
    p = pe.run("run", "--image", pe.image, "--pids", "32", "--",
               "pe-escape-probe", "fork-until-fail")
    count = int(p.stdout.split()[1])
    assert 0 < count < 32
    assert "Resource temporarily unavailable" in p.stdout


def test_an_exec_counts_against_the_pids_limit_as_its_own_processes_only(pe):
    # The sandbox's init is one task of the limit; an exec adds its command
    # and what that starts, nothing of the runtime's (no waiter process).
    pe.create("few", "--pids", "8")
    pe.start("few")
    info = pe.inspect("few")
    assert pe.exec("few", "mkfifo", "-m", "666", "/tmp/go").returncode == 0
    fifo = f"/proc/{info['pid']}/root/tmp/go"
    current = (glob.glob(f"/sys/fs/cgroup/pids/pocketenv/pocketenv-{info['id']}/pids.current") +
               glob.glob(f"/sys/fs/cgroup/pocketenv/pocketenv-{info['id']}/pids.current"))
    assert current

    def tasks():
        with open(current[0]) as f:
            return int(f.read())
    # The shell waits on the FIFO (read is a builtin: no process of its own).
    ex = subprocess.Popen(pe.cmd("runtime", "exec", "few", "--", "/bin/sh", "-c",
                                 "read x < /tmp/go; exec pe-escape-probe fork-until-fail 100"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: tasks() == 2, 10, "init and the shell to be the sandbox's only tasks")
        with open(fifo, "w") as f:
            f.write("go\n")
        out, err = ex.communicate(timeout=30)
        # 8 - init - the probe itself
        assert out.split()[:2] == ["fork-until-fail", "6"], out + err
    finally:
        if ex.poll() is None:
            ex.kill()
            ex.wait(10)
        pe.run("runtime", "rm", "few")


def test_shell_fork_bomb_host_stays_responsive(pe):
    bomb = subprocess.Popen(pe.cmd("run", "--image", pe.image, "--pids", "64", "--timeout", "3",
                                   "--", "/bin/sh", "-c", "b(){ b|b& }; b; while :; do wait; done"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        for _ in range(5):
            subprocess.run(["true"], check=True, timeout=5)
        assert time.monotonic() - t0 < 5
    finally:
        bomb.wait(30)
    assert bomb.returncode == 124


def test_cpu_quota_throttles(pe):
    pe.create("cpu1", "--cpus", "0.2")
    pe.start("cpu1")
    sid = pe.inspect("cpu1")["id"]
    bg = subprocess.Popen(pe.cmd("runtime", "exec", "cpu1", "--", "/bin/sh", "-c",
                                 "while :; do :; done"))
    try:
        stats = glob.glob(f"/sys/fs/cgroup/*/pocketenv/pocketenv-{sid}/cpu.stat") + \
            glob.glob(f"/sys/fs/cgroup/pocketenv/pocketenv-{sid}/cpu.stat")
        assert stats

        def throttled():
            with open(stats[0]) as f:
                d = dict(l.split() for l in f)
            return int(d.get("nr_throttled", 0)) >= 3
        wait_for(throttled, 20, "the busy loop to be throttled")
    finally:
        pe.run("runtime", "rm", "cpu1")
        bg.wait(10)
