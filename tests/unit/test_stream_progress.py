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
