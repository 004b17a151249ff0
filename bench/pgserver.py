"""A throwaway PostgreSQL server for the benchmarks of many daemons on one
store (run-cluster.py, run-pg-read.py): on a Unix socket only, under top."""
import glob
import os
import pwd
import subprocess


def start_pg(top, names):
    """Start it with one database per name: ({name: store URL}, the
    command that stops it)."""
    def run(*argv):
        subprocess.run(list(argv), capture_output=True, text=True, check=True)

    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    user = pwd.getpwnam("postgres")
    data = os.path.join(top, "pg")
    os.mkdir(data, 0o700)
    os.chown(data, user.pw_uid, user.pw_gid)
    as_pg = ["runuser", "-u", "postgres", "--"]
    run(*as_pg, f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust")
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"listen_addresses = ''\nunix_socket_directories = '{data}'\nfsync = off\n")
    run(*as_pg, f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(data, "log"), "-w", "start")
    for n in names:
        run(*as_pg, f"{bindir}/createdb", "-h", data, "-U", "postgres", n)
    stop = [*as_pg, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"]
    return {n: f"postgresql:///{n}?host={data}&user=postgres" for n in names}, stop
