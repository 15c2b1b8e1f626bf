"""The deployment's certificate authority and its host certificates (``bdf-certs``).

One CA per deployment, created once on the control node and never replaced: every host
certificate and every client's trust hangs on it. Host certificates are reissued only
when they must be (missing, other names, close to expiry, another CA, or asked), so a
second deploy changes nothing and Ansible's ``changed`` tells the truth.

Layout of a directory: ``ca.key``/``ca.crt``, and ``hosts/<name>.key``/``.crt``. Keys are
PKCS#8 PEM (what Java's PEM key stores read), mode 0600. Java clients that read no PEM (the
Spark Cassandra Connector) get the CA in a PKCS12 trust store (``ensure_truststore``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
HOST_DAYS = 365
RENEW_WITHIN_DAYS = 30
# Issued a little in the past: a host whose clock lags the control node's still accepts it.
BACKDATE = dt.timedelta(minutes=5)
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


class CertError(Exception):
    """A problem the operator must resolve; the message names the file and what to do."""


@dataclass(frozen=True)
class Outcome:
    """What ``ensure_ca``/``ensure_host`` did: ``changed`` is what Ansible reports."""

    changed: bool
    reason: str
    cert: str
    key: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Pair:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def ca_files(directory: Path) -> tuple[Path, Path]:
    return directory / "ca.key", directory / "ca.crt"


def host_files(directory: Path, name: str) -> tuple[Path, Path]:
    if not _HOST_NAME.fullmatch(name):
        raise CertError(f"host name {name!r}: letters, digits, '.', '_' and '-' only")
    return directory / "hosts" / f"{name}.key", directory / "hosts" / f"{name}.crt"


def ensure_ca(directory: Path, deployment: str, *, now: dt.datetime | None = None) -> Outcome:
    """Create the deployment CA in ``directory`` unless it exists; an existing one is only checked."""
    key_file, cert_file = ca_files(directory)
    if key_file.exists() or cert_file.exists():
        _load_ca(directory)
        return Outcome(False, "the CA exists (never replaced)", str(cert_file), str(key_file))
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "BigDataFlow"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"BigDataFlow {deployment} CA"),
        ]
    )
    cert = (
        _builder(name, name, key.public_key(), now, now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The key first: a crash in between leaves a key without a certificate, which the
    # next run refuses rather than silently pairing with a new one.
    _write(key_file, _key_pem(key), 0o600)
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Outcome(True, "created the CA", str(cert_file), str(key_file))


def ensure_host(
    directory: Path,
    name: str,
    dns: Sequence[str],
    ips: Sequence[str],
    *,
    days: int = HOST_DAYS,
    renew_within_days: int = RENEW_WITHIN_DAYS,
    renew: bool = False,
    now: dt.datetime | None = None,
) -> Outcome:
    """Issue ``hosts/<name>.{key,crt}`` signed by the CA in ``directory`` unless the current pair fits."""
    ca = _load_ca(directory)
    key_file, cert_file = host_files(directory, name)
    wanted = _sans(dns, ips)
    now = now or _now()
    reason = (
        "asked to renew"
        if renew
        else _reissue_reason(ca, key_file, cert_file, wanted, now, renew_within_days)
    )
    if reason is None:
        return Outcome(False, "valid, same names", str(cert_file), str(key_file))
    key = ec.generate_private_key(ec.SECP256R1())
    # Never valid beyond the CA: clients would refuse the chain from that day on.
    not_after = min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc)
    cert = (
        _builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
            ca.cert.subject,
            key.public_key(),
            now,
            not_after,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(wanted), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    key_file.parent.mkdir(mode=0o700, exist_ok=True)
    _write(key_file, _key_pem(key), 0o600)
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Outcome(True, reason, str(cert_file), str(key_file))


def ensure_truststore(ca_file: Path, store: Path, password_file: Path) -> Outcome:
    """A PKCS12 trust store holding the CA of ``ca_file`` alone, sealed with the password in
    ``password_file`` (mode 0600; the password never goes on a command line).

    Kept while it opens with that password and holds exactly that CA, so a second deploy
    copies the same bytes to every host; rewritten otherwise (it holds nothing secret).
    """
    password = _password(password_file)
    try:
        ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise CertError(f"{ca_file}: not a readable PEM certificate ({exc})") from None
    reason = "new" if not store.exists() else _truststore_mismatch(store, password, ca)
    if reason is None:
        return Outcome(False, "holds the CA", str(store), str(password_file))
    data = pkcs12.serialize_java_truststore(
        [pkcs12.PKCS12Certificate(ca, b"bigdataflow-ca")],
        serialization.BestAvailableEncryption(password),
    )
    store.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(store, data, 0o644)
    return Outcome(True, reason, str(store), str(password_file))


def _password(password_file: Path) -> bytes:
    try:
        mode = password_file.stat().st_mode & 0o777
        password = password_file.read_bytes().strip()
    except OSError as exc:
        raise CertError(f"{password_file}: cannot be read ({exc.strerror})") from None
    if mode & 0o077:
        raise CertError(
            f"{password_file} has mode {mode:04o}; a password file must be 0600 (chmod 600 {password_file})"
        )
    if not password:
        raise CertError(f"{password_file} is empty")
    return password


def _truststore_mismatch(store: Path, password: bytes, ca: x509.Certificate) -> str | None:
    try:
        loaded = pkcs12.load_pkcs12(store.read_bytes(), password)
    except (OSError, ValueError):
        return "does not open with the password"
    if loaded.key is not None or [entry.certificate for entry in loaded.additional_certs] != [ca]:
        return "holds another certificate than the CA"
    return None


def describe(cert_file: Path, *, now: dt.datetime | None = None) -> list[dict]:
    """Subject, names, issuer and expiry of every certificate in a PEM file."""
    try:
        data = cert_file.read_bytes()
    except OSError as exc:
        raise CertError(f"{cert_file}: cannot be read ({exc.strerror})") from None
    return describe_pem(data, str(cert_file), now=now)


def describe_pem(data: bytes, label: str, *, now: dt.datetime | None = None) -> list[dict]:
    """``describe`` for PEM bytes (e.g. read from a host by Ansible); ``label`` names them."""
    now = now or _now()
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertError(f"{label}: not a readable PEM certificate ({exc})") from None
    out = []
    for cert in certs:
        sans = _cert_sans(cert)
        not_after = cert.not_valid_after_utc
        out.append(
            {
                "file": label,
                "subject": cert.subject.rfc4514_string(),
                "issuer": cert.issuer.rfc4514_string(),
                "dns": sorted(s.value for s in sans if isinstance(s, x509.DNSName)),
                "ip": sorted(str(s.value) for s in sans if isinstance(s, x509.IPAddress)),
                "not_after": not_after.isoformat(),
                # Whole days still valid: 0 on the last day, negative once expired.
                "days_left": (not_after - now).days,
                "ca": _is_ca(cert),
            }
        )
    return out


def _reissue_reason(
    ca: _Pair, key_file: Path, cert_file: Path, wanted: list[x509.GeneralName], now: dt.datetime, window: int
) -> str | None:
    if not cert_file.exists() and not key_file.exists():
        return "new"
    host = _load_pair(key_file, cert_file, what="host certificate")
    try:
        host.cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return "issued by another CA"
    if set(_cert_sans(host.cert)) != set(wanted):
        return "names or addresses changed"
    if host.cert.not_valid_after_utc - now <= dt.timedelta(days=window):
        return f"expires within {window} days"
    return None


def _load_ca(directory: Path) -> _Pair:
    key_file, cert_file = ca_files(directory)
    ca = _load_pair(key_file, cert_file, what="CA")
    if not _is_ca(ca.cert):
        raise CertError(f"{cert_file} is not a CA certificate; restore the deployment's CA into {directory}")
    return ca


def _load_pair(key_file: Path, cert_file: Path, *, what: str) -> _Pair:
    present = [f for f in (key_file, cert_file) if f.exists()]
    if not present:
        raise CertError(
            f"no {what} at {cert_file}" + (": create it first (bdf-certs ca)" if what == "CA" else "")
        )
    if len(present) == 1:
        [missing] = {key_file, cert_file} - set(present)
        hint = (
            "the CA is never regenerated over half of it: restore the missing file from the operator "
            "who deployed (the CA key exists only on the control node; `make fetch-secrets` cannot "
            "bring it back)"
            if what == "CA"
            else "delete the other file too, or use --renew, to issue a new pair"
        )
        raise CertError(f"{what}: {missing} is missing beside {present[0]}; {hint}")
    mode = key_file.stat().st_mode & 0o777
    if mode & 0o077:
        raise CertError(f"{key_file} has mode {mode:04o}; a private key must be 0600 (chmod 600 {key_file})")
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise CertError(f"{what} {key_file} / {cert_file}: cannot be read as PEM ({exc})") from None
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise CertError(
            f"{key_file} does not match {cert_file} (another key pair): nothing was changed; "
            + (
                "find the CA key that signed this certificate"
                if what == "CA"
                else "use --renew to issue a new pair"
            )
        )
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_file}: expected an EC key")
    return _Pair(key, cert)


def _builder(subject, issuer, public_key, now, not_after) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)  # positive, 127 bits
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _sans(dns: Iterable[str], ips: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for value in dict.fromkeys(d.lower().rstrip(".") for d in dns if d):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            names.append(x509.DNSName(value))
        else:
            raise CertError(f"--dns {value}: an address; pass it with --ip")
    for value in dict.fromkeys(i for i in ips if i):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            raise CertError(f"--ip {value}: not an IPv4 or IPv6 address") from None
    if not names:
        raise CertError("a host certificate needs at least one --dns or --ip")
    return names


def _cert_sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _public_der(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically, created with its final mode (a key is never readable by others, not even briefly)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed the public file's mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
