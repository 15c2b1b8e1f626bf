"""Spark schemas: the full randomuser.me v1.4 record as it arrives, and the stored row.

The input schema lists every field of the record, secrets included, so that each
one has a deliberate treatment (see ``jobs.transform.FIELD_TREATMENT`` and the GDPR
register). Numbers that the API sometimes sends as strings (postcode) are strings.
"""

from collections.abc import Iterator

from pyspark.sql import types as T

CORRUPT_RECORD_COLUMN = "_corrupt_record"


def schema_leaves(struct: T.StructType, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the leaves of a (nested) StructType."""
    for item in struct.fields:
        path = f"{prefix}{item.name}"
        if isinstance(item.dataType, T.StructType):
            yield from schema_leaves(item.dataType, path + ".")
        else:
            yield path


def _struct(**fields: T.DataType) -> T.StructType:
    return T.StructType([T.StructField(name, dtype) for name, dtype in fields.items()])


_STRING = T.StringType()
_DATED = _struct(date=_STRING, age=T.IntegerType())

PROFILE_SCHEMA = _struct(
    gender=_STRING,
    name=_struct(title=_STRING, first=_STRING, last=_STRING),
    location=_struct(
        street=_struct(number=T.LongType(), name=_STRING),
        city=_STRING,
        state=_STRING,
        country=_STRING,
        postcode=_STRING,
        coordinates=_struct(latitude=_STRING, longitude=_STRING),
        timezone=_struct(offset=_STRING, description=_STRING),
    ),
    email=_STRING,
    login=_struct(
        uuid=_STRING,
        username=_STRING,
        password=_STRING,
        salt=_STRING,
        md5=_STRING,
        sha1=_STRING,
        sha256=_STRING,
    ),
    dob=_DATED,
    registered=_DATED,
    phone=_STRING,
    cell=_STRING,
    id=_struct(name=_STRING, value=_STRING),
    picture=_struct(large=_STRING, medium=_STRING, thumbnail=_STRING),
    nat=_STRING,
)

# from_json fills this column with the raw text when the JSON is broken or a value
# has the wrong type, which is how such messages are told apart from valid ones.
PARSE_SCHEMA = T.StructType([*PROFILE_SCHEMA.fields, T.StructField(CORRUPT_RECORD_COLUMN, _STRING)])

_INT = T.IntegerType()
_BINARY = T.BinaryType()

# One row per login.uuid in Cassandra (see roles/cassandra/files/schema.cql).
STORED_SCHEMA = _struct(
    user_id=_STRING,
    nationality=_STRING,
    gender=_STRING,
    country=_STRING,
    full_name_enc=_BINARY,
    address_enc=_BINARY,
    email_enc=_BINARY,
    phone_enc=_BINARY,
    cell_enc=_BINARY,
    email_pseudonym=_STRING,
    email_domain=_STRING,
    birth_date=T.DateType(),
    birth_year=_INT,
    birth_month=_INT,
    birth_day=_INT,
    registered_at=T.TimestampType(),
    registered_year=_INT,
    registered_month=_INT,
    registered_day=_INT,
    key_id=_INT,
    produced_at=T.TimestampType(),
    stored_at=T.TimestampType(),
)
