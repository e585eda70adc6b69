"""The operator's server-side apply body is YAML the API server can read, whatever the strings.

Found by chaos scenario 9 (tests/integration/test_chaos_fuzz.py): the API server reads an apply
patch as YAML, which refuses some characters raw that JSON allows (a C1 control character in a
toleration key), so every apply of such a spec's Deployment failed with a 400.
"""

from __future__ import annotations

import json

import yaml
from hypothesis import given
from hypothesis import strategies as st
from lightkube.core import generic_client

from kvscale_operator import kube

ODD = '\u00a7"\x97\x99 \x7f \x85 \u2028 \u2029 \ufeff \ufffe x\x00y \t\n \U0001f999 \u00e9t\u00e9'


def test_the_body_reads_back_the_same_as_yaml_and_as_json() -> None:
    manifest = {"spec": {"tolerations": [{"key": ODD}], "args": ["--served-model-name", ODD]}}
    body = bytes(kube.apply_body(manifest)).decode()
    assert yaml.safe_load(body) == manifest
    assert json.loads(body) == manifest
    assert "\\u0097" in body  # escaped, not raw
    assert "\U0001f999" in body  # printable to YAML: raw, as lightkube writes it


@given(st.text())
def test_any_string_survives_a_yaml_reader(text: str) -> None:
    manifest = {"metadata": {"name": "x"}, "data": {"value": text}}
    assert yaml.safe_load(bytes(kube.apply_body(manifest)).decode()) == manifest


def test_lightkube_sends_the_body_as_it_is() -> None:
    # lightkube encodes a request's data with this function (GenericClient.build_adapter_request);
    # a pre-encoded body must come out byte for byte.
    body = kube.apply_body({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": ODD}})
    assert generic_client.json_encode(body) == bytes(body)
