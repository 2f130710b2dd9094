"""A tiny sweep script for the --fresh_process_per_row tests (no model: rows record their pid)."""

import os

from absl import flags

from experiments import common, suite, sweep

common.define_common_flags()
suite.define_tier_flags()
flags.DEFINE_string("fail_on", "", "A run id whose row raises.")


def main(argv):
    del argv
    rows = [{"run_id": f"r{i}", "i": i} for i in range(3)]

    def run_one(row, run_dir):
        if row["run_id"] == flags.FLAGS.fail_on:
            raise RuntimeError(f"row {row['run_id']} failed")
        return {"pid": os.getpid()}

    results = sweep.run_sweep(rows, run_one, flags.FLAGS.output_dir)
    (common.pathlib.Path(flags.FLAGS.output_dir) / "summary.txt").write_text(
        f"{len(results)} rows, summarised by {os.getpid()}")


if __name__ == "__main__":
    common.run(main)
