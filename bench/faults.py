"""Faults a long search meets, each run on real parts, and what the study looks like after.

    python bench/faults.py [--only pg_restart disk_full ...] [--out faults.md]

Each scenario drives the CLI as a user would (real processes, SQLite files, a PostgreSQL
server started by ``.ci/postgres.sh`` on its own port, tmpfs folders for the disk faults,
which need root) and prints one table row:

* trials asked for, COMPLETE, left RUNNING;
* COMPLETE trials whose checkpoint is missing or fails its sha256;
* duplicated trial numbers, and repeated params other than the heartbeat's retries;
* the error line the user saw (the last line of a worker's stderr);
* the time to recover: from the fault's end to the next trial completing.

The scenarios that fit the test suite's time are tests too (tests/cli_tests/test_faults.py
runs them through :func:`run_scenario`).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# a space whose trials take a few seconds on one thread (digits 8x8, ResNet-8 at x0.5)
SPACE = """
name: faults
trials: 6
dataset: {{name: digits, image_size: 8}}
model: {{name: resnet8}}
params:
  placement: {{choices: [none, last_stage, all]}}
  experts: {{low: 2, high: 4}}
  top_k: 1
  lr: {{low: 0.05, high: 0.2, log: true}}
  epochs: {epochs}
  batch_size: 128
  width_multiplier: 0.5
evaluation:
  attack: {{eps: 8/255, step_size: 2/255, steps: 2, max_samples: 64}}
sampler: {{name: random}}
"""


@dataclass
class Row:
    """One scenario's outcome (see the module)."""

    scenario: str
    asked: int
    complete: int = 0
    running: int = 0
    bad_checkpoints: int = 0
    duplicates: int = 0
    error: str = ""  # the line the user saw
    recover_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.complete == self.asked and self.running == 0
                and self.bad_checkpoints == 0 and self.duplicates == 0)

    def cells(self) -> list[str]:
        return [self.scenario, str(self.asked), str(self.complete), str(self.running),
                str(self.bad_checkpoints), str(self.duplicates), self.error or "-",
                "-" if self.recover_s is None else f"{self.recover_s:.1f}",
                "; ".join(self.notes) or "-"]


HEADER = ["scenario", "asked", "complete", "RUNNING", "bad checkpoints", "duplicates",
          "what the user saw", "recover s", "notes"]


# ------------------------------------------------------------------------------- helpers


def cli(*args: str, cwd: Path, env: dict | None = None, wait: bool = True, timeout=900):
    """``automoe ...`` as a process: its CompletedProcess, or the Popen when not waiting."""
    command = [sys.executable, str(ROOT / "cli.py"), *args]
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=full_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip()[:160] if lines else ""


def study_trials(url: str, study: str = "faults"):
    import optuna

    from automoe.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url, create=False, retry_seconds=0)
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


def inspect(row: Row, url: str, artifacts: Path, fault_end: float | None = None) -> Row:
    """Fill the row's counts from the study DB and the artifact folder."""
    import optuna

    from automoe.results import TrialRecord
    from automoe.storage import sha256_file

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    trials = study_trials(url)
    states = collections.Counter(t.state.name for t in trials)
    row.complete, row.running = states["COMPLETE"], states["RUNNING"]
    retry_of = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    for trial in trials:
        if trial.state.name != "COMPLETE":
            continue
        checkpoint = TrialRecord(trial).checkpoint
        path = artifacts / checkpoint["artifact_id"] if checkpoint else None
        if path is None or not path.exists() or sha256_file(path) != checkpoint["sha256"]:
            row.bad_checkpoints += 1
    numbers = [t.number for t in trials]
    # a trial interrupted before it drew its params has none: not a repeat of another
    fresh = [tuple(sorted(t.params.items())) for t in trials
             if retry_of(t) is None and t.params]
    row.duplicates = (len(numbers) - len(set(numbers))) + (len(fresh) - len(set(fresh)))
    if fault_end is not None:
        after = [t.datetime_complete.timestamp() for t in trials
                 if t.state.name == "COMPLETE" and t.datetime_complete.timestamp() > fault_end]
        row.recover_s = min(after) - fault_end if after else None
    if states["FAIL"]:
        row.notes.append(f"{states['FAIL']} FAIL")
    return row


@contextlib.contextmanager
def postgres(port: int):
    """A PostgreSQL server of its own (``.ci/postgres.sh``): its URL, and ``down``/``up``."""
    env = {**os.environ, "AUTOMOE_PG_PORT": str(port),
           "AUTOMOE_PG_DATA": f"/tmp/automoe-pg-{port}"}

    def script(*args):
        return subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh"), *args], env=env,
                              capture_output=True, text=True, check=True).stdout.strip()

    url = script()
    try:
        yield url, lambda: script("down"), lambda: script("up")
    finally:
        script("stop")


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def can_mount() -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with tmpfs(Path(tmp) / "m", "1m"):
                return True
        except (subprocess.CalledProcessError, OSError):
            return False


def start_study(work: Path, url: str, artifacts: Path, epochs: int = 2) -> list[str]:
    """Write the space, create the study with one trial; the workers' common flags."""
    (work / "faults.yaml").write_text(SPACE.format(epochs=epochs))
    common = ["--storage", url, "--artifact-dir", str(artifacts), "--keep", "all", "-q",
              "--threads", "1", "--heartbeat", "1"]
    cli("search", "--space", "faults.yaml", "--trials", "1", "--no-verify", *common, cwd=work)
    return common


def workers(work: Path, common: list[str], count: int, until: int, env=None):
    return [cli("worker", "--study", "faults", "--until", str(until), *common, cwd=work,
                env=env, wait=False) for _ in range(count)]


def finish(procs, timeout: float = 900) -> list[tuple[int, str]]:
    out = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        out.append((proc.returncode, last_line(err)))
    return out


# ----------------------------------------------------------------------------- scenarios


def pg_restart(work: Path, port: int = 54351) -> Row:
    """PostgreSQL stopped for 3 s while 3 workers run toward 9 trials."""
    with postgres(port) as (url, down, up):
        common = start_study(work, url, work / "art", epochs=4)
        procs = workers(work, common, 3, 9)
        wait_mid_study(url)
        down()
        time.sleep(3)
        up()
        fault_end = time.time()
        ends = finish(procs)
        row = inspect(Row("PostgreSQL restarted mid-study (3 workers)", 9), url,
                      work / "art", fault_end)
    row.error = "; ".join(sorted({e for _, e in ends if e})) or "-"
    row.notes.append("exit codes " + ",".join(str(c) for c, _ in ends))
    return row


def wait_mid_study(url: str, timeout: float = 300) -> None:
    """Until a trial has completed and another is running: the middle of a study."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        with contextlib.suppress(Exception):
            states = [t.state.name for t in study_trials(url)]
            if states.count("COMPLETE") >= 2 and "RUNNING" in states:
                return
    raise RuntimeError("the study never reached its middle")


def pg_down_past_budget(work: Path, port: int = 54352) -> Row:
    """PostgreSQL down longer than the workers' retry budget (10 s), then back, then rerun."""
    with postgres(port) as (url, down, up):
        common = start_study(work, url, work / "art", epochs=6)
        procs = workers(work, common, 2, 8, env={"AUTOMOE_DB_RETRY_SECONDS": "10"})
        wait_mid_study(url)
        down()
        ends = finish(procs, timeout=120)
        up()
        fault_end = time.time()
        rerun = finish(workers(work, common, 1, 8))
        row = inspect(Row("PostgreSQL down past the retry budget, then a rerun", 8), url,
                      work / "art", fault_end)
    row.error = "; ".join(sorted({e for _, e in ends if e}))
    row.notes.append("exit codes " + ",".join(str(c) for c, _ in ends)
                     + f", rerun {rerun[0][0]}")
    return row


def disk_full(work: Path) -> Row:
    """The artifact folder is a 160 KiB tmpfs; then it is grown and the search rerun."""
    url = f"sqlite:///{work}/full.db"
    with tmpfs(work / "art", "160k") as artifacts:
        (work / "faults.yaml").write_text(SPACE.format(epochs=1))
        common = ["--storage", url, "--artifact-dir", str(artifacts), "--keep", "all", "-q",
                  "--threads", "1", "--no-verify"]
        first = cli("search", "--space", "faults.yaml", "--trials", "4", *common, cwd=work)
        leftovers = [p.name for p in artifacts.rglob("*") if ".tmp-" in p.name]
        subprocess.run(["mount", "-o", "remount,size=64m", str(artifacts)], check=True)
        fault_end = time.time()
        complete_before = sum(t.state.name == "COMPLETE" for t in study_trials(url))
        rerun = cli("search", "--space", "faults.yaml", "--trials", "4", *common, cwd=work)
        row = inspect(Row("artifact disk full, then grown and rerun", complete_before + 4),
                      url, artifacts, fault_end)
    row.error = last_line(first.stderr)
    row.notes.append(f"exit {first.returncode}, rerun {rerun.returncode}; "
                     f"{len(leftovers)} temp files left")
    return row


def read_only(work: Path) -> Row:
    """The artifact folder is a read-only mount: refused before a trial trains."""
    url = f"sqlite:///{work}/ro.db"
    with tmpfs(work / "art", "1m", read_only=True) as artifacts:
        (work / "faults.yaml").write_text(SPACE.format(epochs=1))
        done = cli("search", "--space", "faults.yaml", "--trials", "2", "--storage", url,
                   "--artifact-dir", str(artifacts), "-q", "--no-verify", cwd=work)
    row = Row("read-only artifact folder", 0, error=last_line(done.stderr))
    try:
        trials = study_trials(url)
    except Exception:  # no study at all: nothing was written
        trials = []
    row.complete = sum(t.state.name == "COMPLETE" for t in trials)
    row.notes.append(f"exit {done.returncode}; {len(trials)} trials in the DB")
    return row


def driver_sigkill(work: Path) -> Row:
    """``search --executor processes --workers 2`` SIGKILLed mid-run, then run again."""
    url = f"sqlite:///{work}/driver.db"
    (work / "faults.yaml").write_text(SPACE.format(epochs=6))
    common = ["--space", "faults.yaml", "--storage", url, "--artifact-dir",
              str(work / "art"), "--keep", "all", "-q", "--threads", "1", "--no-verify",
              "--workers", "2", "--executor", "processes", "--heartbeat", "1"]
    driver = cli("search", "--trials", "10", *common, cwd=work, wait=False)
    wait_mid_study(url)
    children = subprocess.run(["pgrep", "-P", str(driver.pid)], capture_output=True,
                              text=True).stdout.split()
    driver.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    driver.communicate()  # its stderr closes when the last process holding it (a child) ends
    while any(_alive(int(pid)) for pid in children) and time.monotonic() - killed < 300:
        time.sleep(0.1)
    linger = time.monotonic() - killed
    orphans = sum(_alive(int(pid)) for pid in children)
    fault_end = time.time()
    complete_before = sum(t.state.name == "COMPLETE" for t in study_trials(url))
    rerun = cli("search", "--trials", "4", *common, cwd=work)
    row = inspect(Row("driver SIGKILLed (processes), then rerun", complete_before + 4), url,
                  work / "art", fault_end)
    row.error = last_line(rerun.stderr) or "-"
    row.notes.append(f"{len(children)} child processes gone {linger:.1f} s after the "
                     f"driver" if not orphans else f"{orphans} of {len(children)} child "
                     f"processes still alive {linger:.0f} s after the driver")
    row.notes.append(f"rerun exit {rerun.returncode}")
    return row


def verify_killed(work: Path) -> Row:
    """``verify --jobs 2`` with one verifying process SIGKILLed once it holds a job (after
    the processes start, at 1 s), then ``verify`` rerun."""
    import optuna

    from automoe.results import verified_results

    url = f"sqlite:///{work}/verify.db"
    (work / "faults.yaml").write_text(SPACE.format(epochs=1))
    flags = ["--storage", url, "--artifact-dir", str(work / "art"), "-q"]
    cli("search", "--space", "faults.yaml", "--trials", "4", "--keep", "all", "--threads",
        "1", "--no-verify", *flags, cwd=work)
    driver = cli("verify", "--jobs", "2", "--steps", "50", *flags, cwd=work, wait=False)
    children: list[str] = []
    deadline = time.monotonic() + 120
    while not children and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        children = subprocess.run(["pgrep", "-P", str(driver.pid), "-f", "spawn_main"],
                                  capture_output=True, text=True).stdout.split()
    time.sleep(1.0)  # the process has imported torch and taken its job
    killed = time.monotonic()
    for pid in children[:1]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    try:
        _, err = driver.communicate(timeout=300)
        ended = f"exit {driver.returncode} {time.monotonic() - killed:.1f} s after the kill"
    except subprocess.TimeoutExpired:
        driver.kill()
        _, err = driver.communicate()
        ended = "HUNG: killed after 300 s"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name="faults", storage=storage)
    verified_before = len(verified_results(study))
    rerun = cli("verify", "--jobs", "2", "--steps", "50", *flags, cwd=work)
    study = optuna.load_study(study_name="faults", storage=storage)
    row = inspect(Row("verify --jobs 2, a verifying process SIGKILLed", 4), url, work / "art")
    row.error = last_line(err) or "-"
    row.notes.append(f"{ended}; {verified_before} trials verified then; rerun exit "
                     f"{rerun.returncode}, {len(verified_results(study))} verified")
    return row


def ctrl_c_at_creation(work: Path, repeats: int = 20) -> Row:
    """Ctrl-C (SIGINT) to ``search --executor processes --workers 2`` the moment a new trial
    row appears, ``repeats`` times on one study: RUNNING trials counted after each."""
    import sqlalchemy

    url = f"sqlite:///{work}/ctrlc.db"
    (work / "faults.yaml").write_text(SPACE.format(epochs=2))
    common = ["--space", "faults.yaml", "--storage", url, "--artifact-dir",
              str(work / "art"), "--keep", "all", "-q", "--threads", "1", "--no-verify",
              "--workers", "2", "--executor", "processes", "--heartbeat", "1"]
    cli("search", "--trials", "1", *common, cwd=work)  # the study and its DB exist
    engine = sqlalchemy.create_engine(url)

    def count(query: str) -> int:
        with engine.connect() as connection:
            return int(connection.execute(sqlalchemy.text(query)).scalar())

    left_running, codes, errors = [], collections.Counter(), set()
    for _ in range(repeats):
        before = count("select count(*) from trials")
        target = count("select count(*) from trials where state = 'COMPLETE'") + 2
        driver = cli("search", "--trials", str(target), *common, cwd=work, wait=False)
        deadline = time.monotonic() + 120
        while count("select count(*) from trials") == before and time.monotonic() < deadline:
            time.sleep(0.01)
        driver.send_signal(signal.SIGINT)
        try:
            _, err = driver.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            driver.kill()
            _, err = driver.communicate()
        codes[driver.returncode] += 1
        errors.add(last_line(err))
        left_running.append(count("select count(*) from trials where state = 'RUNNING'"))
    engine.dispose()
    trials = study_trials(url)
    row = Row(f"Ctrl-C as a trial is created, {repeats} times (processes, 2 workers)",
              sum(t.state.name == "COMPLETE" for t in trials))
    inspect(row, url, work / "art")
    row.error = "; ".join(sorted(e for e in errors if e)) or "-"
    row.notes.append("RUNNING after each: " + ",".join(map(str, left_running))
                     + "; exit codes " + ", ".join(f"{c}x{n}" for c, n in sorted(codes.items())))
    return row


# a two-node Ray cluster on this machine (Ray's own test helper), driven over stdin
_CLUSTER = """
import sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                  "include_dashboard": False})
worker = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
for line in sys.stdin:
    if line.strip() == "kill":
        cluster.remove_node(worker, allow_graceful=False)
        print("killed", flush=True)
    elif line.strip() == "stop":
        break
cluster.shutdown()
"""


def ray_two_nodes(work: Path, port: int = 54354) -> Row:
    """``search --executor ray`` on a head and a worker node with PostgreSQL; the worker
    node killed mid-study. Also: SQLite on the two nodes is refused."""
    holder = subprocess.Popen([sys.executable, "-c", _CLUSTER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = holder.stdout.readline().strip()
        (work / "faults.yaml").write_text(SPACE.format(epochs=6))
        refused = cli("search", "--space", "faults.yaml", "--storage",
                      f"sqlite:///{work}/ray.db", "--executor", "ray", "--ray-address",
                      address, "--workers", "2", "--trials", "2", "--no-verify", "-q",
                      cwd=work)
        with postgres(port) as (url, _, _):
            driver = cli("search", "--space", "faults.yaml", "--storage", url,
                         "--artifact-dir", str(work / "art"), "--keep", "all", "-q",
                         "--threads", "1", "--heartbeat", "1", "--no-verify", "--executor",
                         "ray", "--ray-address", address, "--workers", "2",
                         "--cpus-per-worker", "1", "--trials", "8", cwd=work, wait=False)
            wait_mid_study(url)
            from automoe.results import TrialRecord

            nodes = {TrialRecord(t).worker.get("ray_node") for t in study_trials(url)}
            holder.stdin.write("kill\n")
            holder.stdin.flush()
            holder.stdout.readline()
            fault_end = time.time()
            _, err = driver.communicate(timeout=900)
            row = inspect(Row("two-node Ray cluster, the worker node killed mid-study", 8),
                          url, work / "art", fault_end)
    finally:
        with contextlib.suppress(Exception):
            holder.stdin.write("stop\n")
            holder.stdin.flush()
        try:
            holder.wait(timeout=120)
        except subprocess.TimeoutExpired:
            holder.kill()
    row.error = last_line(err) or "-"
    row.notes.append(f"trials ran on {len(nodes - {None})} nodes before the kill; "
                     f"driver exit {driver.returncode}")
    row.notes.append(f"SQLite on 2 nodes: exit {refused.returncode}, "
                     f"{last_line(refused.stderr)!r}")
    return row


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie (not reaped yet) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


def load(work: Path, backend: str, count: int = 8, trials: int = 64,
         port: int = 54353) -> Row:
    """``count`` workers x 1 thread, ``trials`` short trials, on one study DB."""
    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            url, _, _ = stack.enter_context(postgres(port))
        else:
            url = f"sqlite:///{work}/load.db"
        common = start_study(work, url, work / "art", epochs=1)
        start = time.time()
        ends = finish(workers(work, common, count, trials), timeout=1800)
        seconds = time.time() - start
        row = inspect(Row(f"load: {count} workers on {backend}", trials), url, work / "art")
        finished = [t for t in study_trials(url) if t.state.name == "COMPLETE"]
        gaps = []
        for group in _by_worker(finished).values():
            ends_at = sorted(t.datetime_complete.timestamp() for t in group)
            gaps += [b - a for a, b in zip(ends_at, ends_at[1:], strict=False)]
        size = (Path(f"{work}/load.db").stat().st_size if backend == "sqlite"
                else _pg_size(url))
    codes = collections.Counter(c for c, _ in ends)
    row.error = "; ".join(sorted({e for c, e in ends if c and e})) or "-"
    gaps.sort()
    row.notes.append(f"{seconds:.0f} s; between trials per worker median "
                     f"{statistics.median(gaps):.1f} s, p95 "
                     f"{gaps[int(0.95 * (len(gaps) - 1))]:.1f} s; DB "
                     f"{size / max(len(finished), 1) / 1024:.0f} KiB per trial; exit codes "
                     + ", ".join(f"{c}x{n}" for c, n in sorted(codes.items())))
    return row


def _by_worker(trials) -> dict:
    from automoe.results import TrialRecord

    groups = collections.defaultdict(list)
    for trial in trials:
        groups[TrialRecord(trial).worker.get("pid")].append(trial)
    return groups


def _pg_size(url: str) -> int:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        size = connection.execute(sqlalchemy.text(
            "select pg_database_size(current_database())")).scalar()
    engine.dispose()
    return int(size)


SCENARIOS = {
    "pg_restart": pg_restart,
    "pg_down_past_budget": pg_down_past_budget,
    "disk_full": disk_full,
    "read_only": read_only,
    "driver_sigkill": driver_sigkill,
    "ray_two_nodes": ray_two_nodes,
    "verify_killed": verify_killed,
    "ctrl_c_at_creation": ctrl_c_at_creation,
    "load_sqlite": lambda work: load(work, "sqlite"),
    "load_sqlite_16": lambda work: load(work, "sqlite", count=16),
    "load_postgresql": lambda work: load(work, "postgresql"),
}
NEEDS_MOUNT = {"disk_full", "read_only"}


def run_scenario(name: str) -> Row:
    """One scenario in a fresh folder."""
    with tempfile.TemporaryDirectory(prefix=f"automoe-{name}-") as tmp:
        start = time.perf_counter()
        row = SCENARIOS[name](Path(tmp))
        row.notes.append(f"scenario {time.perf_counter() - start:.0f} s")
        return row


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row.cells()) + " |"
              for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--out", help="also write the Markdown table here")
    args = parser.parse_args()
    mount = can_mount()
    rows = []
    for name in args.only:
        if name in NEEDS_MOUNT and not mount:
            print(f"[faults] {name}: skipped (mounting a tmpfs needs root)", flush=True)
            continue
        print(f"[faults] {name} ...", flush=True)
        rows.append(run_scenario(name))
        print("  " + " | ".join(rows[-1].cells()), flush=True)
    text = (f"{datetime.date.today()}, {os.cpu_count()} cores\n\n" + markdown(rows))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
