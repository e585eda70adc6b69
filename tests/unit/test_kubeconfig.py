"""Rendered kubeconfigs are self-contained: certificates embedded, one current context."""

from __future__ import annotations

import base64
import datetime

import pytest
import yaml

from kvscale.localstack import kubeconfig, pki

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def test_kubeconfig_embeds_the_ca_and_client_pair() -> None:
    ca = pki.certificate_authority("ca", now=NOW)
    client = pki.client_certificate(ca, user="me", now=NOW)

    document = yaml.safe_load(
        kubeconfig.render(
            name="ctx",
            server="https://127.0.0.1:6443",
            ca_pem=ca.cert_pem,
            client=client,
            user="me",
        )
    )

    cluster = document["clusters"][0]["cluster"]
    user = document["users"][0]["user"]
    assert document["current-context"] == "ctx"
    assert document["contexts"][0]["context"] == {"cluster": "ctx", "user": "me"}
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.cert_pem
    assert base64.b64decode(user["client-certificate-data"]) == client.cert_pem
    assert base64.b64decode(user["client-key-data"]) == client.key_pem


def test_plain_http_servers_are_refused() -> None:
    ca = pki.certificate_authority("ca", now=NOW)
    with pytest.raises(ValueError, match="server"):
        kubeconfig.render(
            name="x", server="http://127.0.0.1:8080", ca_pem=ca.cert_pem, client=ca, user="u"
        )
