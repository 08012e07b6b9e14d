"""Every command pointed at a wrong store answers within seconds, in one line, exit 1: a closed
port, an HTTP server that is not MLflow's, a database server that does not answer, an experiment
that is not there (Store.check, which every command makes before its work)."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import ROOT

from lstm_mnist.tracking import Store
from lstm_mnist.tracking.store_check import API_TIMEOUT_S, short_requests

pytestmark = pytest.mark.slow  # ~2 s a command (its imports), a dozen of them

# each command with the fewest arguments it runs with; the store is added after them
COMMANDS = {
    "sweeps list": ["sweeps.py", "list"],
    "sweeps show latest": ["sweeps.py", "show", "latest"],
    "compare": ["compare.py"],
    "predict": ["predict.py", "digit.png"],
    "predict --model": ["predict.py", "digit.png", "--model", "models:/lstm-mnist@champion"],
    "clean": ["clean.py"],
}
ALL = [*COMMANDS, "train"]


def free_port() -> int:
    """A port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(
    tmp_path, name: str, uri: str, *extra: str
) -> tuple[subprocess.CompletedProcess, float]:
    """The command `name` against the store `uri`, as a user runs it; and its seconds."""
    if name == "train":
        argv = ["train.py", f"logger.tracking_uri={uri}", f"hydra.run.dir={tmp_path}/outputs"]
    else:
        argv = [*COMMANDS[name], "--tracking-uri", uri]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / argv[0]), *argv[1:], *extra],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,  # a hang (MLflow's own retries take minutes) fails here
    )
    return proc, time.monotonic() - started


def the_one_line(proc: subprocess.CompletedProcess, seconds: float) -> str:
    """The command failed within 10 s with exactly one line on stderr, `error: ...`: that line."""
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert seconds < 10, f"{seconds:.1f} s"
    return lines[0]


@contextmanager
def http_server(answer) -> Iterator[str]:
    """An HTTP server on 127.0.0.1, in a thread, whose every GET and POST `answer(path)` answers
    with (status, body); yields its address."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self) -> None:
            status, body = answer(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = reply

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("name", ALL)
def test_each_command_against_a_closed_port_answers_in_one_line_within_10_s(tmp_path, name):
    uri = f"http://127.0.0.1:{free_port()}"
    line = the_one_line(*command(tmp_path, name, uri))
    option = "logger.tracking_uri" if name == "train" else "--tracking-uri"
    assert line == (
        f"error: MLflow tracking server {uri} does not answer (ConnectionError); start it, or"
        f" point MLFLOW_TRACKING_URI / {option} at a store that works"
    )


@pytest.mark.parametrize("name", ["sweeps list", "train"])
def test_an_http_server_that_is_not_mlflow_is_named_in_one_line(tmp_path, name):
    with http_server(lambda path: (404, b"no such page")) as uri:
        line = the_one_line(*command(tmp_path, name, uri))
    assert line.startswith(
        f"error: {uri} is not an MLflow tracking server (GET /health answered 404 Not Found)"
    )


def test_a_server_that_answers_health_but_not_as_mlflow_is_named_in_one_line(tmp_path):
    # /health says OK, and anything else {} : its API's answer is checked, not only /health
    with http_server(lambda path: (200, b"OK" if path == "/health" else b"{}")) as uri:
        line = the_one_line(*command(tmp_path, "compare", uri))
    assert line.startswith(f"error: {uri} is not an MLflow tracking server (it answers MLflow")


def test_a_database_server_that_does_not_answer_is_named_in_one_line(tmp_path):
    uri = f"postgresql+psycopg2://lstm:secret@127.0.0.1:{free_port()}/mlflow"
    line = the_one_line(*command(tmp_path, "sweeps list", uri))
    shown = uri.replace(":secret@", ":***@")
    assert line.startswith(f"error: the database server of {shown} does not answer (")
    assert "secret" not in line


def test_a_database_url_whose_driver_is_not_installed_is_named_in_one_line(tmp_path):
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed here
    uri = f"postgresql://lstm@127.0.0.1:{free_port()}/mlflow"
    line = the_one_line(*command(tmp_path, "train", uri))
    assert line.startswith(f"error: logger.tracking_uri={uri}: its database driver psycopg is")
    assert "postgresql+psycopg2://" in line


def test_a_reading_command_names_the_experiments_of_a_store_without_its_own(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    Store(store, "someone-else").prepare()
    line = the_one_line(*command(tmp_path, "sweeps list", store))
    assert line.startswith(f"error: --experiment lstm-mnist: no such experiment in {store}")
    assert "(experiments there: " in line and "'someone-else'" in line


@pytest.mark.parametrize("name", ["clean", "predict --model"])
def test_a_reading_command_creates_no_store_where_there_is_none(tmp_path, name):
    line = the_one_line(*command(tmp_path, name, "sqlite:///mlflow.db"))
    assert line.startswith("error: --tracking-uri=sqlite:///mlflow.db: no MLflow store there (")
    assert not (tmp_path / "mlflow.db").exists()


def test_the_check_keeps_mlflow_http_settings_short_for_itself_only(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")  # the user's own, for the run
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    with short_requests():
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == str(API_TIMEOUT_S)
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
