"""`contextedit ui`: the Gradio app driven through Gradio's own client (a real server in a
subprocess, on 127.0.0.1 and a free port), its run-name checks, and the one-line refusal when the
ui extra is not installed. Skipped where gradio or gradio_client is missing (the ui extra)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ui_env, ui_server

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "red-circle.mp4"


def test_without_gradio_the_command_says_how_to_install_it_and_exits_2():
    """A meta path finder refuses gradio, as on a machine without the ui extra."""
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('gradio', 'gradio_client'):\n"
            "            raise ImportError(f'No module named {name!r}')\n"
            "sys.meta_path.insert(0, Block())\n"
            "sys.argv = ['contextedit', 'ui', '--port', '7']\n"
            "from contextedit.cli import main\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ui_env(), timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and 'pip install -e ".[ui]"' in lines[0], lines
    assert "Traceback" not in result.stderr


def test_run_names_stay_inside_the_runs_folder(tmp_path):
    from contextedit.errors import InputError, UsageError
    from contextedit.ui.jobs import Jobs

    jobs = Jobs(runs=tmp_path / "runs")
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "manifest.json").write_text("{}")
    assert jobs.run_folder("a") == (tmp_path / "runs" / "a").resolve()
    for bad in ("../x", "..", ".", "a/../../x", "/etc", str(tmp_path), "a/b", ""):
        with pytest.raises(UsageError):
            jobs.run_folder(bad)
    with pytest.raises(InputError, match="no tuned run named"):
        jobs.run_folder("missing")
    assert jobs.list_runs() == ["a"]
    (tmp_path / "runs" / "a.mp4").write_text("")
    assert jobs.new_run_folder("x/a.mp4").name == "a-2"
    assert jobs.new_run_folder("x/b.mp4").name == "b"
    (tmp_path / "clip.mp4").write_text("not a video")
    with pytest.raises(InputError):  # checked as a video before any model is loaded
        jobs.tune(str(tmp_path / "clip.mp4"), "a cat", 1, 0)
    with pytest.raises(UsageError):
        jobs.tune(str(SAMPLE), "a cat", "two", 0)


@pytest.fixture()
def server(tmp_path):
    pytest.importorskip("gradio", reason="the web UI needs the ui extra: pip install -e \".[ui]\"")
    pytest.importorskip("gradio_client", reason="the API test needs gradio_client (installed with gradio)")
    with ui_server(tmp_path) as started:
        yield started


def _listening_addresses(port: int) -> set[str]:
    """The local addresses bound to ``port`` (Linux: /proc/net/tcp{,6}, state 0A = LISTEN)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.mark.slow
def test_tune_edit_and_runs_through_gradios_client(server):
    from gradio_client import Client, handle_file

    from contextedit import video as vio

    url, runs, port = server
    if os.path.exists("/proc/net/tcp"):  # bound to 127.0.0.1 only by default
        assert _listening_addresses(port) == {"0100007F"}, _listening_addresses(port)
    client = Client(url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")
    # exactly the endpoints and inputs: the page's further settings are no part of the API
    assert {name: [p["parameter_name"] for p in e["parameters"]] for name, e in api["named_endpoints"].items()} == {
        "/tune": ["video", "prompt", "steps", "seed"], "/edit": ["run", "prompts", "guidance"], "/runs": []}
    assert not api["unnamed_endpoints"]
    name = client.predict(handle_file(str(SAMPLE)), "a red circle", 2, 0, api_name="/tune")
    assert name == "red-circle" and (runs / name / "manifest.json").is_file()
    assert client.predict(api_name="/runs") == [name]

    files = client.predict(name, "a blue circle\na green square", 7.5, api_name="/edit")
    assert len(files) == 2
    for file in files:
        path = file if isinstance(file, str) else file["path"]
        assert Path(path).suffix == ".mp4" and vio.count_frames(path) == 8  # the tune's 8 frames

    with pytest.raises(Exception, match="not a folder name inside the runs folder"):
        client.predict("../x", "a cat", 7.5, api_name="/edit")
    with pytest.raises(Exception, match="not a video|could not|no frames|cannot|decode"):
        client.predict(handle_file(str(runs / name / "manifest.json")), "x", 1, 0, api_name="/tune")
    assert client.predict(api_name="/runs") == [name]  # the server kept running


def test_the_page_starts_from_the_models_recommended_guidance(tmp_path):
    """The page's guidance is the model folder's recommendation (tiny's contextedit.json says 3),
    else edit's built-in default (7.5), read from the files, not typed into the page."""
    import json

    from contextedit.models.tiny import TRAINED_TINY
    from contextedit.pipelines.edit_options import EditSettings
    from contextedit.settings import builtin_defaults
    from contextedit.ui.jobs import Jobs

    recommended = json.loads((TRAINED_TINY / "contextedit.json").read_text())["edit"]["guidance"]
    assert Jobs(runs=tmp_path, model="tiny").guidance() == recommended == 3.0
    assert Jobs(runs=tmp_path, model="tiny-random").guidance() == builtin_defaults(EditSettings)["guidance"] == 7.5


def test_the_pages_caption_and_score_models_are_tunes_and_evals_settings():
    """``ui --caption-model`` is tune's setting and ``--clip-model``… eval's, declared once (same help,
    same default), so the page captions and scores as the CLI does."""
    from dataclasses import fields

    from contextedit.options import EvalOptions, TuneOptions, UIOptions

    def declared(cls):
        return {f.name: (f.default, f.metadata["setting"]) for f in fields(cls)}

    ui, tune_, eval_ = declared(UIOptions), declared(TuneOptions), declared(EvalOptions)
    assert ui["caption_model"] == tune_["caption_model"]
    assert all(ui[name] == eval_[name] for name in ("clip_model", "pickscore_model", "dino_model"))
