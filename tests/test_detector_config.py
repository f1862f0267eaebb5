"""Every detector's settings are typed and bounded (worker.detector_config), checked when a scan is created, and
documented in the OpenAPI document; a scan row keeps only what the user set."""

import zipfile

import annotated_types
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError

from worker.catalog import default_registry
from worker.detector_config import AssessmentConfig, DetectorConfig, ModelLayerConfig
from worker.findings import InputFile, ScanInputs
from worker.hashing import sha256_file
from worker.options import ScanOptions

REGISTRY = default_registry()
NAMES = REGISTRY.names()


def _error(detector_config: dict) -> dict:
    with pytest.raises(ValidationError) as caught:
        ScanOptions(detector_config=detector_config)
    (error,) = caught.value.errors()
    return error


def _models(model: type[BaseModel]):
    """``model`` and the settings models nested in it."""
    yield model
    for field in model.model_fields.values():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _models(field.annotation)


def _resolve(schema: dict, node: dict) -> dict:
    return schema["$defs"][node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else node


@pytest.mark.parametrize("name", NAMES)
def test_every_detector_declares_its_settings_model_and_its_defaults_validate(name):
    model = REGISTRY.get(name).config_model
    assert model.model_config["extra"] == "forbid"
    assert DetectorConfig.model_fields[name].annotation is model  # what the scan is checked against is what it reads
    assert model.model_validate({}) == model()
    options = ScanOptions(detector_config={name: {}})
    assert options.detector_config == {name: {}}


def test_the_scan_wide_model_knows_exactly_the_registered_detectors():
    assert set(DetectorConfig.model_fields) == set(NAMES)
    assert _error({"no_such_detector": {}})["loc"] == ("detector_config", "no_such_detector")


@pytest.mark.parametrize("name", NAMES)
def test_a_typo_is_refused_naming_the_detector_and_the_key(name):
    error = _error({name: {"fodls": 5}})
    assert error["loc"] == ("detector_config", name, "fodls") and error["type"] == "extra_forbidden"
    with pytest.raises(ValueError, match=rf"detector_config\.{name}\.fodls"):
        ScanOptions(detector_config={name: {"fodls": 5}})


def test_settings_models_bound_every_number_and_describe_every_key():
    for name in NAMES:
        for model in _models(REGISTRY.get(name).config_model):
            for key, field in model.model_fields.items():
                assert field.description, (model.__name__, key)
                if field.annotation in (int, float):
                    bounds = {type(m) for m in field.metadata}
                    assert {annotated_types.Ge, annotated_types.Le} <= bounds, (model.__name__, key)


def test_a_wrong_type_is_refused():
    error = _error({"data_poisoning": {"folds": "five"}})
    assert error["loc"] == ("detector_config", "data_poisoning", "folds") and error["type"] == "int_parsing"
    assert _error({"backdoor_assessment": {"remediate": "sometimes"}})["type"] == "literal_error"
    assert _error({"signature_verification": {"require_signature": "perhaps"}})["type"] == "bool_parsing"
    assert _error({"backdoor_assessment": None})["loc"] == ("detector_config", "backdoor_assessment")


@pytest.mark.parametrize(("name", "key", "value"), [
    ("backdoor_assessment", "nc_steps", 1e9), ("backdoor_assessment", "strip_copies", 10**9),
    ("backdoor_assessment", "proxy_budget_s", 1e12), ("backdoor_activations", "proxy_budget_s", 1e12),
    ("backdoor_assessment", "nc_budget_s", 0), ("data_poisoning", "folds", 1), ("data_poisoning", "seed", -1),
    ("unsafe_serialization", "allow_globals", ["os.system; rm -rf"]),
])
def test_an_out_of_bounds_value_is_refused_naming_the_key(name, key, value):
    assert _error({name: {key: value}})["loc"] == ("detector_config", name, key)


def test_values_at_the_bounds_are_accepted_and_kept_as_given():
    settings = {"nc_steps": 20_000, "strip_copies": 256, "nc_budget_s": 86_400, "proxy_budget_s": 1}
    assert ScanOptions(detector_config={"backdoor_assessment": settings}).detector_config == {"backdoor_assessment": settings}


def test_an_artifact_manifest_must_name_roles_and_sha256s():
    assert _error({"artifact_integrity": {"expected_manifest": {"modle": {}}}})["loc"][:3] == (
        "detector_config", "artifact_integrity", "expected_manifest")
    error = _error({"artifact_integrity": {"expected_manifest": {"model": {"weights.bin": "not a digest"}}}})
    assert error["loc"] == ("detector_config", "artifact_integrity", "expected_manifest", "model", "weights.bin")


@pytest.mark.parametrize("key", ["quarantine", "escalate"])
def test_the_retired_remediation_keys_say_they_are_gone(key):
    error = _error({"backdoor_assessment": {key: "union"}})
    assert error["loc"] == ("detector_config", "backdoor_assessment") and "no longer a setting" in error["msg"]
    with pytest.raises(ValidationError, match="no longer a setting"):
        AssessmentConfig.model_validate({key: "union"})


def test_the_assessment_run_alone_takes_the_model_layers_settings():
    assert issubclass(AssessmentConfig, ModelLayerConfig)
    settings = AssessmentConfig.model_validate({"label_column": "target", "layers": ["dense"], "proxy_epochs": 30})
    assert (settings.label_column, settings.layers, settings.proxy_epochs) == ("target", ["dense"], 30)
    assert (settings.nc_steps, settings.proxy_budget_s, settings.remediate) == (1000, 300, "auto")  # the defaults


def test_a_scan_stores_only_what_the_user_set_and_reads_back_the_same():
    options = ScanOptions(detector_config={"backdoor_assessment": {"nc_steps": 400.0, "remediate": "never"},
                                           "unsafe_serialization": {"sandbox": {"cpu_s": 1}}})
    stored = options.model_dump(mode="json")
    assert stored["detector_config"] == {"unsafe_serialization": {"sandbox": {"cpu_s": 1}},
                                         "backdoor_assessment": {"nc_steps": 400, "remediate": "never"}}
    assert ScanOptions.model_validate(stored) == options  # the worker re-validates the stored row
    assert options.detector_config.get("backdoor_assessment", {})["nc_steps"] == 400  # as the pipeline reads it
    assert options.detector_config.get("data_poisoning", {}) == {}
    assert ScanOptions().model_dump(mode="json")["detector_config"] == {}


def test_tenant_defaults_are_merged_under_the_scans_own_and_checked():
    from app.problems import Problem
    from app.scans.service import with_tenant_defaults

    tenant = {"backdoor_assessment": {"nc_steps": 50, "strip_copies": 8}}
    options = with_tenant_defaults(ScanOptions(detector_config={"backdoor_assessment": {"nc_steps": 400}}), tenant)
    assert options.detector_config == {"backdoor_assessment": {"nc_steps": 400, "strip_copies": 8}}
    with pytest.raises(Problem) as caught:
        with_tenant_defaults(ScanOptions(), {"backdoor_assessment": {"strip_copeis": 8}})
    assert caught.value.status == 422 and "strip_copeis" in str(caught.value.detail)


def test_the_openapi_document_shows_each_detectors_typed_settings():
    app = FastAPI()

    @app.post("/scan")
    def scan(options: ScanOptions) -> None:  # only its schema matters
        pass

    schemas = app.openapi()["components"]["schemas"]
    assert "ScanOptions-Input" not in schemas  # one schema: the stored form reads as the typed settings
    by_detector = schemas[schemas["ScanOptions"]["properties"]["detector_config"]["$ref"].rsplit("/", 1)[-1]]
    assert by_detector["additionalProperties"] is False and set(by_detector["properties"]) == set(NAMES)
    assessment = schemas[by_detector["properties"]["backdoor_assessment"]["$ref"].rsplit("/", 1)[-1]]
    keys = assessment["properties"]
    assert assessment["additionalProperties"] is False
    assert set(AssessmentConfig.model_fields) <= set(keys) and {"label_column", "layers", "proxy_epochs"} <= set(keys)
    assert (keys["nc_steps"]["minimum"], keys["nc_steps"]["maximum"], keys["nc_steps"]["default"]) == (1, 20_000, 1000)
    assert keys["strip_copies"]["maximum"] == 256 and keys["proxy_budget_s"]["maximum"] == 86_400
    assert keys["remediate"]["enum"] == ["auto", "always", "never"]
    # the pydantic schema (what FastAPI builds from) is the same when validating and when serializing
    assert ScanOptions.model_json_schema(mode="serialization") == ScanOptions.model_json_schema(mode="validation")
    schema = ScanOptions.model_json_schema()
    data = _resolve(schema, _resolve(schema, schema["properties"]["detector_config"])["properties"]["data_poisoning"])
    assert data["properties"]["folds"]["maximum"] == 20 and data["properties"]["model"]["enum"] == ["auto", "logistic", "mlp"]


def test_a_detector_reads_its_typed_settings(tmp_path):
    from worker.detectors.integrity import artifact_integrity

    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", b"{}")
    inputs = ScanInputs(model=InputFile("model", path, sha256_file(path), "model.zip", "zip"))
    titles = [f.title for f in artifact_integrity(inputs, {})]
    assert "model archive manifest (1 members)" in titles
    # above manifest_max_bytes an archive is manifested only when a manifest is expected
    assert not any("manifest" in f.title for f in artifact_integrity(inputs, {"manifest_max_bytes": 0}))
    with pytest.raises(ValidationError, match="manifest_max_byte"):
        artifact_integrity(inputs, {"manifest_max_byte": 0})
