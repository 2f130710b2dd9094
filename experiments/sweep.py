"""A resumable sweep runner: one row per configuration, finished rows skipped, results atomic.

An experiment is a list of rows (dicts of settings, each with a unique ``run_id``). `run_sweep`
calls ``run_fn(row, run_dir)`` for every row whose run folder holds no ``row.json`` yet, writes
that row's flat results to ``<out_dir>/runs/<run_id>/row.json`` the moment it finishes, and after
every row rewrites ``<out_dir>/results.csv`` and ``<out_dir>/results.json`` with all finished rows
(atomically, via `keras_effattn.utils.io`). A sweep killed half-way therefore resumes where it
stopped: re-running the same command skips the finished rows and reads their results back.

Each row carries every setting that affects its result (scripts merge their sweep-wide settings
into every row, see `experiments.suite.row_settings`). The row's settings are written to
``started/<run_id>.json`` before it starts and kept in its ``row.json`` when it finishes;
a started or finished row is only reused when those settings equal the requested row's. All rows
are checked before anything runs (`check_settings`): a changed setting stops the sweep with a
ValueError naming each setting that differs, its stored and its requested value, instead of
mixing results from different settings in one table.

Each finished row also records the conditions it ran under: ``wall_seconds`` (the whole run),
``load_1min_start``/``load_1min_end`` (the CPU's 1-minute load average: a busy machine explains a
slow row), ``cpu_model`` and ``cpu_isa`` (AVX2 / AVX-512 / VNNI / AMX: int8 and bf16 speed depend
on it) and ``rows_before_in_process`` (0 for a row that ran in a fresh process; a row's peak
memory includes what the rows before it left behind, see `run_in_fresh_processes`).

Example:

>>> import tempfile
>>> out = tempfile.mkdtemp()
>>> rows = [{"run_id": f"x{x}", "x": x} for x in (1, 2)]
>>> results = run_sweep(rows, lambda row, run_dir: {"y": row["x"] ** 2}, out)
>>> [r["y"] for r in results]
[1, 4]
"""

import math
import os
import pathlib
import re
import subprocess
import sys
import time

from keras_effattn.utils import io, metadata

ROW_FILE = "row.json"
# A child of `run_in_fresh_processes` runs at most this many new rows, then exits with
# `ROWS_REMAIN_EXIT` when unfinished rows remain.
ROWS_PER_PROCESS_ENV = "KERAS_EFFATTN_ROWS_PER_PROCESS"
ROWS_REMAIN_EXIT = 3
_new_rows_run = 0  # new rows run by this process, over all its sweeps
STARTED_DIR = "started"  # <out_dir>/started/<run_id>.json: a started row's settings
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


def run_id_of(**settings):
    """A readable run id from settings, e.g. ``run_id_of(variant="favor", seed=1)`` ->
    ``"variant=favor_seed=1"`` (characters outside ``[A-Za-z0-9_.=+-]`` become ``-``)."""
    if not settings:
        raise ValueError("run_id_of needs at least one setting, e.g. run_id_of(seed=0).")
    text = "_".join(f"{k}={v}" for k, v in settings.items())
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", text)


def check_rows(rows):
    """Raises ValueError unless `rows` are dicts with unique, folder-safe ``run_id`` values."""
    if not rows:
        raise ValueError("run_sweep got no rows; give at least one configuration.")
    seen = set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "run_id" not in row:
            raise ValueError(
                f"Sweep row {i} must be a dict with a 'run_id' key, got {row!r}; build rows "
                "with run_id=run_id_of(...)."
            )
        run_id = str(row["run_id"])
        if not _RUN_ID.match(run_id):
            raise ValueError(
                f"run_id {run_id!r} (row {i}) may only hold letters, digits and '_.=+-' (it "
                "names a folder); build it with run_id_of(...)."
            )
        if run_id in seen:
            raise ValueError(f"run_id {run_id!r} appears twice; every row needs its own run_id.")
        seen.add(run_id)


def settings_diff(stored, row):
    """The settings that differ between `stored` and `row`, as ``{name: (stored, requested)}``
    (compared through JSON, so tuples equal lists; a missing setting is ``"<absent>"``)."""
    stored, row = io.to_jsonable(stored), io.to_jsonable(row)
    absent = "<absent>"
    return {k: (stored.get(k, absent), row.get(k, absent))
            for k in list(stored) + [k for k in row if k not in stored]
            if stored.get(k, absent) != row.get(k, absent)}


def _stored_settings(out_dir, run_id):
    finished = out_dir / "runs" / run_id / ROW_FILE
    if finished.is_file():
        return io.read_json(finished)["settings"]
    started = out_dir / STARTED_DIR / f"{run_id}.json"
    return io.read_json(started) if started.is_file() else None


def check_settings(rows, out_dir):
    """Checks every row against the settings its run folder was started or finished with.

    Call it before writing anything for a resumed sweep (`run_sweep` calls it first too).

    Raises:
        ValueError: for badly formed rows, or when a run folder of `out_dir` was started or
            finished with other settings than its requested row; the message names every
            differing setting with its stored and requested value, and the fix.
    """
    check_rows(rows)
    out_dir = pathlib.Path(out_dir)
    changed = []
    for row in rows:
        stored = _stored_settings(out_dir, str(row["run_id"]))
        if stored is not None:
            diff = settings_diff(stored, row)
            if diff:
                changed.append((row["run_id"], diff))
    if changed:
        run_id, diff = changed[0]
        details = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())
        others = f" (and {len(changed) - 1} more run(s))" if len(changed) > 1 else ""
        raise ValueError(
            f"The sweep folder {out_dir} holds run {run_id!r}{others} made with other settings "
            f"({details}); reusing it would mix results of different settings in one table. "
            "Write to a new folder (--output_dir=...), or pass --overwrite to replace this one."
        )


def load_finished(out_dir):
    """Reads the finished rows of a sweep folder (``runs/*/row.json``), sorted by run_id."""
    runs = pathlib.Path(out_dir) / "runs"
    if not runs.is_dir():
        return []
    return [io.read_json(p)["result"] for p in sorted(runs.glob(f"*/{ROW_FILE}"))]


def run_sweep(rows, run_fn, out_dir, columns=None, on_row_done=None, same_run_as=None):
    """Runs every unfinished row of a sweep and tabulates all finished rows.

    Args:
        rows: list of dicts, each with a unique ``run_id`` (a folder name) and the settings of
            that run; every value must be JSON-serialisable.
        run_fn: callable ``(row, run_dir) -> dict`` that runs one configuration, may write
            anything into ``run_dir`` (a `pathlib.Path`, created for it) and returns flat
            results (numbers or strings).
        out_dir: the sweep folder; results land in ``results.csv``/``results.json`` there and
            each run in ``runs/<run_id>/``.
        columns: optional list of leading CSV columns (a stable order); the rest follow in
            first-seen order.
        on_row_done: optional callable ``(result_row, skipped)`` called after each row (for
            logging in scripts; the runner itself prints nothing).
        same_run_as: optional dict run_id -> the run_id of an earlier row that runs the very
            same configuration (e.g. an ablation's base setting, which several groups
            contain). Such a row is not trained again: it takes the earlier row's results
            and ``run_dir`` under its own settings, with ``same_run_as`` naming the run.

    Returns:
        The list of result rows (settings merged with results, plus ``run_dir``), in the
        order of `rows`.

    Raises:
        ValueError: for rows without unique, folder-safe run ids, or, before anything runs,
            for a started or finished row whose stored settings differ from the requested ones
            (`check_settings`; use a new `out_dir`, or replace the folder).
    """
    check_settings(rows, out_dir)
    same_run_as = dict(same_run_as or {})
    position = {row["run_id"]: i for i, row in enumerate(rows)}
    for run_id, earlier in same_run_as.items():
        if not position.get(earlier, len(rows)) < position.get(run_id, -1):
            raise ValueError(f"same_run_as maps {run_id!r} to {earlier!r}, which is not an "
                             "earlier row of this sweep.")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    done = {}
    for row in rows:
        run_dir = out_dir / "runs" / str(row["run_id"])
        marker = run_dir / ROW_FILE
        skipped = marker.is_file()
        if skipped:
            result = io.read_json(marker)["result"]
        elif row["run_id"] in same_run_as:
            earlier = done[same_run_as[row["run_id"]]]
            result = io.to_jsonable({**earlier, **row, "run_dir": earlier["run_dir"],
                                     "same_run_as": earlier["run_id"]})
            io.write_json(marker, {"settings": row, "result": result})
        else:
            _stop_if_this_process_is_done()
            run_dir.mkdir(parents=True, exist_ok=True)
            io.write_json(out_dir / STARTED_DIR / f"{row['run_id']}.json", row)
            # How many rows this process ran before this one (0: a fresh process): a row's
            # peak RSS includes what earlier rows left in the process.
            conditions = {"load_1min_start": metadata.load_average(),
                          "rows_before_in_process": _new_rows_run - 1}
            start = time.perf_counter()
            produced = run_fn(dict(row), run_dir)
            conditions.update(wall_seconds=round(time.perf_counter() - start, 2),
                              load_1min_end=metadata.load_average(),
                              cpu_model=metadata.cpu_model(), cpu_isa=metadata.cpu_isa())
            if not isinstance(produced, dict):
                raise ValueError(
                    f"run_fn must return a dict of results, got {type(produced).__name__} for "
                    f"run {row['run_id']!r}."
                )
            result = io.to_jsonable({**row, **produced, **conditions,
                                     "run_dir": f"runs/{row['run_id']}"})
            io.write_json(marker, {"settings": row, "result": result})
        results.append(result)
        done[row["run_id"]] = result
        _write_table(out_dir, results, columns)
        if on_row_done is not None:
            on_row_done(result, skipped)
    return results


def _stop_if_this_process_is_done():
    """In a child of `run_in_fresh_processes`: exit `ROWS_REMAIN_EXIT` before a new row once
    this process has run its share; otherwise count the row about to run."""
    global _new_rows_run
    limit = int(os.environ.get(ROWS_PER_PROCESS_ENV) or 0)
    if limit and _new_rows_run >= limit:
        raise SystemExit(ROWS_REMAIN_EXIT)
    _new_rows_run += 1


def run_in_fresh_processes(module, args, rows_per_process=1):
    """Runs ``python -m <module> <args>`` again and again, each child running at most
    `rows_per_process` new rows of its sweep(s) before it exits, until one finishes them all.

    Each row then starts from a fresh process: its peak memory and latency do not depend on
    what ran before it (TensorFlow's allocator keeps what earlier rows freed, so in one long
    process a row's peak RSS grows with its position in the sweep), and a row that leaks cannot
    slow the next. The child that runs the last unfinished row goes on to write the summaries.

    Returns:
        The exit status of the last child: 0 when the sweep finished, else the failing child's.
    """
    env = {**os.environ, ROWS_PER_PROCESS_ENV: str(int(rows_per_process))}
    while True:
        status = subprocess.call([sys.executable, "-m", module, *args], env=env)
        if status != ROWS_REMAIN_EXIT:
            return status


def in_fresh_process_child():
    """True in a child of `run_in_fresh_processes`."""
    return bool(os.environ.get(ROWS_PER_PROCESS_ENV))


def _write_table(out_dir, results, columns):
    ordered = list(columns or [])
    for result in results:
        ordered.extend(k for k in result if k not in ordered)
    io.write_csv(out_dir / "results.csv", results, columns=ordered)
    io.write_json(out_dir / "results.json", {"rows": results})


def as_float(value):
    """A CSV cell or JSON value as float; empty/None/non-numeric -> NaN."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
