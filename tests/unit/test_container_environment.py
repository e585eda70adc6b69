"""A container's environment is resolved in kubelet's order, with the downward API."""

from __future__ import annotations

import pytest

from kvscale.localstack.nodeagent import environment, podspec

POD = podspec.Pod(
    namespace="llm",
    name="engine-0",
    uid="u-1",
    node_name="local-node-1",
    restart_policy="Always",
    containers=(podspec.Container(name="engine", image="x"),),
    labels={"app": "engine", "kvscale.dev/inference-deployment": "tiny"},
    annotations={"note": "hello"},
    service_account_name="default",
)


def resolve(
    *env: podspec.EnvVar,
    env_from: tuple[podspec.EnvFrom, ...] = (),
    sources: environment.Sources | None = None,
) -> environment.Environment:
    container = podspec.Container(name="engine", image="x", env=env, env_from=env_from)
    return environment.container_environment(
        POD, container, "127.1.0.5", "127.0.0.1", sources or environment.Sources()
    )


def field(name: str, path: str) -> podspec.EnvVar:
    return podspec.EnvVar(name, source=podspec.FieldRef(path))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("status.podIP", "127.1.0.5"),
        ("status.podIPs", "127.1.0.5"),
        ("status.hostIP", "127.0.0.1"),
        ("metadata.name", "engine-0"),
        ("metadata.namespace", "llm"),
        ("metadata.uid", "u-1"),
        ("spec.nodeName", "local-node-1"),
        ("spec.serviceAccountName", "default"),
        ("metadata.labels['app']", "engine"),
        ("metadata.labels['kvscale.dev/inference-deployment']", "tiny"),
        ("metadata.labels['missing']", ""),
        ("metadata.annotations['note']", "hello"),
    ],
)
def test_downward_api_fields(path: str, value: str) -> None:
    assert resolve(field("X", path)).variables == {"X": value}


def test_an_unsupported_field_path_is_a_config_error() -> None:
    with pytest.raises(environment.ConfigError, match=r"metadata\.generation"):
        resolve(field("X", "metadata.generation"))


def test_values_expand_against_earlier_variables_including_the_downward_api() -> None:
    result = resolve(
        field("POD_IP", "status.podIP"),
        podspec.EnvVar("URL", "http://$(POD_IP):8000"),
        podspec.EnvVar("LATER", "$(DEFINED_AFTER)"),
        podspec.EnvVar("DEFINED_AFTER", "x"),
        podspec.EnvVar("ESCAPED", "$$(POD_IP)"),
    )
    assert result.variables == {
        "POD_IP": "127.1.0.5",
        "URL": "http://127.1.0.5:8000",
        "LATER": "$(DEFINED_AFTER)",
        "DEFINED_AFTER": "x",
        "ESCAPED": "$(POD_IP)",
    }


def test_env_from_comes_first_and_env_overrides_it() -> None:
    sources = environment.Sources(
        config_maps={"settings": {"MODE": "slow", "LEVEL": "3"}},
        secrets={"creds": {"TOKEN": "s3cret", "bad=key": "x"}},
    )
    result = resolve(
        podspec.EnvVar("MODE", "fast"),
        podspec.EnvVar("COPY", "$(LEVEL)"),
        env_from=(
            podspec.EnvFrom("ConfigMap", "settings"),
            podspec.EnvFrom("Secret", "creds", prefix="APP_"),
        ),
        sources=sources,
    )
    assert result.variables == {
        "MODE": "fast",
        "LEVEL": "3",
        "APP_TOKEN": "s3cret",
        "COPY": "3",
    }
    assert any("bad=key" in note for note in result.notes)


def test_key_refs() -> None:
    sources = environment.Sources(config_maps={"cm": {"k": "v"}}, secrets={"s": None})
    result = resolve(
        podspec.EnvVar("A", source=podspec.KeyRef("ConfigMap", "cm", "k")),
        podspec.EnvVar("B", source=podspec.KeyRef("Secret", "s", "k", optional=True)),
        podspec.EnvVar("C", source=podspec.KeyRef("ConfigMap", "cm", "nope", optional=True)),
        sources=sources,
    )
    assert result.variables == {"A": "v"}
    assert result.notes == ()


@pytest.mark.parametrize(
    ("var", "message"),
    [
        (podspec.EnvVar("A", source=podspec.KeyRef("ConfigMap", "gone", "k")), "configmap 'gone'"),
        (podspec.EnvVar("A", source=podspec.KeyRef("ConfigMap", "cm", "nope")), "key 'nope'"),
        (podspec.EnvVar("A", source=podspec.KeyRef("Secret", "gone", "k")), "secret 'gone'"),
    ],
)
def test_missing_required_sources_are_config_errors(var: podspec.EnvVar, message: str) -> None:
    sources = environment.Sources(config_maps={"cm": {"k": "v"}, "gone": None}, secrets={})
    with pytest.raises(environment.ConfigError, match=message):
        resolve(var, sources=sources)


def test_missing_required_env_from_is_a_config_error_and_optional_is_skipped() -> None:
    sources = environment.Sources(config_maps={"gone": None})
    with pytest.raises(environment.ConfigError, match="configmap 'gone' not found"):
        resolve(env_from=(podspec.EnvFrom("ConfigMap", "gone"),), sources=sources)
    skipped = resolve(
        env_from=(podspec.EnvFrom("ConfigMap", "gone", optional=True),), sources=sources
    )
    assert skipped.variables == {}


def test_resource_field_refs_are_left_unset_with_a_note() -> None:
    result = resolve(podspec.EnvVar("CPU", source=podspec.ResourceFieldRef("limits.cpu")))
    assert result.variables == {}
    assert "resourceFieldRef 'limits.cpu'" in result.notes[0]


def test_references_name_every_config_map_and_secret() -> None:
    container = podspec.Container(
        name="c",
        image="x",
        env=(
            podspec.EnvVar("A", source=podspec.KeyRef("Secret", "s", "k")),
            podspec.EnvVar("B", "literal"),
        ),
        env_from=(podspec.EnvFrom("ConfigMap", "cm"),),
    )
    assert environment.references(container) == {("Secret", "s"), ("ConfigMap", "cm")}


def test_process_environment_precedence() -> None:
    agent = {"PATH": "/usr/bin", "HOME": "/root", "KUBECONFIG": "/secret/admin", "LANG": "C"}
    env = environment.process_environment(
        agent,
        image_environment={"HF_HOME": "/cache/hf", "MODE": "image"},
        image_bin_dirs=("/venv/bin",),
        container_variables={"MODE": "container", "POD_IP": "127.1.0.5"},
        hostname="engine-0",
    )
    assert env == {
        "PATH": "/venv/bin:/usr/bin",
        "HOME": "/root",
        "LANG": "C",
        "HF_HOME": "/cache/hf",
        "MODE": "container",
        "POD_IP": "127.1.0.5",
        "HOSTNAME": "engine-0",
    }
