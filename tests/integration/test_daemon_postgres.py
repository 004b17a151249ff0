"""The daemon on PostgreSQL: `pocketenv serve --store postgresql://...`.

A real PostgreSQL server (Debian's postgresql package) is started for the
module in a temporary directory, listening on a Unix socket only (no TCP),
as the 'postgres' user. Each test gets its own database.
"""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from conftest import wait_for
from test_daemon_restart import Served, create, served  # noqa: F401 (fixture)

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


@pytest.fixture(scope="module")
def pg():
    if not PG_BIN:
        pytest.fail("PostgreSQL is not installed: scripts/setup installs postgresql")
    bindir = PG_BIN[-1]
    user = pwd.getpwnam("postgres")
    top = tempfile.mkdtemp(prefix="pe-it-pg-")
    os.chmod(top, 0o755)
    data = os.path.join(top, "data")
    os.mkdir(data, 0o700)
    os.chown(data, user.pw_uid, user.pw_gid)

    def as_pg(*argv, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--"] + list(argv),
                              capture_output=True, text=True, **kw)
    p = as_pg(f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8")
    assert p.returncode == 0, p.stderr
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"listen_addresses = ''\nunix_socket_directories = '{data}'\nfsync = off\n")
    p = as_pg(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(data, "log"), "-w", "start")
    assert p.returncode == 0, p.stderr + open(os.path.join(data, "log")).read()
    counter = [0]

    def new_db():
        counter[0] += 1
        name = f"pe{counter[0]}"
        p = as_pg(f"{bindir}/createdb", "-h", data, "-U", "postgres", name)
        assert p.returncode == 0, p.stderr
        return f"postgresql:///{name}?host={data}&user=postgres"
    try:
        yield new_db
    finally:
        as_pg(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(top, ignore_errors=True)


def test_lifecycle_and_restart_on_postgres(pg, served):
    url = pg()
    s = served(["--sandbox-net", "none", "--store", url])
    d = s.start()
    sb = create(d, "pg-life")
    assert d.wait_status(sb["id"], ["RUNNING", "FAILED"])["status"] == "RUNNING"
    st, out = d.sandbox("exec", "pg-life", {"command": "echo from pg"})
    assert st == 200 and out["stdout"] == "from pg\n"
    # Nothing of it is in an SQLite file: the store really is PostgreSQL.
    assert not os.path.exists(os.path.join(s.data, "pocketenv.db"))
    s.kill9()
    d = s.start()
    assert d.sandbox("getSandbox", sb["id"])[1]["sandbox"]["status"] == "RUNNING"
    assert d.sandbox("stopSandbox", "pg-life")[0] == 200
    assert d.sandbox("startSandbox", "pg-life", {})[0] == 200
    assert d.sandbox("exec", "pg-life", {"command": "echo again"})[1]["stdout"] == "again\n"


def test_daemons_sharing_a_store_reconcile_only_their_own(pg, served, tmp_path):
    url = pg()
    a = served(["--sandbox-net", "none", "--store", url])
    da = a.start()
    sa = create(da, "on-a")
    da.wait_status(sa["id"], ["RUNNING"])
    # A second daemon, another data directory (another node), the same store.
    (tmp_path / "b").mkdir()
    b = Served(tmp_path / "b", ["--sandbox-net", "none", "--store", url])
    db = b.start()
    try:
        sb = create(db, "on-b")
        db.wait_status(sb["id"], ["RUNNING"])
        # Restarting b must not touch a's sandbox, which b's runtime lacks.
        b.kill9()
        db = b.start()
        assert da.sandbox("getSandbox", sa["id"])[1]["sandbox"]["status"] == "RUNNING"
        assert db.sandbox("getSandbox", sb["id"])[1]["sandbox"]["status"] == "RUNNING"
        assert da.sandbox("exec", sa["id"], {"command": "echo a"})[1]["stdout"] == "a\n"
    finally:
        db.sandbox("deleteSandbox", "on-b")
        b.stop()
    wait_for(lambda: b.runtime_names() == {}, 10, "b's sandboxes removed")
