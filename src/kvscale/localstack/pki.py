"""Certificates and keys for one local cluster, as PEM bytes.

Pure apart from randomness: every function takes the time as an argument and returns PEM;
nothing is written here (the cluster module writes the files). Keys are ECDSA P-256, which every
Kubernetes component accepts for TLS, client certificates and service-account tokens (ES256),
and which is generated in microseconds rather than the tens of milliseconds RSA takes.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import oid

# Certificates start a little in the past so a clock that steps back does not make them invalid.
BACKDATE = datetime.timedelta(minutes=5)
DEFAULT_VALIDITY = datetime.timedelta(days=365)

# The names clients use for the API server in-cluster and on this machine.
APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
LOOPBACK = "127.0.0.1"

# Users the default RBAC policy already binds to the roles these components need.
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
SCHEDULER_USER = "system:kube-scheduler"
ADMIN_USER = "kvscale-admin"
ADMIN_GROUP = "system:masters"


@dataclasses.dataclass(frozen=True)
class Issued:
    """A certificate and its private key (PKCS#8), both PEM."""

    cert_pem: bytes
    key_pem: bytes


@dataclasses.dataclass(frozen=True)
class KeyPair:
    """A bare key pair (the service-account token signer): PKCS#8 and SubjectPublicKeyInfo PEM."""

    private_pem: bytes
    public_pem: bytes


@dataclasses.dataclass(frozen=True)
class ClusterPKI:
    """Everything one cluster needs, signed by one CA."""

    ca: Issued
    apiserver: Issued
    controller_manager_serving: Issued
    scheduler_serving: Issued
    admin: Issued
    controller_manager: Issued
    scheduler: Issued
    service_account: KeyPair


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _check_window(now: datetime.datetime, valid_for: datetime.timedelta) -> None:
    if now.tzinfo is None:
        raise ValueError("now: must be timezone-aware")
    if valid_for <= datetime.timedelta(0):
        raise ValueError(f"valid_for = {valid_for}: must be positive")


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    if not common_name:
        raise ValueError("common_name: must not be empty")
    attributes = [x509.NameAttribute(oid.NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(oid.NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _load_ca(ca: Issued) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("ca.key_pem: must be an ECDSA private key")
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not constraints.ca:
        raise ValueError("ca.cert_pem: is not a CA certificate")
    return cert, key


def certificate_authority(
    common_name: str,
    *,
    now: datetime.datetime,
    valid_for: datetime.timedelta = DEFAULT_VALIDITY,
) -> Issued:
    """A self-signed CA that may sign leaf certificates only."""
    _check_window(now, valid_for)
    key = _new_key()
    subject = _name(common_name)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _leaf(
    ca: Issued,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    *,
    now: datetime.datetime,
    valid_for: datetime.timedelta,
    alternative_names: Sequence[x509.GeneralName] = (),
) -> Issued:
    _check_window(now, valid_for)
    ca_cert, ca_key = _load_ca(ca)
    key = _new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + valid_for, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if alternative_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(alternative_names)), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def serving_certificate(
    ca: Issued,
    *,
    common_name: str,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    now: datetime.datetime,
    valid_for: datetime.timedelta = DEFAULT_VALIDITY,
) -> Issued:
    """A TLS server certificate for the given names and addresses, signed by `ca`."""
    if not dns_names and not ip_addresses:
        raise ValueError("dns_names, ip_addresses: a serving certificate needs at least one")
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    for address in ip_addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError as exc:
            raise ValueError(f"ip_addresses: {address!r} is not an IP address") from exc
    return _leaf(
        ca,
        _name(common_name),
        oid.ExtendedKeyUsageOID.SERVER_AUTH,
        now=now,
        valid_for=valid_for,
        alternative_names=names,
    )


def client_certificate(
    ca: Issued,
    *,
    user: str,
    groups: Sequence[str] = (),
    now: datetime.datetime,
    valid_for: datetime.timedelta = DEFAULT_VALIDITY,
) -> Issued:
    """A client certificate Kubernetes reads as `user` (CN) in `groups` (O)."""
    return _leaf(
        ca,
        _name(user, groups),
        oid.ExtendedKeyUsageOID.CLIENT_AUTH,
        now=now,
        valid_for=valid_for,
    )


def signing_key_pair() -> KeyPair:
    """A key pair for signing service-account tokens."""
    key = _new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private_pem=_key_pem(key), public_pem=public)


def cluster_pki(
    *,
    cluster_name: str,
    kubernetes_service_ip: str,
    now: datetime.datetime,
    valid_for: datetime.timedelta = DEFAULT_VALIDITY,
) -> ClusterPKI:
    """A CA and every certificate and key a local cluster runs with.

    `kubernetes_service_ip` is the ClusterIP of the `kubernetes` Service (the first address of
    the service range); in-cluster clients reach the API server under it.
    """
    ca = certificate_authority(f"kvscale-{cluster_name}-ca", now=now, valid_for=valid_for)
    return ClusterPKI(
        ca=ca,
        apiserver=serving_certificate(
            ca,
            common_name="kube-apiserver",
            dns_names=APISERVER_DNS_NAMES,
            ip_addresses=(LOOPBACK, kubernetes_service_ip),
            now=now,
            valid_for=valid_for,
        ),
        controller_manager_serving=serving_certificate(
            ca,
            common_name="kube-controller-manager",
            dns_names=("localhost",),
            ip_addresses=(LOOPBACK,),
            now=now,
            valid_for=valid_for,
        ),
        scheduler_serving=serving_certificate(
            ca,
            common_name="kube-scheduler",
            dns_names=("localhost",),
            ip_addresses=(LOOPBACK,),
            now=now,
            valid_for=valid_for,
        ),
        admin=client_certificate(
            ca, user=ADMIN_USER, groups=(ADMIN_GROUP,), now=now, valid_for=valid_for
        ),
        controller_manager=client_certificate(
            ca, user=CONTROLLER_MANAGER_USER, now=now, valid_for=valid_for
        ),
        scheduler=client_certificate(ca, user=SCHEDULER_USER, now=now, valid_for=valid_for),
        service_account=signing_key_pair(),
    )
