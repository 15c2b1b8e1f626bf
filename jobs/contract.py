"""The input contract of a profile message: what the stream job accepts, field by field.

One declaration serves three readers: the JVM validator that the job runs on every
message (``jvm/``, given ``contract_json()``), the dead-letter reasons it writes, and the
GDPR register and README (``gdpr/render.py`` renders ``CONTRACT``). A message that
breaks any rule is dead-lettered with ``dlq.reason`` naming the field and the rule.

Rules are about JSON as sent, not as Spark's reader would coerce it: a number, object or
array where text is expected is a wrong type; text is valid UTF-8 without control
characters and has a bounded length (in characters); patterns must match the whole
value; JSON ``null`` and empty text are the same as an absent field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# The nationalities randomuser.me API 1.4 serves (also the offline source's).
NATIONALITIES: tuple[str, ...] = (
    "AU", "BR", "CA", "CH", "DE", "DK", "ES", "FI", "FR", "GB", "IE",
    "IN", "IR", "MX", "NL", "NO", "NZ", "RS", "TR", "UA", "US",
)  # fmt: skip
GENDERS: tuple[str, ...] = ("female", "male")
UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# No ASCII-only rule: names and places carry Finnish, Persian, Cyrillic, Devanagari ...
# Spaces around it are trimmed before the pseudonym and the domain are derived.
EMAIL_PATTERN = r" *[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+ *"
PHONE_PATTERN = r"[0-9+()./x -]{3,32}"
# Dates: birth after this day, registration not before the birth; neither in the future
# beyond a clock skew.
EARLIEST_BIRTH = "1900-01-01T00:00:00Z"
CLOCK_SKEW_SECONDS = 86_400


@dataclass(frozen=True)
class Rule:
    """One field of the message (a dotted path) and what its value must be.

    ``kind``: ``text`` (a JSON string), ``integer`` (a JSON integer), ``text_or_integer``
    (postcodes: either), ``timestamp`` (an ISO-8601 string with a UTC offset, parsed
    strictly). ``not_before`` of a timestamp is an instant or another field's path.
    """

    field: str
    kind: str
    required: bool = False
    max_length: int | None = None
    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None
    not_before: str | None = None

    def describe(self) -> str:
        """The rule in words, as the register prints it."""
        words = [{"text_or_integer": "text or integer"}.get(self.kind, self.kind)]
        words.append("required" if self.required else "optional")
        if self.choices:
            words.append("one of " + ", ".join(self.choices))
        if self.pattern:
            words.append(f"matches `{self.pattern}`")
        if self.max_length:
            words.append(f"at most {self.max_length} characters")
        if self.minimum is not None:
            words.append(f"from {self.minimum} to {self.maximum}")
        if self.kind == "timestamp":
            words.append(f"not before {self.not_before}, not in the future")
        return "; ".join(words)


def _text(field: str, max_length: int, **rule) -> Rule:
    return Rule(field, "text", max_length=max_length, **rule)


_NAME = 100
_PLACE = 200
_SECRET = 512
_URL = 2048

CONTRACT: tuple[Rule, ...] = (
    _text("gender", 16, choices=GENDERS),
    _text("name.title", 32),
    _text("name.first", _NAME),
    _text("name.last", _NAME),
    Rule("location.street.number", "integer", minimum=0, maximum=10**9),
    _text("location.street.name", _PLACE),
    _text("location.city", _PLACE),
    _text("location.state", _PLACE),
    _text("location.country", _PLACE),
    Rule("location.postcode", "text_or_integer", max_length=16),
    _text("location.coordinates.latitude", 32),
    _text("location.coordinates.longitude", 32),
    _text("location.timezone.offset", 8),
    _text("location.timezone.description", _PLACE),
    _text("email", 254, pattern=EMAIL_PATTERN),
    _text("login.uuid", 36, required=True, pattern=UUID_PATTERN),
    _text("login.username", _NAME),
    *(_text(f"login.{secret}", _SECRET) for secret in ("password", "salt", "md5", "sha1", "sha256")),
    Rule("dob.date", "timestamp", required=True, not_before=EARLIEST_BIRTH),
    Rule("dob.age", "integer", minimum=0, maximum=150),
    Rule("registered.date", "timestamp", required=True, not_before="dob.date"),
    Rule("registered.age", "integer", minimum=0, maximum=150),
    _text("phone", 32, pattern=PHONE_PATTERN),
    _text("cell", 32, pattern=PHONE_PATTERN),
    _text("id.name", 32),
    _text("id.value", 64),
    *(_text(f"picture.{size}", _URL) for size in ("large", "medium", "thumbnail")),
    _text("nat", 2, required=True, choices=NATIONALITIES),
)


def contract_json() -> str:
    """The contract as the JVM validator reads it."""
    rules = [{key: value for key, value in asdict(rule).items() if value is not None} for rule in CONTRACT]
    return json.dumps({"clock_skew_seconds": CLOCK_SKEW_SECONDS, "rules": rules}, sort_keys=True)


# The SQL function the job calls on every message's bytes (built by jvm/build.py).
CONTRACT_UDF = "bdf_contract_violations"
CONTRACT_CLASS = "org.bigdataflow.contract.ProfileContract"


class ContractJarError(RuntimeError):
    """The validator jar is missing from the JVM, or was built from another contract."""


def register_contract(spark) -> None:
    """Make ``CONTRACT_UDF`` callable in ``spark``; fail when the jar's contract is not this one.

    Checked on the driver at start, so a stale jar stops the job before it reads a message
    (it would otherwise judge messages by rules the register does not describe).
    """
    try:
        embedded = spark.sparkContext._jvm.org.bigdataflow.contract.ProfileContract.digest()
    except Exception as error:  # py4j reports a missing class as a generic error
        raise ContractJarError(
            f"{CONTRACT_CLASS} is not on the JVM's class path: build it with `make jvm` "
            "(or `make artifacts`) and pass the jar with --jars / spark.jars"
        ) from error
    expected = hashlib.sha256(contract_json().encode()).hexdigest()
    if embedded != expected:
        raise ContractJarError(
            "the contract validator jar was built from another jobs/contract.py: rebuild it (make jvm)"
        )
    spark.udf.registerJavaFunction(CONTRACT_UDF, CONTRACT_CLASS, "string")
