"""The PruneJob models and the generated CRD."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from prunejob_operator import crd, models

VALID = {"model": "s3://models/in.keras", "output": "s3://models/out.keras"}


def test_committed_crd_is_up_to_date() -> None:
    assert crd.CRD_PATH.read_text() == crd.render_crd(), (
        "crds/prunejob.yaml is stale: run `python -m prunejob_operator.crd --write`"
    )


def test_readme_reference_is_up_to_date() -> None:
    readme = (crd.CRD_PATH.parents[1] / "README.md").read_text()
    assert crd.render_reference().strip() in readme, (
        "README's PruneJob reference is stale: paste `python -m prunejob_operator.crd "
        "--reference` into it"
    )


def test_check_command_fails_on_a_stale_file(tmp_path, monkeypatch) -> None:
    stale = tmp_path / "prunejob.yaml"
    stale.write_text("kind: Nope\n")
    monkeypatch.setattr(crd, "CRD_PATH", stale)
    assert crd.main(["--check"]) == 1
    crd.main(["--write"])
    assert crd.main(["--check"]) == 0


def test_write_and_check_take_a_path(tmp_path) -> None:
    target = tmp_path / "out" / "crd.yaml"
    assert crd.main(["--check", str(target)]) == 1
    assert crd.main(["--write", str(target)]) == 0
    assert target.read_text() == crd.render_crd()
    assert crd.main(["--check", str(target)]) == 0


def test_crd_names_and_printer_columns() -> None:
    document = yaml.safe_load(crd.CRD_PATH.read_text())
    spec = document["spec"]
    assert document["metadata"]["name"] == "prunejobs.prunejob.io"
    assert spec["names"]["shortNames"] == ["pj"]
    assert spec["names"]["categories"] == ["prunejob"]
    assert spec["scope"] == "Namespaced"
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    paths = [column["jsonPath"] for column in version["additionalPrinterColumns"]]
    assert ".status.phase" in paths
    assert ".status.pruningRatio" in paths
    assert ".status.filtersSummary" in paths
    assert ".metadata.creationTimestamp" in paths


def _walk(node: object) -> list[dict]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def test_schema_is_structural() -> None:
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node
        assert node.get("additionalProperties") is not False
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True


def test_schema_carries_enums_ranges_defaults() -> None:
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    pruning = spec["properties"]["pruning"]
    assert spec["required"] == ["model", "output"]
    assert pruning["default"] == {}
    assert pruning["properties"]["normalizer"]["enum"] == ["max", "L2", "off"]
    assert pruning["properties"]["granularity"] == {
        "default": 8,
        "description": pruning["properties"]["granularity"]["description"],
        "maximum": 4096,
        "minimum": 1,
        "type": "integer",
    }
    assert pruning["properties"]["threshold"]["default"] == 0.1
    assert pruning["properties"]["minNumFilters"]["default"] == 16
    assert spec["properties"]["gpus"]["default"] == 1
    assert spec["properties"]["backoffLimit"]["default"] == 2
    assert spec["properties"]["affinity"]["x-kubernetes-preserve-unknown-fields"] is True
    limits = spec["properties"]["resources"]["properties"]["limits"]
    assert limits["additionalProperties"] == {"x-kubernetes-int-or-string": True}


def test_spec_defaults_are_taos() -> None:
    spec = models.parse_spec(VALID)
    assert spec.pruning.normalizer == "max"
    assert spec.pruning.equalization_criterion == "union"
    assert (spec.pruning.granularity, spec.pruning.threshold) == (8, 0.1)
    assert spec.pruning.min_num_filters == 16
    assert spec.gpus == 1 and spec.backoff_limit == 2


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"model": "/local/file.keras"}, "spec.model"),
        ({"pruning": {"normalizer": "L1"}}, "spec.pruning.normalizer"),
        ({"pruning": {"granularity": 0}}, "spec.pruning.granularity"),
        ({"pruning": {"targetRatio": 1.5}}, "spec.pruning.targetRatio"),
        ({"gpus": -1}, "spec.gpus"),
        ({"keySecretRef": {"name": "Not_A_Name"}}, "spec.keySecretRef.name"),
        ({"surprise": True}, "spec.surprise"),
    ],
)
def test_invalid_spec_names_the_field(patch: dict, field: str) -> None:
    with pytest.raises(models.InvalidSpecError) as caught:
        models.parse_spec({**VALID, **patch})
    message = str(caught.value)
    assert field in message and "\n" not in message


def test_reference_lists_every_spec_field() -> None:
    reference = crd.render_reference()
    for name in models.PruneJobSpec.model_fields.values():
        assert f"`spec.{name.alias}`" in reference


def test_module_command_prints_the_crd() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "prunejob_operator.crd"], capture_output=True, text=True, check=True
    )
    assert done.stdout == crd.render_crd()
