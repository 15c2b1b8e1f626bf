"""bdf-certs: the deployment CA is created once and never replaced; host certificates are
reissued only when they must be, and a real TLS handshake accepts what they issue."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import ssl
import stat
import subprocess

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from bdf.certs import CertError, ca_files, describe, ensure_ca, ensure_host, ensure_truststore, host_files
from bdf.certs_cli import main


@pytest.fixture
def tls_dir(tmp_path):
    directory = tmp_path / "tls"
    ensure_ca(directory, "test")
    return directory


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _handshake(context_server: ssl.SSLContext, context_client: ssl.SSLContext, server_hostname: str) -> None:
    """A full TLS handshake in memory between the two contexts; raises ssl.SSLError on refusal."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = context_client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = context_server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def _server_context(tls_dir, name) -> ssl.SSLContext:
    key_file, cert_file = host_files(tls_dir, name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


def _client_context(ca_file) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    context.load_verify_locations(ca_file)
    return context


def test_ca_is_created_with_private_key_and_named_after_the_deployment(tmp_path):
    outcome = ensure_ca(tmp_path / "tls", "lab")
    key_file, cert_file = ca_files(tmp_path / "tls")
    assert outcome.changed
    assert _mode(key_file) == 0o600
    assert _mode(cert_file) == 0o644
    cert = _cert(cert_file)
    assert cert.subject.rfc4514_string() == "CN=BigDataFlow lab CA,O=BigDataFlow"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=3650) <= lifetime < dt.timedelta(days=3651)


def test_ca_is_never_replaced_by_a_second_run(tls_dir):
    key_file, cert_file = ca_files(tls_dir)
    before = key_file.read_bytes(), cert_file.read_bytes()
    outcome = ensure_ca(tls_dir, "another-name")
    assert not outcome.changed
    assert (key_file.read_bytes(), cert_file.read_bytes()) == before


def test_ca_certificate_without_its_key_is_refused_and_left_alone(tls_dir):
    key_file, cert_file = ca_files(tls_dir)
    key_file.unlink()
    cert_before = cert_file.read_bytes()
    with pytest.raises(
        CertError, match=r"ca\.key is missing beside .*ca\.crt.*never regenerated.*fetch-secrets` cannot"
    ):
        ensure_ca(tls_dir, "test")
    assert not key_file.exists()
    assert cert_file.read_bytes() == cert_before


def test_ca_key_of_another_ca_is_refused_with_both_file_names(tls_dir, tmp_path):
    ensure_ca(tmp_path / "other", "other")
    key_file, cert_file = ca_files(tls_dir)
    key_file.write_bytes(ca_files(tmp_path / "other")[0].read_bytes())
    with pytest.raises(CertError, match="does not match") as refused:
        ensure_ca(tls_dir, "test")
    assert str(key_file) in str(refused.value) and str(cert_file) in str(refused.value)


def test_ca_key_readable_by_others_is_refused(tls_dir):
    key_file, _ = ca_files(tls_dir)
    key_file.chmod(0o644)
    with pytest.raises(CertError, match=r"mode 0644.*0600"):
        ensure_host(tls_dir, "kafka1", ["kafka1"], ["10.77.0.11"])


def test_host_certificate_has_every_name_both_usages_and_a_private_key(tls_dir):
    outcome = ensure_host(tls_dir, "kafka1", ["kafka1", "kafka1.example.org"], ["10.77.0.11", "::1"])
    key_file, cert_file = host_files(tls_dir, "kafka1")
    assert outcome.changed and outcome.reason == "new"
    assert _mode(key_file) == 0o600
    cert = _cert(cert_file)
    cert.verify_directly_issued_by(_cert(ca_files(tls_dir)[1]))
    [entry] = describe(cert_file)
    assert entry["dns"] == ["kafka1", "kafka1.example.org"]
    assert entry["ip"] == ["10.77.0.11", "::1"]
    assert 363 <= entry["days_left"] <= 365
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_host_certificate_passes_a_real_tls_handshake_by_name_and_by_address(tls_dir):
    ensure_host(tls_dir, "kafka1", ["kafka1"], ["10.77.0.11"])
    client = _client_context(ca_files(tls_dir)[1])
    for server_hostname in ("kafka1", "10.77.0.11"):
        _handshake(_server_context(tls_dir, "kafka1"), client, server_hostname)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|IP address mismatch"):
        _handshake(_server_context(tls_dir, "kafka1"), client, "spark1")


def test_host_certificate_is_refused_by_a_client_trusting_another_ca(tls_dir, tmp_path):
    ensure_host(tls_dir, "kafka1", ["kafka1"], [])
    ensure_ca(tmp_path / "other", "other")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        _handshake(
            _server_context(tls_dir, "kafka1"), _client_context(ca_files(tmp_path / "other")[1]), "kafka1"
        )


def test_host_certificate_is_kept_when_nothing_changed_even_in_another_order(tls_dir):
    ensure_host(tls_dir, "kafka1", ["kafka1", "k1"], ["10.77.0.11"])
    key_file, cert_file = host_files(tls_dir, "kafka1")
    before = key_file.read_bytes(), cert_file.read_bytes()
    outcome = ensure_host(tls_dir, "kafka1", ["K1", "kafka1"], ["10.77.0.11"])
    assert not outcome.changed
    assert (key_file.read_bytes(), cert_file.read_bytes()) == before


@pytest.mark.parametrize(
    ("dns", "ips"),
    [(["kafka1"], ["10.77.0.12"]), (["kafka1", "kafka1.lab"], ["10.77.0.11"]), ([], ["10.77.0.11"])],
    ids=["address-changed", "name-added", "name-removed"],
)
def test_host_certificate_is_reissued_when_its_names_change(tls_dir, dns, ips):
    ensure_host(tls_dir, "kafka1", ["kafka1"], ["10.77.0.11"])
    outcome = ensure_host(tls_dir, "kafka1", dns, ips)
    assert outcome.changed and outcome.reason == "names or addresses changed"
    entry = describe(host_files(tls_dir, "kafka1")[1])[0]
    assert (entry["dns"], entry["ip"]) == (sorted(dns), sorted(ips))


def test_host_certificate_is_reissued_inside_the_renewal_window_only(tls_dir):
    issued = dt.datetime.now(dt.UTC)
    ensure_host(tls_dir, "kafka1", ["kafka1"], [], days=365, now=issued)
    days_31_left = issued + dt.timedelta(days=365 - 31)
    days_29_left = issued + dt.timedelta(days=365 - 29)
    assert not ensure_host(tls_dir, "kafka1", ["kafka1"], [], renew_within_days=30, now=days_31_left).changed
    outcome = ensure_host(tls_dir, "kafka1", ["kafka1"], [], renew_within_days=30, now=days_29_left)
    assert outcome.changed and outcome.reason == "expires within 30 days"
    entry = describe(host_files(tls_dir, "kafka1")[1], now=days_29_left)[0]
    assert 364 <= entry["days_left"] <= 365


def test_renewal_window_is_configurable(tls_dir):
    issued = dt.datetime.now(dt.UTC)
    ensure_host(tls_dir, "kafka1", ["kafka1"], [], days=365, now=issued)
    days_31_left = issued + dt.timedelta(days=365 - 31)
    outcome = ensure_host(tls_dir, "kafka1", ["kafka1"], [], renew_within_days=40, now=days_31_left)
    assert outcome.changed and outcome.reason == "expires within 40 days"


def test_renew_issues_a_new_key_and_certificate(tls_dir):
    ensure_host(tls_dir, "kafka1", ["kafka1"], [])
    key_file, cert_file = host_files(tls_dir, "kafka1")
    before = key_file.read_bytes(), _cert(cert_file).serial_number
    outcome = ensure_host(tls_dir, "kafka1", ["kafka1"], [], renew=True)
    assert outcome.changed and outcome.reason == "asked to renew"
    assert key_file.read_bytes() != before[0]
    assert _cert(cert_file).serial_number != before[1]


def test_host_certificate_of_another_ca_is_reissued_by_this_one(tls_dir, tmp_path):
    ensure_ca(tmp_path / "other", "other")
    ensure_host(tmp_path / "other", "kafka1", ["kafka1"], [])
    (tls_dir / "hosts").mkdir(mode=0o700)
    for source, dest in zip(
        host_files(tmp_path / "other", "kafka1"), host_files(tls_dir, "kafka1"), strict=True
    ):
        dest.write_bytes(source.read_bytes())
        dest.chmod(0o600)
    outcome = ensure_host(tls_dir, "kafka1", ["kafka1"], [])
    assert outcome.changed and outcome.reason == "issued by another CA"


def test_host_key_that_does_not_match_its_certificate_is_refused_unless_renewed(tls_dir):
    ensure_host(tls_dir, "kafka1", ["kafka1"], [])
    ensure_host(tls_dir, "spark1", ["spark1"], [])
    key_file, cert_file = host_files(tls_dir, "kafka1")
    key_file.write_bytes(host_files(tls_dir, "spark1")[0].read_bytes())
    cert_before = cert_file.read_bytes()
    with pytest.raises(CertError, match=r"does not match.*--renew"):
        ensure_host(tls_dir, "kafka1", ["kafka1"], [])
    assert cert_file.read_bytes() == cert_before
    assert ensure_host(tls_dir, "kafka1", ["kafka1"], [], renew=True).changed


def test_host_certificate_needs_the_ca_key(tmp_path):
    with pytest.raises(CertError, match=r"no CA at .*ca\.crt: create it first"):
        ensure_host(tmp_path / "tls", "kafka1", ["kafka1"], [])


@pytest.mark.parametrize(
    ("name", "dns", "ips", "message"),
    [
        ("../etc", ["a"], [], "host name"),
        ("kafka1", ["10.0.0.1"], [], "pass it with --ip"),
        ("kafka1", [], ["kafka1"], "not an IPv4 or IPv6 address"),
        ("kafka1", [], [], "at least one"),
    ],
)
def test_bad_host_arguments_are_refused(tls_dir, name, dns, ips, message):
    with pytest.raises(CertError, match=message):
        ensure_host(tls_dir, name, dns, ips)
    assert not (tls_dir / "hosts").exists()


def test_cli_reports_changed_then_unchanged_as_json_for_ansible(tmp_path):
    runner = CliRunner()
    directory = str(tmp_path / "tls")
    host_args = [
        "host",
        "--dir",
        directory,
        "--name",
        "kafka1",
        "--dns",
        "kafka1",
        "--ip",
        "10.77.0.11",
        "--json",
    ]
    runs = [
        runner.invoke(main, args)
        for args in (["ca", "--dir", directory, "--deployment", "lab", "--json"], host_args, host_args)
    ]
    assert [r.exit_code for r in runs] == [0, 0, 0], [r.output for r in runs]
    assert [json.loads(r.output)["changed"] for r in runs] == [True, True, False]
    shown = runner.invoke(
        main, ["show", "--json", str(tmp_path / "tls/ca.crt"), json.loads(runs[1].output)["cert"]]
    )
    ca_entry, host_entry = json.loads(shown.output)
    assert ca_entry["ca"] and not host_entry["ca"]
    assert host_entry["issuer"] == ca_entry["subject"] == "CN=BigDataFlow lab CA,O=BigDataFlow"
    assert host_entry["ip"] == ["10.77.0.11"]


def test_cli_refusal_is_one_clear_message_and_exit_1(tls_dir):
    ca_files(tls_dir)[0].unlink()
    result = CliRunner().invoke(main, ["ca", "--dir", str(tls_dir), "--deployment", "test"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: CA: ") and "Traceback" not in result.output


def test_cli_show_refuses_a_file_that_is_not_a_certificate(tmp_path):
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate")
    result = CliRunner().invoke(main, ["show", str(junk)])
    assert result.exit_code == 1 and "not a readable PEM certificate" in result.output


def test_cli_show_reads_a_certificate_from_stdin(tls_dir):
    result = CliRunner().invoke(main, ["show", "--json", "-"], input=ca_files(tls_dir)[1].read_bytes())
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)
    assert entry["file"] == "-" and entry["subject"] == "CN=BigDataFlow test CA,O=BigDataFlow"


@pytest.fixture
def store_password(tmp_path):
    path = tmp_path / "truststore-password"
    path.write_text("store-secret-" + "x" * 20 + "\n")
    path.chmod(0o600)
    return path


def test_truststore_holds_the_ca_alone_and_is_kept_while_it_does(tls_dir, store_password, tmp_path):
    store = tmp_path / "out" / "truststore.p12"
    first = ensure_truststore(ca_files(tls_dir)[1], store, store_password)
    assert first.changed and _mode(store) == 0o644
    loaded = pkcs12.load_pkcs12(store.read_bytes(), b"store-secret-" + b"x" * 20)
    assert loaded.key is None
    assert [entry.certificate for entry in loaded.additional_certs] == [_cert(ca_files(tls_dir)[1])]
    data = store.read_bytes()
    assert not ensure_truststore(ca_files(tls_dir)[1], store, store_password).changed
    assert store.read_bytes() == data, "rewritten although it held the CA: every deploy would copy it again"


def test_truststore_is_rewritten_for_another_ca_or_another_password(tls_dir, store_password, tmp_path):
    store = tmp_path / "truststore.p12"
    ensure_truststore(ca_files(tls_dir)[1], store, store_password)
    other = tmp_path / "other"
    ensure_ca(other, "other")
    assert ensure_truststore(ca_files(other)[1], store, store_password).reason == (
        "holds another certificate than the CA"
    )
    store_password.write_text("a-new-password\n")
    outcome = ensure_truststore(ca_files(other)[1], store, store_password)
    assert outcome.changed and outcome.reason == "does not open with the password"
    pkcs12.load_pkcs12(store.read_bytes(), b"a-new-password")


def test_truststore_password_file_readable_by_others_or_empty_is_refused(tls_dir, store_password, tmp_path):
    store_password.chmod(0o644)
    with pytest.raises(CertError, match=r"mode 0644; a password file must be 0600"):
        ensure_truststore(ca_files(tls_dir)[1], tmp_path / "t.p12", store_password)
    store_password.write_text("\n")
    store_password.chmod(0o600)
    with pytest.raises(CertError, match="is empty"):
        ensure_truststore(ca_files(tls_dir)[1], tmp_path / "t.p12", store_password)
    assert not (tmp_path / "t.p12").exists()


@pytest.mark.skipif(shutil.which("keytool") is None, reason="needs the JDK's keytool")
def test_java_reads_the_truststore_as_one_trusted_certificate(tls_dir, store_password, tmp_path):
    store = tmp_path / "truststore.p12"
    result = CliRunner().invoke(
        main,
        [
            *("truststore", "--ca", str(ca_files(tls_dir)[1]), "--out", str(store)),
            *("--password-file", str(store_password), "--json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["changed"] is True
    listed = subprocess.run(  # noqa: S603 - fixed argv; the password from its file, not argv
        [
            *("keytool", "-list", "-storetype", "PKCS12", "-keystore", str(store)),
            *("-storepass:file", str(store_password)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "contains 1 entry" in listed.stdout and "trustedCertEntry" in listed.stdout
