"""One box to many: copy a SQLite store (jobs, events, datasets, uploads, counters) into an empty PostgreSQL
store, and the data folder's artifacts (complete checkpoints, final models, merged forms, uploaded datasets)
into the shared artifact store, so that replicas carry on with every job.

    tunewire-server migrate-store --from sqlite:///data/tunewire.db --to postgresql://USER:PW@HOST/DB \\
        [--artifacts s3://BUCKET/PREFIX --s3-endpoint-url URL] [--data-dir /data]

The old server must be stopped first (the SQLite file is read as it is). Order: the target is checked to be
empty (a migration never merges into a store in use: it refuses, naming what is there), then the artifacts
are copied (units as units: files first, marker last; a unit already stored with the same marker is
skipped, so a rerun after a failure copies only what is missing), then the rows are copied in one
PostgreSQL transaction, events with COPY. Replicas therefore never see a job whose artifacts are not there
yet, and a failure leaves the target empty. Jobs the old server left RUNNING or CANCELLING are copied with an
expired lease: the first replica's recovery takes them over, as after a crash, and resumes them from their
newest checkpoint in the artifact store. Both schemas are first brought to this version by their own
migrations (as a server start would).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tunewire_server.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore, open_store
from tunewire_server.checkpoints import MARKER
from tunewire_server.jobs.states import JobState
from tunewire_server.shared_store import checkpoint_key, dataset_key, model_key

TABLES = ("jobs", "events", "datasets", "uploads", "counters")  # in this order (events reference jobs)
MIGRATED_OWNER = "migrated-from-sqlite"  # the expired lease of a job the old server left running


@dataclass
class MigrationReport:
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    units: int = 0  # units put into the artifact store
    units_skipped: int = 0  # already there with the same marker
    files: int = 0  # uploaded datasets put
    taken_over: list[str] = field(default_factory=list)  # jobs copied with an expired lease


def sqlite_path(source: str) -> Path:
    """The SQLite file of `--from`: sqlite:///abs/path (sqlite:////abs/path too) or a plain path."""
    if source.startswith("sqlite://"):
        return Path("/" + source[len("sqlite://"):].lstrip("/"))
    return Path(source)


def _read_only(source: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)


def _columns_sqlite(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _columns_postgres(conn, table: str) -> list[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                        "AND table_schema = current_schema()", (table,)).fetchall()
    return [r[0] for r in rows]


def target_contents(conn) -> dict[str, int]:
    """The tables of the target that hold rows (jobs, events, datasets, uploads): {table: rows}."""
    found = {}
    for table in ("jobs", "events", "datasets", "uploads"):
        n = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if n:
            found[table] = n
    return found


def prepare(source: Path, target_url: str) -> None:
    """Bring both schemas to this version (each store's own migrations) and refuse a non-empty target or a
    missing source; ValueError naming the option otherwise."""
    from tunewire_server.store.postgres import PostgresStore
    from tunewire_server.store.sqlite import SQLiteStore

    if not source.is_file():
        raise ValueError(f"--from: no SQLite store at {source}")
    SQLiteStore(source).close()
    target = PostgresStore(target_url)
    target.close()
    with _connect(target_url) as conn:
        contents = target_contents(conn)
    if contents:
        raise ValueError(f"--to: the target store is not empty ({', '.join(f'{n} {t}' for t, n in contents.items())}"
                         "); a migration only fills a new, empty database")


def _connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=False, connect_timeout=5)


def copy_rows(source: Path, target_url: str, report: MigrationReport) -> None:
    """Every row of TABLES from the SQLite file into PostgreSQL, in one transaction that first checks the
    target is still empty (a replica started meanwhile would have been refused: rows there stop it)."""
    db = _read_only(source)
    try:
        with _connect(target_url) as conn:
            conn.execute("LOCK TABLE jobs, events, datasets, uploads, counters IN EXCLUSIVE MODE")
            contents = target_contents(conn)
            if contents:
                raise ValueError(f"--to: the target store filled up while migrating ({contents})")
            for table in TABLES:
                columns = [c for c in _columns_sqlite(db, table) if c in set(_columns_postgres(conn, table))]
                names = ", ".join(columns)
                n = 0
                with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in db.execute(f"SELECT {names} FROM {table}"):
                        copy.write_row(row)
                        n += 1
                report.rows[table] = n
            held = [JobState.RUNNING.value, JobState.CANCELLING.value]
            rows = conn.execute("UPDATE jobs SET lease_owner = %s, lease_expires_at = 0 WHERE state = ANY(%s) "
                                "RETURNING id", (MIGRATED_OWNER, held)).fetchall()
            report.taken_over = sorted(r[0] for r in rows)
            conn.commit()
    finally:
        db.close()


def _units(job_dir: Path, job_id: str):
    """(key, folder) of every complete unit (a folder with its marker) in a job folder."""
    checkpoints = job_dir / "checkpoints"
    if checkpoints.is_dir():
        for child in sorted(checkpoints.iterdir()):
            if child.name.startswith("checkpoint-") and (child / MARKER).is_file():
                yield checkpoint_key(job_id, child.name), child
    if (job_dir / "model" / MARKER).is_file():
        yield model_key(job_id), job_dir / "model"
    merged = job_dir / "merged"
    if merged.is_dir():
        for child in sorted(merged.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and (child / MARKER).is_file():
                yield f"jobs/{job_id}/merged/{child.name}", child


def copy_artifacts(source: Path, data_dir: Path, upload_dir: Path, store: ArtifactStore,
                   report: MigrationReport, log=print) -> None:
    """The data folder's complete units of the source's jobs, and its uploaded datasets, into `store`."""
    db = _read_only(source)
    try:
        job_ids = [r[0] for r in db.execute("SELECT id FROM jobs ORDER BY ordinal")]
        datasets = [r[0] for r in db.execute("SELECT file_name FROM datasets ORDER BY ordinal")]
    finally:
        db.close()
    for job_id in job_ids:
        for key, folder in _units(data_dir / "jobs" / job_id, job_id):
            try:
                if store.manifest(key).marker == (folder / MARKER).read_bytes():
                    report.units_skipped += 1
                    continue
            except ArtifactNotFound:
                pass
            store.put_unit(folder, key)
            report.units += 1
            log(f"copied {key}")
    for file_name in datasets:
        path = upload_dir / "datasets" / file_name
        if not path.is_file():
            log(f"skipped datasets/{file_name}: not in {upload_dir / 'datasets'}")
            continue
        key = dataset_key(file_name)
        try:
            if store.stat(key).size == path.stat().st_size:
                continue
        except ArtifactNotFound:
            pass
        store.put_file(key, path)
        report.files += 1
        log(f"copied {key}")


def migrate(source: Path, target_url: str, *, data_dir: Path | None = None, upload_dir: Path | None = None,
            artifacts: ArtifactStore | None = None, log=print) -> MigrationReport:
    """Copy the SQLite store `source` (and, with `artifacts`, the data folder's artifacts) into the empty
    PostgreSQL store `target_url`. ValueError (naming the option) when the target is not empty or a store
    cannot be opened; the artifact store's errors when it cannot be written (the target stays empty)."""
    report = MigrationReport()
    prepare(source, target_url)
    if artifacts is not None:
        data_dir = data_dir or source.parent
        copy_artifacts(source, data_dir, upload_dir or data_dir / "uploads", artifacts, report, log)
    copy_rows(source, target_url, report)
    return report


def main(argv: list[str]) -> int:
    """`tunewire-server migrate-store ...`: the exit status (0 done, 2 refused or failed)."""
    parser = argparse.ArgumentParser(prog="tunewire-server migrate-store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", required=True, help="the old SQLite store: sqlite:///path/tunewire.db")
    parser.add_argument("--to", dest="target", required=True, help="an empty PostgreSQL database: postgresql://...")
    parser.add_argument("--data-dir", type=Path, help="the old data folder (default: the SQLite file's folder)")
    parser.add_argument("--upload-dir", type=Path, help="the old upload dir (default: DATA_DIR/uploads)")
    parser.add_argument("--artifacts", default="", help="the replicas' artifact store (s3://BUCKET/PREFIX); "
                        "empty: the artifacts are not copied")
    parser.add_argument("--s3-endpoint-url", default="", help="S3-compatible endpoint (credentials: AWS_*)")
    parser.add_argument("--s3-region", default="", help="S3 region")
    args = parser.parse_args(argv)
    try:
        store = None
        if args.artifacts:
            store = open_store(args.artifacts, endpoint_url=args.s3_endpoint_url or None,
                               region=args.s3_region or None) if args.artifacts.startswith(("s3://", "s3a://")) \
                else open_store(args.artifacts)
            store.check()
        report = migrate(sqlite_path(args.source), args.target, data_dir=args.data_dir, upload_dir=args.upload_dir,
                         artifacts=store)
    except (ValueError, ArtifactError) as exc:
        print(f"tunewire-server migrate-store: {exc}", file=sys.stderr)
        return 2
    print(f"migrated: {report.rows}; artifact units copied {report.units} (already there {report.units_skipped}), "
          f"datasets copied {report.files}; taken over at the first replica's start: {report.taken_over or 'none'}")
    return 0
