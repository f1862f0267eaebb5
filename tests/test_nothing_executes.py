"""Payloads that would create a canary file if anything ever ran them, in every container type,
scanned through the API (a real server and worker) and through the CLI: each is flagged, the canary
never appears."""

import pytest

from tests import hostile_files, payloads
from tests.stack import Stack, wait_for_scan

CLI_SAMPLE = ["proto0.pkl", "torch_zip_disguised.safetensors", "zip_in_zip.zip", "payload.tar.gz", "payload.pkl.gz",
              "object_array.npy", "npz_object_member.npz", "joblib_object_array.joblib", "broken_after_payload.pkl", "dynamic_global.pkl"]


@pytest.fixture(scope="module")
def evil_dir(tmp_path_factory, canary):
    d = tmp_path_factory.mktemp("evil")
    for name, data in payloads.malicious_files(canary).items():
        (d / name).write_bytes(data)
    payloads.write_keras_lambda_models(d, canary)
    # the fail-closed classes (zip anomalies, 7z/lz4, templates, GGUF, YAML, ONNX, SavedModel, snapshots...), each
    # file under the name it would have in a model folder
    for cls, files in (hostile_files.malicious_sets(canary) | hostile_files.hostile_sets(canary)).items():
        for name, data in files.items():
            (d / cls / name).parent.mkdir(parents=True, exist_ok=True)
            (d / cls / name).write_bytes(data)
    return d


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack("embedded", tmp_path_factory.mktemp("stack"))
    try:
        yield s.start()
    finally:
        s.stop()


def test_api_flags_every_payload_and_runs_none(stack, evil_dir, canary):
    verdicts = {}
    with stack.client() as client:
        ids = {}
        for path in sorted(p for p in evil_dir.rglob("*") if p.is_file()):
            resp = client.post("/v1/scans", files={"model": (path.name, path.read_bytes())})
            assert resp.status_code == 202, (path.name, resp.text)
            ids[path.relative_to(evil_dir).as_posix()] = resp.json()["id"]
        for name, scan_id in ids.items():
            scan = wait_for_scan(client, scan_id, timeout=120)
            verdicts[name] = (scan["status"], scan["verdict"])
    assert {n: v for n, v in verdicts.items() if v != ("succeeded", "fail")} == {}
    assert len(verdicts) >= 70 and not canary.exists()


CLI_SAMPLE += ["lambda.keras", "lambda.h5", "zip_anomaly/zip_name_mismatch.pt", "7z_lz4/payload.7z",
               "chat_template_ssti/tokenizer_ssti_cycler/tokenizer_config.json", "gguf_ssti/gguf_ssti.gguf",
               "onnx_external_data/onnx_traversal/model.onnx", "savedmodel_ops/tf_pyfunc_readfile/saved_model.pb",
               "hf_snapshot/hf_snapshot_payload.tar", "truncated_keras/keras_truncated.keras"]


@pytest.mark.parametrize("name", CLI_SAMPLE)
def test_cli_flags_payloads(stack, evil_dir, canary, name):
    result = stack.cli("scan", "--model", str(evil_dir / name), "--format", "json", check=False)
    assert result.returncode == 1, (name, result.stdout[-2000:], result.stderr[-2000:])
    assert not canary.exists()
