"""`designs query`: SQL over the designs table, the runs and commits views, time
travel by version and timestamp, the output formats, the refusals, and every
query of docs/ANALYSTS.md, against a small catalog made without Prefect."""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from analyst_catalog import CONTENTS, MISSING, RUN_IDS, STYLES, analyst_catalog_out, commit_times

from flows.cli import EXIT_OK, EXIT_REFUSED, main
from pipeline.catalog.designs import DesignCatalog
from pipeline.views.query import QueryError, query, resolve_version

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ANALYSTS.md"
PAIRINGS = len(CONTENTS) * len(STYLES)  # 6: every content x style
OK_PER_RUN, FAILED_PER_RUN = len(CONTENTS) * (len(STYLES) - 1), len(CONTENTS)  # 4, 2 (the missing style)
LAST_VERSION = 6  # create; run 1: faults, shard; run 2: faults, shard; run 3: faults, one shard, then the crash


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return analyst_catalog_out(tmp_path_factory)


def rows(out: Path, sql: str, **kwargs) -> list[dict]:
    return query(out, sql, **kwargs).to_pylist()


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["query", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- designs ---


def test_designs_holds_every_run_with_its_params(out: Path):
    counts = rows(out, "select status, count(*) as n from designs group by status order by status")
    assert counts == [{"status": "failed", "n": 3 * FAILED_PER_RUN}, {"status": "ok", "n": 2 * OK_PER_RUN + 2}]
    per_run = rows(
        out,
        "select run_id, params.steps as steps, count(*) as n from designs where status = 'ok' group by all order by run_id",
    )
    assert per_run == [
        {"run_id": RUN_IDS[0], "steps": 1, "n": OK_PER_RUN},
        {"run_id": RUN_IDS[1], "steps": 2, "n": OK_PER_RUN},
        {"run_id": RUN_IDS[2], "steps": 3, "n": 2},
    ]
    failed = rows(out, "select distinct style_id, error from designs where status = 'failed'")
    assert {r["style_id"] for r in failed} == {MISSING}
    assert all("file not found" in r["error"] for r in failed)
    curve = rows(
        out,
        "select len(loss_total) as n, final_loss.total as final, loss_total[-1] as last from designs "
        "where status = 'ok' and params.steps = 2",
    )
    assert all(r["n"] == 3 and r["final"] == pytest.approx(r["last"], rel=1e-5) for r in curve)


def test_terminal_table_is_the_default(out: Path, capsys):
    code, text, err = cli(
        capsys, "--out", str(out), "select status, count(*) as n from designs group by status order by status"
    )
    assert (code, err) == (EXIT_OK, "")
    assert [line.split() for line in text.strip().splitlines()] == [["status", "n"], ["failed", "6"], ["ok", "10"]]
    code, text, _ = cli(capsys, "--out", str(out), "select * from designs where false")
    assert code == EXIT_OK and text.startswith("(no rows; columns: design_id, run_id,")


# --- runs and commits ---


def test_runs_lists_finished_and_crashed_runs(out: Path):
    runs = {r["run_id"]: r for r in rows(out, "select * from runs order by started_at")}
    assert list(runs) == list(RUN_IDS)
    first, second, crashed = (runs[r] for r in RUN_IDS)
    for run, version in ((first, 2), (second, 4)):
        assert run["state"] == "finished"
        assert (run["ok"], run["failed"], run["already_done"], run["pairings"]) == (
            OK_PER_RUN,
            FAILED_PER_RUN,
            0,
            PAIRINGS,
        )
        assert run["wall_seconds"] > 0 and run["devices"] == ["cpu"] and run["weights"] == "random:0"
        assert run["designs_per_hour"] == pytest.approx(OK_PER_RUN / run["wall_seconds"] * 3600)
        assert run["finished_at"] - run["started_at"] == pytest.approx(
            timedelta(seconds=run["wall_seconds"]), abs=timedelta(microseconds=2)
        )
        assert run["table_version"] == run["last_version"] == version
        assert run["commits"] == 2 and run["first_commit_at"] <= run["last_commit_at"] <= run["finished_at"]
    assert first["finished_at"] <= second["started_at"]
    # No summary.json: listed from config.json, with nulls where the summary would be.
    assert crashed["state"] == "unfinished" and crashed["started_at"] is not None and crashed["devices"] == ["cpu"]
    for column in (
        "finished_at",
        "ok",
        "failed",
        "already_done",
        "pairings",
        "wall_seconds",
        "designs_per_hour",
        "table_version",
    ):
        assert crashed[column] is None, column
    assert (crashed["commits"], crashed["first_version"], crashed["last_version"]) == (2, 5, LAST_VERSION)


def test_runs_without_their_folder_or_with_a_torn_summary(out: Path, tmp_path: Path):
    copy = tmp_path / "catalog"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "runs" / RUN_IDS[2])
    (copy / "runs" / RUN_IDS[1] / "summary.json").write_text('{"run_id": "20260101T0001')  # killed while writing
    runs = {
        r["run_id"]: r for r in rows(copy, "select run_id, state, started_at, ok, commits, first_commit_at from runs")
    }
    assert runs[RUN_IDS[0]]["state"] == "finished"
    assert (
        runs[RUN_IDS[1]]["state"] == "unfinished" and runs[RUN_IDS[1]]["ok"] is None and runs[RUN_IDS[1]]["started_at"]
    )
    history_only = runs[RUN_IDS[2]]
    assert history_only["state"] == "history-only" and history_only["started_at"] is None
    assert history_only["commits"] == 2 and history_only["first_commit_at"] is not None


def test_commits_has_one_row_per_version_with_its_run(out: Path):
    commits = rows(out, "select version, run_id, note, rows, inserted from commits order by version")
    assert [c["version"] for c in commits] == list(range(LAST_VERSION + 1))
    assert commits[0]["note"] == "create" and commits[0]["run_id"] is None
    assert [(c["run_id"], c["note"], c["inserted"]) for c in commits[1:3]] == [
        (RUN_IDS[0], "input-faults", FAILED_PER_RUN),
        (RUN_IDS[0], "shard-0", OK_PER_RUN),
    ]
    joined = rows(
        out,
        "select r.run_id, sum(c.inserted) as inserted from runs r join commits c using (run_id) group by all order by 1",
    )
    assert [j["inserted"] for j in joined] == [
        OK_PER_RUN + FAILED_PER_RUN,
        OK_PER_RUN + FAILED_PER_RUN,
        2 + FAILED_PER_RUN,
    ]


# --- time travel ---


def test_version_reads_an_older_table(out: Path, capsys):
    count = "select count(*) as n from designs"
    assert rows(out, count, version=0) == [{"n": 0}]
    assert rows(out, count, version=2) == [{"n": OK_PER_RUN + FAILED_PER_RUN}]
    assert rows(out, count, version=LAST_VERSION) == rows(out, count) == [{"n": 16}]
    assert rows(out, "select distinct run_id from designs", version=1) == [{"run_id": RUN_IDS[0]}]
    code, text, _ = cli(capsys, "--out", str(out), "--version", "2", count)
    assert code == EXIT_OK and text.split() == ["n", "6"]


def test_as_of_picks_the_last_version_committed_by_then(out: Path, capsys):
    times = commit_times(out)
    count = "select count(*) as n from designs"
    assert resolve_version(DesignCatalog(out), as_of=times[2].isoformat()) == 2  # exactly at a commit: that commit
    halfway = times[2] + (times[3] - times[2]) / 2
    assert resolve_version(DesignCatalog(out), as_of=halfway.isoformat()) == 2
    assert resolve_version(DesignCatalog(out), as_of=times[3] - timedelta(microseconds=1)) == 2
    naive = halfway.replace(tzinfo=None).isoformat()  # no zone: UTC
    assert resolve_version(DesignCatalog(out), as_of=naive) == 2
    assert rows(out, count, as_of=halfway.isoformat()) == rows(out, count, version=2)
    zulu = (times[LAST_VERSION] + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, text, _ = cli(capsys, "--out", str(out), "--as-of", zulu, count)
    assert code == EXIT_OK and text.split() == ["n", "16"]
    code, text, _ = cli(capsys, "--out", str(out), "--as-of", halfway.isoformat(), count)
    assert code == EXIT_OK and text.split() == ["n", "6"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--version", "99"], ["version 99 does not exist", "0..6"]),
        (["--version", "-1"], ["version -1 does not exist"]),
        (["--as-of", "2001-02-03T04:05:06Z"], ["'2001-02-03T04:05:06Z'", "before the first commit", "version 0"]),
        (["--as-of", "last tuesday"], ["'last tuesday'", "not an ISO 8601 timestamp"]),
    ],
)
def test_versions_and_times_the_table_lacks_are_refused(out: Path, capsys, args: list[str], named: list[str]):
    code, text, err = cli(capsys, "--out", str(out), *args, "select 1")
    assert code == EXIT_REFUSED and text == ""
    for part in named:
        assert part in err, (part, err)


def test_version_and_as_of_together_are_refused(out: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["query", "--out", str(out), "--version", "1", "--as-of", "2026-01-01", "select 1"])
    assert exit_info.value.code == EXIT_REFUSED
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(QueryError, match="not both"):
        resolve_version(DesignCatalog(out), version=1, as_of="2026-01-01")


# --- output formats ---

RESULT_SQL = (
    "select design_id, run_id, created_at, status, error, params.steps as steps, params, loss_total, tags, "
    "final_loss.total as final_total from designs order by design_id"
)


def test_parquet_output_keeps_types_and_nested_columns(out: Path, tmp_path: Path, capsys):
    target = tmp_path / "result.parquet"
    code, text, err = cli(capsys, "--out", str(out), "--format", "parquet", "-o", str(target), RESULT_SQL)
    assert (code, text, err) == (EXIT_OK, "", "")
    written = pq.read_table(target)
    expected = query(out, RESULT_SQL)
    assert written.schema.equals(expected.schema) and written.equals(expected)
    assert pa.types.is_struct(written.schema.field("params").type) and pa.types.is_list(
        written.schema.field("loss_total").type
    )
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file is gone"


def test_csv_output_writes_nested_columns_as_json(out: Path, tmp_path: Path, capsys):
    target = tmp_path / "result.csv"
    assert cli(capsys, "--out", str(out), "--output", str(target), RESULT_SQL)[0] == EXIT_OK  # format from the suffix
    written = pacsv.read_csv(target).to_pylist()
    expected = query(out, RESULT_SQL).to_pylist()
    assert len(written) == len(expected) == 16
    for got, want in zip(written, expected):
        assert (
            got["design_id"] == want["design_id"] and got["steps"] == want["steps"] and got["status"] == want["status"]
        )
        assert json.loads(got["params"])["steps"] == want["params"]["steps"]
        assert json.loads(got["tags"]) == want["tags"]
        if want["loss_total"] is None:
            assert not got["loss_total"]  # an empty field
        else:
            assert json.loads(got["loss_total"]) == pytest.approx(want["loss_total"])
        assert (got["error"] or None) == want["error"]


def test_json_output_is_an_array_of_rows(out: Path, tmp_path: Path, capsys):
    target = tmp_path / "result.out"
    assert cli(capsys, "--out", str(out), "--format", "json", "-o", str(target), RESULT_SQL)[0] == EXIT_OK
    written = json.loads(target.read_text())
    expected = query(out, RESULT_SQL).to_pylist()
    assert [r["design_id"] for r in written] == [r["design_id"] for r in expected]
    first = written[0]
    assert first["created_at"] == expected[0]["created_at"].isoformat()
    assert first["params"]["style_layers"] == list(expected[0]["params"]["style_layers"])
    # To the terminal when there is no --output
    code, text, _ = cli(capsys, "--out", str(out), "--format", "json", "select run_id, ok from runs order by run_id")
    assert code == EXIT_OK
    assert json.loads(text) == [
        {"run_id": RUN_IDS[0], "ok": OK_PER_RUN},
        {"run_id": RUN_IDS[1], "ok": OK_PER_RUN},
        {"run_id": RUN_IDS[2], "ok": None},
    ]
    code, text, _ = cli(capsys, "--out", str(out), "--format", "csv", "select run_id, state from runs order by run_id")
    assert code == EXIT_OK and text.splitlines()[:2] == ['"run_id","state"', f'"{RUN_IDS[0]}","finished"']


def test_table_output_to_a_file(out: Path, tmp_path: Path, capsys):
    target = tmp_path / "result.txt"
    assert (
        cli(
            capsys,
            "--out",
            str(out),
            "-o",
            str(target),
            "select status, count(*) as n from designs group by 1 order by 1",
        )[0]
        == EXIT_OK
    )
    assert [line.split() for line in target.read_text().splitlines()] == [
        ["status", "n"],
        ["failed", "6"],
        ["ok", "10"],
    ]


# --- refusals ---


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["selec status from designs"], ["query failed", "selec"]),
        (["select nope from designs"], ["query failed", "nope"]),
        (["select * from no_such_table"], ["query failed", "no_such_table"]),
        (["--format", "parquet", "select 1"], ["--format parquet needs --output"]),
        (["-o", "result.xlsx", "select 1"], ["'result.xlsx'", "suffix"]),
        (["-o", "no/such/folder/result.csv", "select 1"], ["'no/such/folder'", "does not exist"]),
    ],
)
def test_bad_queries_and_outputs_are_refused(
    out: Path, capsys, args: list[str], named: list[str], tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    code, text, err = cli(capsys, "--out", str(out), *args)
    assert code == EXIT_REFUSED and text == ""
    assert err.startswith("designs query: ")
    for part in named:
        assert part in err, (part, err)
    assert list(tmp_path.iterdir()) == [], "nothing written"


ESCAPES = {
    "read a file": "select * from read_csv('/etc/passwd')",
    "read a file as text": "select content from read_text('{secret}')",
    "read a parquet file": "select * from read_parquet('{out}/designs/*.parquet')",
    "list a folder": "select * from glob('/root/*')",
    "write a file": "copy (select * from designs) to '{here}/designs.csv'",
    "write into the table's log": (
        "copy (select 1 as commitInfo) to '{out}/designs/_delta_log/00000000000000000099.json' (format json)"
    ),
    "overwrite one of the table's data files": "copy (select 1 as a) to '{data_file}' (use_tmp_file false)",
    "write beside the in-memory database": "copy (select 1 as a) to ':memory:.wal' (format csv)",
    "explain analyze a write": "explain analyze copy (select 1 as a) to '{here}/a.csv' (format csv)",
    "export the database": "export database '{here}/dump'",
    "attach a database": "attach '{here}/other.duckdb'",
    "change a setting through a pragma": "pragma enable_profiling = 'json'",
    "load an extension": "load httpfs",
    "switch file access back on": "set enable_external_access = true",
    "unlock the configuration": "set lock_configuration = false",
}


@pytest.mark.parametrize("sql", ESCAPES.values(), ids=ESCAPES.keys())
def test_the_query_door_is_read_only(out: Path, capsys, sql: str, tmp_path: Path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the analysts' door")
    log_before = sorted(p.name for p in (out / "designs" / "_delta_log").iterdir())
    data_file = Path(DesignCatalog(out).table().file_uris()[0])  # readable by the query, never writable
    data_before = data_file.read_bytes()
    code, text, err = cli(capsys, "--out", str(out), sql.format(out=out, here=here, secret=secret, data_file=data_file))
    assert code == EXIT_REFUSED and text == "", (text, err)
    assert err.startswith("designs query: query refused: ")
    assert "reads only the tables designs, runs and commits" in err
    assert "not for the analysts" not in err
    assert list(here.iterdir()) == [], "nothing written"
    assert sorted(p.name for p in (out / "designs" / "_delta_log").iterdir()) == log_before
    assert data_file.read_bytes() == data_before
    # The door still answers, and still writes its -o files (Python writes them, not DuckDB).
    code, _, err = cli(capsys, "--out", str(out), "-o", str(here / "n.csv"), "select count(*) as n from designs")
    assert code == EXIT_OK, err
    assert (here / "n.csv").read_text().split() == ['"n"', "16"]


def catalog_copy(out: Path, tmp_path: Path) -> Path:
    """A copy of the analyst catalog an attack may damage (the module's stays intact)."""
    copy = tmp_path / "catalog"
    shutil.copytree(out, copy, symlinks=True)
    return copy


def data_files(out: Path) -> list[Path]:
    return [Path(uri) for uri in DesignCatalog(out).table().file_uris()]


ATTACKS = {
    "explain analyze copy over a data file": (
        "explain analyze copy (select 'PWNED' as x) to '{target}' (format csv, use_tmp_file false)"
    ),
    "copy an empty read of another file over one": (
        "explain analyze copy (select * from read_parquet('{other}') limit 0) to '{target}' "
        "(format parquet, use_tmp_file false)"
    ),
    "a second statement after a read": (
        "select 1; explain analyze copy (select 'PWNED' as x) to '{target}' (format csv, use_tmp_file false)"
    ),
}


@pytest.mark.parametrize("sql", ATTACKS.values(), ids=ATTACKS.keys())
def test_no_statement_writes_a_data_file(out: Path, tmp_path: Path, capsys, sql: str):
    copy = catalog_copy(out, tmp_path)
    target, other = data_files(copy)[:2]
    before = {path: path.read_bytes() for path in data_files(copy)}
    code, text, err = cli(capsys, "--out", str(copy), sql.format(target=target, other=other))
    assert (code, text) == (EXIT_REFUSED, ""), err
    assert err.startswith("designs query: query ") and err.count("\n") == 1, err
    assert {path: path.read_bytes() for path in data_files(copy)} == before, "every data file unchanged"
    assert rows(copy, "select count(*) as n from designs") == [{"n": 16}]


def test_one_statement_per_query(out: Path, capsys):
    code, text, err = cli(capsys, "--out", str(out), "select 1 as a; select 2 as b")
    assert (code, text) == (EXIT_REFUSED, "")
    assert err == "designs query: query refused: one statement per query; this is 2\n"
    with pytest.raises(QueryError, match="one statement per query"):
        query(out, "select 1; ; select 2")


def test_a_data_file_replaced_by_a_symlink_out_of_the_table_is_refused(out: Path, tmp_path: Path, capsys):
    """The link's target, a parquet file of the table's own kind holding a 'secret' design, is never read."""
    copy = catalog_copy(out, tmp_path)
    victim, other = data_files(copy)[:2]
    secret = pq.read_table(other)
    secret = secret.set_column(
        0, "design_id", pa.array(["secret-design"] * secret.num_rows, secret.schema.field(0).type)
    )
    outside = tmp_path / "outside.parquet"
    pq.write_table(secret, outside)
    victim.unlink()
    victim.symlink_to(outside)
    for sql in (
        "select design_id from designs where design_id = 'secret-design'",
        f"select content from read_text('{victim}')",
    ):
        code, text, err = cli(capsys, "--out", str(copy), sql)
        assert (code, text) == (EXIT_REFUSED, ""), err
        assert "outside" in err and victim.name in err and err.count("\n") == 1, err
        assert "secret-design" not in err
    # A link that stays inside the table's folder reads as its target.
    victim.unlink()
    victim.symlink_to(other)
    assert cli(capsys, "--out", str(copy), "select count(*) as n from designs")[0] == EXIT_OK


def test_timeout_stops_a_query(out: Path, capsys):
    """A query that would run for hours ends with one line; the thread bounds the test if it does not."""
    import threading

    done: dict = {}

    def run() -> None:
        done["code"] = main(
            ["query", "--out", str(out), "--timeout", "1", "select count(*) from range(100000000000000)"]
        )

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(300)
    assert not worker.is_alive(), "--timeout did not stop the query"
    captured = capsys.readouterr()
    assert (done["code"], captured.out) == (EXIT_REFUSED, "")
    assert captured.err == "designs query: query stopped after 1 s (--timeout)\n"
    with pytest.raises(QueryError, match=r"^query stopped after 0.5 s \(--timeout\)$"):
        query(out, "select count(*) from range(100000000000000)", timeout_s=0.5)
    assert rows(out, "select count(*) as n from designs", timeout_s=0.5) == [{"n": 16}]  # well within it


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_timeout_is_refused(out: Path, capsys, value: str):
    with pytest.raises(SystemExit) as exit_info:
        main(["query", "--out", str(out), "--timeout", value, "select 1"])
    assert exit_info.value.code == EXIT_REFUSED and f"{value!r} is not a number of seconds" in capsys.readouterr().err


def test_settings_reveal_no_folder(out: Path, capsys, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = rows(
        out,
        "select current_setting('home_directory') as home, current_setting('allowed_paths') as paths, "
        "current_setting('allowed_directories') as folders, current_setting('temp_directory') as temp",
    )
    assert got == [{"home": "", "paths": [], "folders": [], "temp": ""}]
    settings = rows(out, "select name, value from duckdb_settings()")
    revealing = [str(Path.home()), str(out), str(tmp_path), "/tmp", "/root"]
    assert [s for s in settings if any(part in (s["value"] or "") for part in revealing)] == []
    assert {s["name"]: s["value"] for s in settings}["enable_external_access"] == "false"


def test_out_is_positional_or_a_flag(out: Path, capsys):
    count = "select count(*) as n from designs"
    for args in (
        [str(out), count],
        ["--out", str(out), count],
        ["--version", "2", str(out), count],
        [str(out), "--version", "2", count],
    ):
        code, text, err = cli(capsys, *args)
        assert code == EXIT_OK, (args, err)
        assert text.split() == ["n", "6" if "--version" in args else "16"]
    code, text, err = cli(capsys, str(out), count, "--out", str(out))
    assert (code, text) == (EXIT_REFUSED, "") and "OUT given twice" in err


def test_maintained_files_and_newer_commits_read_as_one_table(out: Path, tmp_path: Path):
    """After a maintenance (files of plain strings, read with filters pushed into pyarrow), a commit
    adds a file of string_view columns (read whole, filtered by DuckDB): one table either way."""
    from pipeline.catalog.maintenance import maintain
    from pipeline.views.query import connect, run_sql

    copy = catalog_copy(out, tmp_path)
    maintain(copy, resort=True)
    catalog = DesignCatalog(copy)
    newer = [
        {**row, "design_id": f"newer-{i}", "run_id": "newer-run"}
        for i, row in enumerate(catalog.table().to_pyarrow_table(filters=[("status", "=", "ok")]).to_pylist()[:3])
    ]
    catalog.commit(newer, "newer-run")
    con = connect(copy)
    try:
        tables = {
            name
            for (name,) in con.sql(
                "select table_name from duckdb_tables() union select view_name from duckdb_views()"
            ).fetchall()
        }
        assert {"designs_scanned", "designs_streamed"} <= tables, "both kinds of file"
        assert (
            run_sql(con, "select * from designs limit 0").column_names
            == DesignCatalog(copy).table().schema().to_arrow().names
        )
    finally:
        con.close()
    assert rows(copy, "select status, count(*) as n from designs group by 1 order by 1") == [
        {"status": "failed", "n": 6},
        {"status": "ok", "n": 13},
    ]
    assert rows(copy, "select count(*) as n from designs where run_id = 'newer-run' and content_id is not null") == [
        {"n": 3}
    ]
    old_id = rows(out, "select min(design_id) as d from designs where status = 'ok'")[0]["d"]
    for design_id in (old_id, "newer-1"):
        assert rows(copy, f"select design_id from designs where design_id = '{design_id}'") == [
            {"design_id": design_id}
        ]


def test_files_of_an_older_schema_read_as_the_table_says(tmp_path: Path):
    """Files written before a column or a params field was added read those as null."""
    from deltalake import DeltaTable, write_deltalake

    from pipeline.catalog.schema import SCHEMA

    params = SCHEMA.field("params").type
    old_params = pa.struct([f for f in params if f.name != "pooling"])
    old = pa.schema(
        [pa.field("params", old_params) if f.name == "params" else f for f in SCHEMA if f.name != "parent_design_id"]
    )
    catalog = DesignCatalog(tmp_path / "out")
    DeltaTable.create(str(catalog.table_path), schema=old, partition_by=["status"])
    row = {"design_id": "d-old", "run_id": "r1", "created_at": pa.scalar(0, pa.timestamp("us", "UTC")).as_py()}
    row |= {"status": "ok", "style_id": "s", "params": {"steps": 5}}
    write_deltalake(str(catalog.table_path), pa.Table.from_pylist([row], schema=old), mode="append")
    new = {**row, "design_id": "d-new", "parent_design_id": "d-old", "params": {"steps": 7, "pooling": "avg"}}
    write_deltalake(
        str(catalog.table_path), pa.Table.from_pylist([new], schema=SCHEMA), mode="append", schema_mode="merge"
    )
    got = rows(
        tmp_path / "out",
        "select design_id, parent_design_id, params.steps as steps, params.pooling as pooling "
        "from designs order by design_id",
    )
    assert got == [
        {"design_id": "d-new", "parent_design_id": "d-old", "steps": 7, "pooling": "avg"},
        {"design_id": "d-old", "parent_design_id": None, "steps": 5, "pooling": None},
    ]
    # A filter on the column the older file lacks reads it as null there too.
    assert rows(tmp_path / "out", "select count(*) as n from designs where parent_design_id is null") == [{"n": 1}]
    assert rows(tmp_path / "out", "select count(parent_design_id) as n from designs") == [{"n": 1}]
    # The version before the new column reads without it, as its schema says.
    assert "parent_design_id" not in query(tmp_path / "out", "select * from designs", version=1).column_names


def test_a_missing_catalog_is_refused(tmp_path: Path, capsys):
    for extra in ([], ["--version", "1"], ["--as-of", "2026-01-01"]):
        code, _, err = cli(capsys, "--out", str(tmp_path / "nothing"), *extra, "select 1")
        assert code == EXIT_REFUSED and "no design catalog at" in err and "nothing" in err


def test_bad_format_choice_is_refused(out: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["query", "--out", str(out), "--format", "xml", "select 1"])
    assert exit_info.value.code == EXIT_REFUSED and "'xml'" in capsys.readouterr().err


# --- docs/ANALYSTS.md: every query in it runs (its Python snippets: tests/test_docs_commands.py) ---


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def test_the_doc_has_worked_queries():
    assert len(doc_blocks("sql")) >= 5


@pytest.mark.parametrize("sql", doc_blocks("sql"), ids=lambda s: re.sub(r"\W+", "-", s.split("\n")[0].strip("- "))[:40])
def test_doc_sql_runs(out: Path, sql: str):
    result = query(out, sql)
    assert result.num_rows > 0, f"no rows from:\n{sql}"


@pytest.mark.parametrize("where", ["designs/_delta_log/00000000000000000099.json", "designs/status=ok/result.parquet"])
def test_output_into_a_delta_table_is_refused(out: Path, tmp_path: Path, capsys, where: str):
    # A result written as the next log entry would become a commit of the catalog.
    copy = catalog_copy(out, tmp_path)
    target = copy / where
    target.parent.mkdir(exist_ok=True)
    before = sorted(p.name for p in (copy / "designs" / "_delta_log").iterdir())
    code, _, err = cli(capsys, "--out", str(copy), "--format", "json", "-o", str(target), "select 1")
    assert code == EXIT_REFUSED and "inside the Delta table" in err and len(err.strip().splitlines()) == 1
    assert not target.exists()
    assert sorted(p.name for p in (copy / "designs" / "_delta_log").iterdir()) == before
