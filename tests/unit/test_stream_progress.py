"""The stream job's progress log: one line per micro-batch, what operators read first."""

from __future__ import annotations

import pytest

from jobs.stream import ProgressLog
from tests.polling import eventually


@pytest.mark.spark
def test_every_micro_batch_logs_its_rows_and_durations(spark, tmp_path, caplog):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part-1.txt").write_text("a\nb\nc\n")
    listener = ProgressLog()
    spark.streams.addListener(listener)
    caplog.set_level("INFO", logger="bigdataflow.stream")
    try:
        query = (
            spark.readStream.text(str(tmp_path / "in"))
            .writeStream.queryName("progress-test")
            .format("noop")
            .option("checkpointLocation", str(tmp_path / "checkpoint"))
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()

        def logged():  # listener events arrive asynchronously
            return [r for r in caplog.records if getattr(r, "fields", {}).get("query") == "progress-test"]

        (record, *_) = eventually(logged, 30, "the progress line", interval=0.5)
    finally:
        spark.streams.removeListener(listener)
    assert record.getMessage() == "micro-batch progress"
    assert record.fields["rows"] == 3 and record.fields["batch_id"] == 0
    assert "triggerExecution" in record.fields["duration_ms"]


@pytest.mark.spark
def test_the_watchdog_sees_the_tasks_of_a_running_job_and_none_after(spark, tmp_path):
    import threading
    import time

    from jobs.stream import spark_tasks_running

    release = tmp_path / "release"  # the tasks run until it exists (a file: tasks are pickled)

    def wait_for_release(rows, release=str(release)):
        import os
        import time

        deadline = time.monotonic() + 60
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.1)
        return rows

    job = threading.Thread(
        target=lambda: spark.sparkContext.parallelize(range(2), 2).mapPartitions(wait_for_release).count()
    )
    job.start()
    try:
        deadline = time.monotonic() + 60
        while not spark_tasks_running(spark) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert spark_tasks_running(spark)
    finally:
        release.touch()
        job.join()
    assert not spark_tasks_running(spark)
