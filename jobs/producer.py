"""Producer: randomuser.me API 1.4 -> Kafka, one encrypted JSON profile per message keyed by login.uuid.

Pulls batches (``results=batch_size``; ``seed`` + ``page`` when a seed is configured),
retries transient failures with exponential backoff and jitter, keeps under
``max_requests_per_second`` (retries included) and publishes each user without the
account secrets (``login.password``, ``salt`` and hashes), so they are never at rest in
Kafka; everything else is published as the API gave it, sealed under the deployment's
active message key (``jobs.message_crypto``), so Kafka holds no readable personal data.
A batch is published whole or not at all: a short, truncated or unparsable answer is
fetched again, never half-used. Logs carry counts only, never profile contents.

Exit codes: 0 done, 1 deliveries failed or the API gave up, 2 configuration error.
"""

from __future__ import annotations

import email.utils
import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import click
import confluent_kafka
import orjson
import requests

from bdf import clients
from bdf.config import (
    ConfigError,
    Credentials,
    KafkaSettings,
    ProducerSettings,
    load_credentials,
    load_settings,
)
from bdf.logs import setup_logging
from jobs.cli_options import config_option, verbose_option
from jobs.message_crypto import MessageKeys, load_message_keys

log = logging.getLogger("bdf.producer")

USER_AGENT = "bigdataflow-producer/0.1"
RETRY_AFTER_CAP_SECONDS = 900.0  # honour Retry-After, but not an absurd one
_TRANSIENT = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,  # body cut short: the batch is fetched again
    requests.exceptions.ContentDecodingError,
)


class FetchError(Exception):
    """The API refused the request, or did not answer within the retry budget."""


class Stopped(Exception):
    """A stop signal arrived while waiting to (re)send a request."""


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RateLimiter:
    """Spaces request starts at least ``1 / per_second`` apart; waiting ends early on stop."""

    def __init__(
        self, per_second: float, stop: threading.Event, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = 1.0 / per_second
        self._stop = stop
        self._clock = clock
        self._next = float("-inf")

    def wait(self) -> None:
        delay = self._next - self._clock()
        if delay > 0 and self._stop.wait(delay):
            raise Stopped
        self._next = max(self._clock(), self._next) + self.interval


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_SECONDS)


class RandomUserClient:
    """Fetches whole batches from ``<api_url><api_version>/``, retrying what may succeed later."""

    def __init__(
        self,
        settings: ProducerSettings,
        stop: threading.Event | None = None,
        session: requests.Session | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
    ) -> None:
        self.settings = settings
        self.url = f"{settings.api_url.rstrip('/')}/{settings.api_version}/"
        self._stop = stop or threading.Event()
        self._limiter = RateLimiter(settings.max_requests_per_second, self._stop)
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._jitter = random.Random()  # noqa: S311 - jitter, not security

    def fetch(self, size: int, page: int = 1) -> list[Any]:
        """Exactly ``size`` users, or FetchError / Stopped. ``page`` is used with a seed only."""
        params: dict[str, Any] = {"results": size}
        if self.settings.nationalities:
            params["nat"] = ",".join(self.settings.nationalities)
        if self.settings.seed is not None:
            params.update(seed=self.settings.seed, page=page)
        attempts = self.settings.max_retries + 1
        for attempt in range(1, attempts + 1):
            self._limiter.wait()
            try:
                return self._get(params, size)
            except _Transient as exc:
                if attempt == attempts:
                    raise FetchError(f"giving up after {attempts} attempts; last: {exc}") from None
                delay = self._backoff(attempt, exc.retry_after)
                log.warning("request failed (%s); retry %d/%d in %.2fs", exc, attempt, attempts - 1, delay)
                if self._stop.wait(delay):
                    raise Stopped from None
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        delay = self._jitter.uniform(ceiling / 2, ceiling)  # jitter spreads out synchronized clients
        return max(delay, retry_after or 0.0)

    def _get(self, params: dict[str, Any], size: int) -> list[Any]:
        try:
            response = self._session.get(
                self.url, params=params, timeout=self.settings.request_timeout_seconds
            )
            body = response.content  # reads the whole body: a cut-short one raises here
        except _TRANSIENT as exc:
            raise _Transient(type(exc).__name__) from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}", parse_retry_after(response.headers.get("Retry-After")))
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        if status != 200:  # other 4xx: the request itself is wrong, retrying cannot help
            raise FetchError(f"API refused the request (HTTP {status}): {str(error or '')[:200]}")
        if data is None:
            raise _Transient("answer is not JSON")
        if error is not None:  # the real API answers 200 {"error": ...} when overloaded
            raise _Transient(f"API error: {str(error)[:200]}")
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list) or len(results) != size:
            got = len(results) if isinstance(results, list) else "no"
            raise _Transient(f"expected {size} users, got {got}")
        info = data.get("info")
        version = info.get("version") if isinstance(info, dict) else None
        if version is not None and version != self.settings.api_version:
            raise FetchError(f"API answered version {version}, producer parses {self.settings.api_version}")
        return results


class Publisher(Protocol):
    """Where profiles go; ``sent``/``failed`` count confirmed deliveries once flushed."""

    sent: int
    failed: int

    def publish(self, key: str | None, value: bytes) -> None: ...

    def flush(self) -> None: ...


def kafka_config(kafka: KafkaSettings, credentials: Credentials) -> dict[str, Any]:
    """The producer's librdkafka settings: the client's, idempotent, acks=all."""
    return clients.kafka_config(kafka, credentials) | {
        "client.id": "bdf-producer",
        "acks": "all",
        "enable.idempotence": True,  # retries inside librdkafka never duplicate or reorder
        "compression.type": "zstd",  # repetitive JSON: zstd compresses it better than lz4
        "linger.ms": 50,  # fill batches; latency is not critical here
    }


class KafkaPublisher:
    """confluent_kafka.Producer behind the Publisher interface; counts delivery reports."""

    def __init__(self, config: dict[str, Any], topic: str, flush_timeout: float = 60.0) -> None:
        self.topic = topic
        self.flush_timeout = flush_timeout
        self.sent = 0
        self.failed = 0
        self._producer = confluent_kafka.Producer(config, logger=logging.getLogger("bdf.producer.kafka"))

    def _delivered(self, err: confluent_kafka.KafkaError | None, msg: confluent_kafka.Message) -> None:
        if err is None:
            self.sent += 1
            return
        self.failed += 1
        if self.failed <= 10 or self.failed % 1000 == 0:  # the error only: never the message
            log.error("delivery failed (%d so far): %s", self.failed, err)

    def publish(self, key: str | None, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: serve delivery reports, then try again
                self._producer.poll(0.5)
            except confluent_kafka.KafkaException as exc:
                self.failed += 1
                log.error("message rejected by the client: %s", exc.args[0])
                break
        self._producer.poll(0)

    def flush(self) -> None:
        remaining = self._producer.flush(self.flush_timeout)
        if remaining:
            self.failed += remaining
            log.error("%d messages undelivered after %.0fs", remaining, self.flush_timeout)


class SealingPublisher:
    """Seals every value for ``topic`` before ``publisher`` sends it: the only way the
    producer publishes."""

    def __init__(self, publisher: Publisher, keys: MessageKeys, topic: str) -> None:
        self._publisher = publisher
        self._keys = keys
        self._topic = topic

    @property
    def sent(self) -> int:
        return self._publisher.sent

    @property
    def failed(self) -> int:
        return self._publisher.failed

    def publish(self, key: str | None, value: bytes) -> None:
        self._publisher.publish(key, self._keys.seal(value, self._topic))

    def flush(self) -> None:
        self._publisher.flush()


def open_publisher(kafka: KafkaSettings) -> Publisher:
    """The Kafka publisher for these settings; ConfigError for unusable credentials or settings."""
    config = kafka_config(kafka, load_credentials(kafka.credentials_file))
    try:
        return KafkaPublisher(config, kafka.topic)
    except confluent_kafka.KafkaException as exc:
        raise ConfigError(f"[kafka] settings rejected by the Kafka client: {exc.args[0].str()}") from None


# The source's account secrets: no purpose here, so they never leave the producer.
SECRET_LOGIN_FIELDS = ("password", "salt", "md5", "sha1", "sha256")


def without_secrets(user: Any) -> Any:
    """The user as published: ``login`` without SECRET_LOGIN_FIELDS (anything else as given)."""
    if not isinstance(user, dict) or not isinstance(user.get("login"), dict):
        return user
    login = {name: value for name, value in user["login"].items() if name not in SECRET_LOGIN_FIELDS}
    return {**user, "login": login}


def message_key(user: Any) -> str | None:
    """``login.uuid`` when there is one; None otherwise (the stream job dead-letters it)."""
    login = user.get("login") if isinstance(user, dict) else None
    uuid = login.get("uuid") if isinstance(login, dict) else None
    return uuid if isinstance(uuid, str) and uuid else None


class Progress:
    """A progress bar on a terminal with a known total, else a log line every ``interval`` s."""

    def __init__(self, total: int, interval: float) -> None:
        self.total = total
        self.interval = interval
        self.done = 0
        self._started = self._last = time.monotonic()
        self._bar = None
        if total and sys.stderr.isatty():
            self._bar = click.progressbar(length=total, label="profiles", file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            rate = self.done / max(now - self._started, 1e-9)
            fields = {"published": self.done, "total": self.total, "per_second": round(rate)}
            log.info(
                "published %d/%s profiles (%.0f/s)",
                self.done,
                self.total or "∞",
                rate,
                extra={"fields": fields},
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.render_finish()


class Source(Protocol):
    """Where batches come from (RandomUserClient; a stub in tests)."""

    def fetch(self, size: int, page: int = 1) -> list[Any]: ...


def produce(
    source: Source,
    publisher: Publisher,
    count: int,
    batch_size: int,
    stop: threading.Event,
    progress: Progress | None = None,
) -> int:
    """Publish ``count`` profiles (0: until ``stop``); returns how many were handed over.

    A fetched batch is always published in full, even if ``stop`` is set meanwhile.
    """
    published, page = 0, 1
    while not stop.is_set() and (count == 0 or published < count):
        size = batch_size if count == 0 else min(batch_size, count - published)
        try:
            users = source.fetch(size, page)
        except Stopped:
            break
        for user in users:
            publisher.publish(message_key(user), orjson.dumps(without_secrets(user)))
        published += len(users)
        page += 1
        if progress:
            progress.update(len(users))
    return published


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """SIGTERM (systemd) and SIGINT set ``stop``; the previous handlers come back afterwards."""

    def handler(signum: int, frame: object) -> None:
        log.info("%s received: finishing the current batch", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.option(
    "--count",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Profiles to publish; 0 = until stopped (SIGTERM/Ctrl-C).",
)
@click.option(
    "--progress-interval",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds between progress log lines (when not on a terminal).",
)
@verbose_option
def main(config_path: Path | None, count: int, progress_interval: float, verbose: bool) -> None:
    """Pull user profiles from the randomuser API and publish them to Kafka."""
    setup_logging(verbose)
    try:
        settings = load_settings(config_path)
        settings.require("kafka", "keys")
        keys = load_message_keys(settings.keys.key_file)
        publisher = SealingPublisher(open_publisher(settings.kafka), keys, settings.kafka.topic)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)
    stop = threading.Event()
    client = RandomUserClient(settings.producer, stop)
    progress = Progress(count, progress_interval)
    log.info("fetching from %s into topic %s", client.url, settings.kafka.topic)
    ok = True
    with stop_on_signals(stop):
        try:
            published = produce(client, publisher, count, settings.producer.batch_size, stop, progress)
        except FetchError as exc:
            log.error("stopping: %s", exc)
            published, ok = progress.done, False
        finally:
            progress.close()
            publisher.flush()
    counts = {"published": published, "sent": publisher.sent, "failed": publisher.failed}
    log.info("done: published=%d sent=%d failed=%d", *counts.values(), extra={"fields": counts})
    if publisher.failed or not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
