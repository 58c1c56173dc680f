"""The local one-node Slurm (tools/slurm_local.sh) runs job arrays and reports a failed task."""

import os
import subprocess


def test_job_array_runs_every_task_and_reports_the_failed_one(slurm, tmp_path):
    """Three array tasks write their task id into the submit dir with the submitter's environment; task 3
    fails, and ``sbatch --wait`` exits with its code. ``sbatch --wait`` reports the highest exit code among
    the task records it still sees, and Slurm purges finished records after MinJobAge (4 s here): all
    tasks end within a second here, but an early failure in a long array can go unseen (exit 0), so the
    job backend checks each task's own result."""
    script = tmp_path / "task.sh"
    script.write_text("#!/bin/bash\n"
                      'echo "$SLURM_ARRAY_TASK_ID $SPK_TEST_VALUE" > "out.$SLURM_ARRAY_TASK_ID"\n'
                      'echo "task $SLURM_ARRAY_TASK_ID ran"\n'
                      'if [ "$SLURM_ARRAY_TASK_ID" = 3 ]; then echo "task 3 fails" >&2; exit 3; fi\n')
    (tmp_path / "log").mkdir()  # Slurm does not create the directory of -o; a task without it fails
    proc = subprocess.run(
        ["sbatch", "--parsable", "--wait", f"--partition={slurm.partition}", "--array=1-3",
         "--job-name=spk-test", "-o", "log/task.%a.log", str(script)],
        cwd=tmp_path, env={**os.environ, "SPK_TEST_VALUE": "from-the-submitter"},
        capture_output=True, text=True, timeout=120)

    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip().isdigit()  # --parsable: the array's job id
    for task in (1, 2, 3):
        assert (tmp_path / f"out.{task}").read_text() == f"{task} from-the-submitter\n"
    assert (tmp_path / "log/task.1.log").read_text() == "task 1 ran\n"
    assert (tmp_path / "log/task.3.log").read_text() == "task 3 ran\ntask 3 fails\n"  # -o alone: stderr too
