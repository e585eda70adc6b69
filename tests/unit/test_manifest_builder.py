"""The one InferenceDeployment builder of the integration tests: envelope, merge, checks."""

from __future__ import annotations

import pydantic
import pytest
from tests.support import manifest

from kvscale.api import models
from kvscale.localstack import node


def test_parts_merge_over_the_never_ready_spec_key_by_key() -> None:
    spec = manifest.never_ready_spec(engine={"maxNumSeqs": 32}, replicas=2)
    assert spec["engine"] == {
        "image": node.TEST_IMAGE,
        "blockSize": 32,
        "shutdownGraceSeconds": 1,
        "maxNumSeqs": 32,
    }
    assert spec["replicas"] == 2
    # The base is copied, never changed.
    assert "maxNumSeqs" not in manifest.never_ready_spec()["engine"]


def test_the_object_parses_as_the_operator_parses_it() -> None:
    spec = manifest.never_ready_spec(scaling=manifest.autoscaling(stable_s=8, delay_s=15))
    built = manifest.inference_deployment("twins", spec, namespace="apps")
    parsed = models.InferenceDeployment.from_object(built)
    assert (parsed.metadata.name, parsed.metadata.namespace) == ("twins", "apps")
    assert parsed.spec.scaling.stable_window_seconds == 8
    assert "namespace" not in manifest.inference_deployment("x", spec)["metadata"]


def test_a_typo_fails_at_the_builder_naming_the_field() -> None:
    with pytest.raises(pydantic.ValidationError, match="maxReplica"):
        manifest.inference_deployment("x", manifest.never_ready_spec(scaling={"maxReplica": 3}))
