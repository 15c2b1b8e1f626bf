"""The dead-letter record's headers: written by the stream job (``jobs.transform``), read
by ``bdf-dlq``. The record itself is the original key and bytes of the message."""

HEADER_PREFIX = "dlq."
REASON_HEADER = "dlq.reason"
SOURCE_TOPIC_HEADER = "dlq.source.topic"
SOURCE_PARTITION_HEADER = "dlq.source.partition"
SOURCE_OFFSET_HEADER = "dlq.source.offset"
# The length of the original value: a dead letter keeps at most the job's size limit of it.
VALUE_BYTES_HEADER = "dlq.value.bytes"
