"""``lmtune serve`` (``lmtune.serve.http.server``): a busy port or a bad model is one error line and exit 2."""

import socket

from typer.testing import CliRunner

from lmtune.cli import app


def test_cli_serve_reports_a_busy_port(tiny_model_dir, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", str(tiny_model_dir), "--port", str(port),
                                          "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --port: cannot listen") and "Traceback" not in result.output


def test_cli_serve_reports_a_bad_model(tmp_path):
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "missing"), "--port", "0", "--state-dir",
                                      str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {tmp_path / 'missing'}: ")
