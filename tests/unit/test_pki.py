"""The cluster's certificates: who signed them, for which names and users, whether TLS takes them.

The handshake test runs Python's real TLS stack over memory buffers: server certificate checked
against the CA for 127.0.0.1, client certificate required and checked by the server.
"""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
import ssl
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import oid

from kvscale.localstack import pki

NOW = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
SERVICE_IP = "10.96.0.1"


@pytest.fixture(scope="module")
def bundle() -> pki.ClusterPKI:
    return pki.cluster_pki(cluster_name="unit", kubernetes_service_ip=SERVICE_IP, now=NOW)


def _cert(issued: pki.Issued) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.cert_pem)


def _extended_usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_ca_is_self_signed_and_may_only_sign_leaves(bundle: pki.ClusterPKI) -> None:
    ca = _cert(bundle.ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value

    ca.verify_directly_issued_by(ca)
    assert ca.subject == ca.issuer
    assert constraints.ca
    assert constraints.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


def test_every_certificate_is_signed_by_the_cluster_ca(bundle: pki.ClusterPKI) -> None:
    ca = _cert(bundle.ca)
    leaves = [
        bundle.apiserver,
        bundle.controller_manager_serving,
        bundle.scheduler_serving,
        bundle.admin,
        bundle.controller_manager,
        bundle.scheduler,
    ]
    for leaf in leaves:
        cert = _cert(leaf)
        cert.verify_directly_issued_by(ca)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_apiserver_certificate_names_loopback_and_in_cluster_names(
    bundle: pki.ClusterPKI,
) -> None:
    cert = _cert(bundle.apiserver)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    assert set(names.get_values_for_type(x509.DNSName)) >= {
        "localhost",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address(SERVICE_IP),
    }
    assert _extended_usages(cert) == [oid.ExtendedKeyUsageOID.SERVER_AUTH]


@pytest.mark.parametrize(
    ("field", "user", "groups"),
    [
        ("admin", "kvscale-admin", ["system:masters"]),
        ("controller_manager", "system:kube-controller-manager", []),
        ("scheduler", "system:kube-scheduler", []),
    ],
)
def test_client_certificates_carry_user_and_groups(
    bundle: pki.ClusterPKI, field: str, user: str, groups: list[str]
) -> None:
    cert = _cert(getattr(bundle, field))
    subject = cert.subject

    assert [a.value for a in subject.get_attributes_for_oid(oid.NameOID.COMMON_NAME)] == [user]
    assert [a.value for a in subject.get_attributes_for_oid(oid.NameOID.ORGANIZATION_NAME)] == (
        groups
    )
    assert _extended_usages(cert) == [oid.ExtendedKeyUsageOID.CLIENT_AUTH]


def test_validity_starts_before_now_and_ends_at_the_requested_time() -> None:
    ca = pki.certificate_authority("ca", now=NOW, valid_for=datetime.timedelta(days=10))
    leaf = pki.client_certificate(ca, user="u", now=NOW, valid_for=datetime.timedelta(days=3))
    longer = pki.client_certificate(ca, user="u", now=NOW, valid_for=datetime.timedelta(days=30))

    assert _cert(ca).not_valid_before_utc == NOW - pki.BACKDATE
    assert _cert(leaf).not_valid_after_utc == NOW + datetime.timedelta(days=3)
    # A leaf never outlives the CA that signed it.
    assert _cert(longer).not_valid_after_utc == _cert(ca).not_valid_after_utc


def test_signing_key_pair_matches() -> None:
    pair = pki.signing_key_pair()
    private = serialization.load_pem_private_key(pair.private_pem, password=None)
    public = serialization.load_pem_public_key(pair.public_pem)

    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert private.public_key().public_numbers() == public.public_numbers()
    assert pair.private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_every_cluster_gets_its_own_keys() -> None:
    first = pki.cluster_pki(cluster_name="a", kubernetes_service_ip=SERVICE_IP, now=NOW)
    second = pki.cluster_pki(cluster_name="a", kubernetes_service_ip=SERVICE_IP, now=NOW)

    assert first.ca.key_pem != second.ca.key_pem
    assert first.service_account.private_pem != second.service_account.private_pem


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: pki.certificate_authority("ca", now=NOW.replace(tzinfo=None)), "now"),
        (lambda: pki.certificate_authority("", now=NOW), "common_name"),
        (
            lambda: pki.certificate_authority("ca", now=NOW, valid_for=datetime.timedelta(0)),
            "valid_for",
        ),
        (
            lambda: pki.serving_certificate(
                pki.certificate_authority("ca", now=NOW),
                common_name="s",
                ip_addresses=["127.0.0.300"],
                now=NOW,
            ),
            "ip_addresses",
        ),
        (
            lambda: pki.serving_certificate(
                pki.certificate_authority("ca", now=NOW), common_name="s", now=NOW
            ),
            "dns_names",
        ),
    ],
)
def test_bad_input_names_the_field(call: Callable[[], object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        call()


def test_a_leaf_cannot_sign(bundle: pki.ClusterPKI) -> None:
    with pytest.raises(ValueError, match="not a CA"):
        pki.client_certificate(bundle.admin, user="u", now=NOW)


def _write(directory: pathlib.Path, name: str, data: bytes) -> str:
    path = directory / name
    path.write_bytes(data)
    return str(path)


def test_tls_handshake_with_server_and_client_certificates(tmp_path: pathlib.Path) -> None:
    # The TLS stack checks validity against the real clock.
    bundle = pki.cluster_pki(
        cluster_name="tls",
        kubernetes_service_ip=SERVICE_IP,
        now=datetime.datetime.now(datetime.UTC),
    )
    ca_file = _write(tmp_path, "ca.crt", bundle.ca.cert_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(
        _write(tmp_path, "apiserver.crt", bundle.apiserver.cert_pem),
        _write(tmp_path, "apiserver.key", bundle.apiserver.key_pem),
    )
    server_context.load_verify_locations(ca_file)
    server_context.verify_mode = ssl.CERT_REQUIRED
    client_context = ssl.create_default_context(cafile=ca_file)
    client_context.load_cert_chain(
        _write(tmp_path, "admin.crt", bundle.admin.cert_pem),
        _write(tmp_path, "admin.key", bundle.admin.key_pem),
    )
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    from_server, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_context.wrap_bio(to_server, from_server, server_side=True)
    client = client_context.wrap_bio(to_client, from_client, server_hostname="127.0.0.1")

    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        to_server.write(from_client.read())
        to_client.write(from_server.read())
        if all(done.values()):
            break

    assert done == {"client": True, "server": True}
    peer = server.getpeercert()
    assert peer is not None
    assert ((("commonName", "kvscale-admin"),)) in peer["subject"]
