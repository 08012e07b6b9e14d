"""Using what was trained: the MLflow Model, predict.py on pictures, the test report, the UI."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from helpers import ROOT
from PIL import Image

from lstm_mnist.data import DEFAULT_DIRS, FILES, read_idx
from lstm_mnist.digits import load_grey, to_mnist
from lstm_mnist.tracking import Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def test_digits():
    images = read_idx(DEFAULT_DIRS["mnist"] / FILES["test_images"])[:200]
    labels = read_idx(DEFAULT_DIRS["mnist"] / FILES["test_labels"])[:200].long()
    return images, labels


def test_logged_model_predicts_class_probabilities(short_run, test_digits):
    result, store = short_run
    mlflow.set_tracking_uri(store)
    logged = Store(store, "lstm-mnist").model_of(result["run_id"])
    assert logged.model_uri.startswith("models:/m-")  # MLflow 3's address of a logged model
    model = mlflow.pyfunc.load_model(logged.model_uri)
    images, labels = test_digits
    probs = model.predict(images[:50].numpy().astype(np.float32) / 255)
    assert probs.shape == (50, 10)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4)
    assert (probs.argmax(1) == labels[:50].numpy()).mean() > 0.8


def test_test_report_artifacts(short_run, tmp_path):
    result, store = short_run
    client = mlflow.MlflowClient(store)
    run_id = result["run_id"]
    # A SQLite store keeps its artifacts beside the database file.
    db = Path(store.removeprefix("sqlite:///"))
    assert (db.parent / "mlruns" / run_id / "artifacts" / "test_report").is_dir()
    for name in ("confusion_matrix.png", "worst_mistakes.png"):
        data = open(client.download_artifacts(run_id, f"test_report/{name}", tmp_path), "rb").read()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    csv = open(client.download_artifacts(run_id, "test_report/confusion_matrix.csv", tmp_path))
    cm = np.array([[int(v) for v in line.split(",")] for line in csv.read().split()])
    assert cm.shape == (10, 10) and cm.sum() == 10_000
    assert cm.diagonal().sum() == round(result["test_acc"] * 10_000)
    table_file = client.download_artifacts(run_id, "test_report/per_class_accuracy.json", tmp_path)
    table = json.load(open(table_file))  # MLflow's table format: columns and data rows
    assert table["columns"] == ["class", "support", "correct", "accuracy"]
    assert [row[1] for row in table["data"]] == cm.sum(1).tolist()
    assert [row[2] for row in table["data"]] == cm.diagonal().tolist()


def styled(img: np.ndarray, style: str) -> Image.Image:
    """An MNIST digit as somebody's picture of it."""
    pil = Image.fromarray(img)
    if style == "dark_on_light_large":
        return Image.fromarray(255 - img).resize((140, 140), Image.Resampling.BICUBIC)
    if style == "rgb_off_centre":
        canvas = Image.new("L", (90, 60), 0)
        canvas.paste(pil.resize((56, 56)), (4, 2))
        grey = np.asarray(canvas, dtype=np.float32) / 255
        ink, paper = np.array([20, 30, 140]), np.array([250, 240, 200])  # blue ink, cream paper
        rgb = paper * (1 - grey[..., None]) + ink * grey[..., None]
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    raise ValueError(style)


def test_to_mnist_recovers_a_digit_from_a_styled_picture(test_digits):
    images, _ = test_digits
    original = images[0].float() / 255
    for style in ("dark_on_light_large", "rgb_off_centre"):
        grey = np.asarray(styled(images[0].numpy(), style).convert("L"), dtype=np.float32) / 255
        back = to_mnist(grey)
        assert back.shape == (28, 28)
        # Close to the original: same place, same shape, small pixel error.
        assert (back - original).abs().mean() < 0.08, style


def test_predict_command_on_pictures(short_run, test_digits, tmp_path):
    result, store = short_run
    mlflow.set_tracking_uri(store)
    model = mlflow.pytorch.load_model(
        Store(store, "lstm-mnist").model_of(result["run_id"]).model_uri
    )
    images, labels = test_digits
    with torch.no_grad():
        probs = model(images.float() / 255)
    # Digits the model gets right as MNIST gave them: do they survive being photographed?
    sure = ((probs.argmax(1) == labels) & (probs.max(1).values > 0.9)).nonzero().flatten()[:20]
    assert len(sure) == 20
    files, truth = [], {}
    for i in sure.tolist():
        for style, ext in (("dark_on_light_large", "png"), ("rgb_off_centre", "jpg")):
            path = tmp_path / f"{i}_{style}.{ext}"
            styled(images[i].numpy(), style).save(path)
            files.append(str(path))
            truth[str(path)] = labels[i].item()
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")

    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "predict.py"), *files, str(broken)]
        + ["--run", "best", "--tracking-uri", store],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1  # one file failed
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"{broken}: error:")
    predicted = {}
    for line in proc.stdout.splitlines():
        path, rest = line.rsplit(": ", 1)
        predicted[path] = int(rest.split()[0])
    assert set(predicted) == set(files)
    right = sum(predicted[f] == truth[f] for f in files)
    assert right >= 0.9 * len(files), (right, len(files))


def test_register_the_best_model_and_load_it_by_name(short_run, test_digits):
    result, store = short_run
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "predict.py"), "--register", "digits"]
        + ["--tracking-uri", store],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "registered as models:/digits/1"
    assert "warn" not in proc.stderr.lower()
    mlflow.set_tracking_uri(store)
    version = mlflow.MlflowClient(store).get_model_version("digits", "1")
    assert version.run_id == result["run_id"]
    by_name = mlflow.pytorch.load_model("models:/digits/1", map_location="cpu")
    images, _ = test_digits
    logged = Store(store, "lstm-mnist").model_of(result["run_id"]).model_uri
    with torch.no_grad():
        expected = mlflow.pytorch.load_model(logged, map_location="cpu")(images[:8].float() / 255)
        assert torch.equal(by_name(images[:8].float() / 255), expected)


def predict(store: str, *args: str) -> subprocess.CompletedProcess:
    """predict.py with `args` against `store`, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / "predict.py"), *args, "--tracking-uri", store],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # three commands of ~10 s each
def test_an_alias_set_by_register_loads_and_moves(short_run, test_digits, tmp_path):
    result, store = short_run
    name = "aliased"  # not test_register's: each test finds its own versions
    proc = predict(store, "--register", name, "--alias", "champion", "--alias", "staging")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == (
        f"registered as models:/{name}/1 (aliases: models:/{name}@champion, models:/{name}@staging)"
    )

    # models:/NAME@ALIAS in Python: the model the run logged.
    mlflow.set_tracking_uri(store)
    by_alias = mlflow.pytorch.load_model(f"models:/{name}@champion", map_location="cpu")
    images, _ = test_digits
    logged = Store(store, "lstm-mnist").model_of(result["run_id"]).model_uri
    with torch.no_grad():
        expected = mlflow.pytorch.load_model(logged, map_location="cpu")(images[:8].float() / 255)
        assert torch.equal(by_alias(images[:8].float() / 255), expected)

    # ... and through predict.py --model, on digit pictures: that model's answers.
    files = []
    for i in range(5):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(images[i].numpy()).save(files[-1])
    proc = predict(store, *files, "--model", f"models:/{name}@champion")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"models:/{name}@champion (version 1, of run {result['run_id']})" in proc.stderr
    with torch.no_grad():
        digits = [int(by_alias(to_mnist(load_grey(f)).unsqueeze(0))[0].argmax()) for f in files]
    answers = [line.rsplit(": ", 1)[1].split()[0] for line in proc.stdout.splitlines()]
    assert answers == [str(d) for d in digits]

    # A second registration with the same alias moves it to the new version; the other stays.
    proc = predict(store, "--register", name, "--alias", "champion")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == (
        f"registered as models:/{name}/2 (aliases: models:/{name}@champion)"
    )
    client = mlflow.MlflowClient(store)  # (a SQLite store gives versions as int here, str there)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(name, "staging").version) == "1"


@pytest.mark.slow  # four commands, ~3 s each (their imports)
def test_a_bad_alias_or_a_model_not_in_the_registry_is_one_line(short_run):
    result, store = short_run
    name = "errors"
    mlflow.set_tracking_uri(store)
    logged = Store(store, "lstm-mnist").model_of(result["run_id"]).model_uri
    mlflow.register_model(logged, name)
    mlflow.MlflowClient(store).set_registered_model_alias(name, "champion", "1")
    expected = {
        ("--register", name, "--alias", "v2"): "error: --alias v2: reserved by MLflow; an alias"
        " is 1 to 255 letters, digits, '_' or '-', and not 'latest' or v<number>",
        ("digit.png", "--model", f"models:/{name}@prod"): f"error: --model models:/{name}@prod:"
        f" model '{name}' has no alias 'prod'; its aliases: champion (version 1);"
        " its versions: 1",
        ("digit.png", "--model", f"models:/{name}/7"): f"error: --model models:/{name}/7:"
        f" model '{name}' has no version 7; its versions: 1",
        ("digit.png", "--model", "models:/nosuch@champion"): "error: --model"
        f" models:/nosuch@champion: no registered model 'nosuch' in {store}; registered models:",
    }
    for args, line in expected.items():
        proc = predict(store, *args)
        assert proc.returncode == 1, (args, proc.stderr[-2000:])
        assert len(proc.stderr.splitlines()) == 1, (args, proc.stderr[-2000:])
        assert proc.stderr.startswith(line), (args, proc.stderr)
        assert proc.stdout == ""
    client = mlflow.MlflowClient(store)
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    aliases = client.get_registered_model(name).aliases
    assert {a: str(v) for a, v in aliases.items()} == {"champion": "1"}  # the bad alias: none


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.mark.slow
@pytest.mark.services
def test_mlflow_server_serves_the_run(short_run, tmp_path):
    result, store = short_run
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start: " + (tmp_path / "server.log").read_text())
        api = f"{base}/api/2.0/mlflow"
        run_id = result["run_id"]
        run = get(f"{api}/runs/get?run_id={run_id}")["run"]
        assert run["info"]["status"] == "FINISHED"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["num_units"] == "64"
        history = get(f"{api}/metrics/get-history?run_id={run_id}&metric_key=val_acc")["metrics"]
        assert [m["step"] for m in history] == [200, 400]
        artifacts = get(f"{api}/artifacts/list?run_id={run_id}&path=test_report")["files"]
        assert {"test_report/confusion_matrix.png"} <= {f["path"] for f in artifacts}
        # The model, as the UI's run page finds it: a logged model of this run, with its files.
        search = {"experiment_ids": [run["info"]["experiment_id"]]}
        models = post(f"{api}/logged-models/search", search)["models"]
        (model,) = [m for m in models if m["info"]["source_run_id"] == run_id]
        assert model["info"]["name"] == "model"
        model_id = model["info"]["model_id"]
        files = get(f"{api}/logged-models/{model_id}/artifacts/directories")["files"]
        assert "MLmodel" in {f["path"] for f in files}
        mlmodel_url = f"{base}/ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files"
        with urllib.request.urlopen(f"{mlmodel_url}?artifact_file_path=MLmodel") as response:
            assert b"pytorch" in response.read()
    finally:
        server.terminate()
        server.wait(timeout=30)
