"""What a demanding user found (issue 29), through the real CLI: playback speed, corrupt runs, a
tune replacing a run while an edit of it runs, Ctrl-C during a multi-prompt edit, a full disk,
a SIGKILL's leftovers, concurrent records and inputs that were accepted without a word."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from contextedit import video as vio
from contextedit.commands.edit_record import merge_output
from contextedit.fileio import HOST

from helpers import MODEL, interruptible, write_clip
from test_bad_input import CPU, PROMPT, ROOT, _snapshot, _tune_args, fails, invoke

EDIT = ["a blue circle moving right on a black background", "a green circle moving right on a black background",
        "a yellow circle moving right on a black background"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


pytestmark = pytest.mark.usefixtures("runs")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tuned")
    video = write_clip(folder / "clip.mp4", frames=8)  # 8 fps
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONTEXTEDIT_RUNS", str(folder / "runs"))
        result = invoke(_tune_args(video, folder / "run"))  # --frames 2 at the default stride 2
    assert result.exit_code == 0, result.stderr
    return folder / "run"


def _copy(tuned: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tuned, tmp_path / "run"))


def _edit_args(run: Path, *extra, prompts=EDIT[:1]):
    return ["edit", "--run", run, *[a for p in prompts for a in ("--prompt", p)], "--steps", "2", *CPU, *extra]


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "contextedit.cli", *[str(a) for a in args]]


# --------------------------------------------------------------------------- 3: playback speed


def test_outputs_play_at_the_source_rate_over_the_stride(tuned, tmp_path):
    """Every 2nd frame of an 8 fps clip plays at 4 fps, in the run, the edit and its record."""
    manifest = json.loads((tuned / "manifest.json").read_text())
    assert (manifest["fps"], manifest["source_fps"], manifest["stride"]) == (4.0, 8.0, 2)
    run = _copy(tuned, tmp_path)
    assert invoke(_edit_args(run)).exit_code == 0
    record = json.loads((run / "edits" / "edits.json").read_text())
    out = run / "edits" / record["outputs"][0]["file"]
    assert record["fps"] == 4.0 and vio.read_video(out, frames=None, stride=1).fps == pytest.approx(4.0)


def test_variable_frame_rate_uses_the_frames_own_times(tmp_path):
    """A VFR clip (ffmpeg concat with uneven durations): the selection plays in the source's time."""
    import imageio_ffmpeg
    from PIL import Image

    durations = [0.1, 0.5, 0.2, 0.7, 0.1, 0.4, 0.3, 0.2]
    lines = []
    for i, d in enumerate(durations):
        Image.fromarray(np.full((32, 32, 3), 30 * i, np.uint8)).save(tmp_path / f"f{i}.png")
        lines += [f"file 'f{i}.png'", f"duration {d}"]
    (tmp_path / "list.txt").write_text("\n".join(lines + [f"file 'f{len(durations) - 1}.png'"]) + "\n")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", "list.txt",
                    "-fps_mode", "vfr", "-pix_fmt", "yuv420p", "-vcodec", "libx264", "vfr.mp4"], cwd=tmp_path, check=True)
    clip = vio.read_video(tmp_path / "vfr.mp4", frames=4, stride=2)
    starts = np.cumsum([0] + durations)
    span = starts[6] - starts[0]  # frames 0, 2, 4, 6
    assert clip.playback_fps == pytest.approx(3 / span, abs=0.02 * 3 / span)
    assert abs(clip.playback_fps - clip.fps / 2) > 0.2  # the mean rate would be wrong here


# --------------------------------------------------------------------------- 5: corruption


def test_byte_flipped_latents_are_refused(tuned, tmp_path):
    run = _copy(tuned, tmp_path)
    data = bytearray((run / "latents.safetensors").read_bytes())
    data[-3] ^= 0xFF  # in the tensor data, past the header: safetensors still loads it
    (run / "latents.safetensors").write_bytes(bytes(data))
    fails(_edit_args(run), 2, "latents.safetensors", "sha256", "tune again", out=run / "edits")


@pytest.mark.parametrize("key,value,words", [("width", "abc", ("'width'", "integer")), ("fps", -3, ("'fps'", "positive")),
                                             ("frames", True, ("'frames'", "integer"))])
def test_manifest_fields_are_checked_by_type(tuned, tmp_path, key, value, words):
    run = _copy(tuned, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, key: value}))
    fails(_edit_args(run), 2, *words, out=run / "edits")


# --------------------------------------------------------------------------- 4: a tune replacing the run


@pytest.mark.slow  # 6 s
def test_edit_refuses_to_file_a_stale_edit_into_a_replaced_run(tuned, tmp_path):
    """A real ``tune --overwrite`` process replaces the run while the edit samples: the edit fails
    with one line and the new run holds no edit of the old weights."""
    from contextedit.commands.edit import EditOptions, edit
    from contextedit.errors import RunReplacedError
    from contextedit.progress import silent

    run = _copy(tuned, tmp_path)
    clip = write_clip(tmp_path / "clip.mp4", frames=8)
    retune = _cli(*_tune_args(clip, run, "--overwrite"))
    retune[retune.index(PROMPT)] = "a red circle moving left on a black background"
    state = {}

    def progress(description, total):  # the first sampling bar: a new tune lands meanwhile
        if description.startswith("editing") and not state:
            state["tune"] = subprocess.run(retune, capture_output=True, text=True, env=ENV, timeout=300)
        return silent(description, total)

    with pytest.raises(RunReplacedError, match="replaced"):
        edit(EditOptions(prompts=EDIT[:1], run=str(run), steps=2, device="cpu"), progress=progress)
    assert state["tune"].returncode == 0, state["tune"].stderr
    assert json.loads((run / "manifest.json").read_text())["source_prompt"].endswith("left on a black background")
    assert not (run / "edits").exists()


# --------------------------------------------------------------------------- 7: Ctrl-C, then the same command


@pytest.mark.slow
def test_sigint_mid_edit_then_rerun_finishes(tuned, tmp_path):
    """SIGINT after the first of three outputs → exit 130; the same command then makes only the
    other two, and all three equal an uninterrupted edit's byte for byte."""
    run = _copy(tuned, tmp_path)
    args = _edit_args(run, "--steps", "12", "--format", "frames", prompts=EDIT)
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=interruptible)
    try:
        deadline = time.monotonic() + 180
        while not (run / "edits" / "edits.json").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert proc.poll() is None, ("finished before the signal", proc.communicate())
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    first = json.loads((run / "edits" / "edits.json").read_text())["outputs"]
    assert 1 <= len(first) < 3
    result = invoke(args)
    assert result.exit_code == 0, result.stderr
    record = json.loads((run / "edits" / "edits.json").read_text())
    assert sorted(o["prompt"] for o in record["outputs"]) == sorted(EDIT)
    assert len(record["timings"]["sampling_s_per_prompt"]) == 3 - len(first)  # only the rest was sampled
    again = invoke(_edit_args(run, "--steps", "12", "--format", "frames", "--out", tmp_path / "whole", prompts=EDIT))
    assert again.exit_code == 0, again.stderr
    whole = _snapshot(tmp_path / "whole")
    assert {k: v for k, v in _snapshot(run / "edits").items() if "edits.json" not in k} == \
        {k: v for k, v in whole.items() if "edits.json" not in k}


def test_rerun_with_other_settings_still_needs_overwrite(tuned, tmp_path):
    run = _copy(tuned, tmp_path)
    assert invoke(_edit_args(run)).exit_code == 0
    done = invoke([a for a in _edit_args(run) if a != "--quiet"])  # the same command: nothing to do
    assert done.exit_code == 0 and "already" in done.stderr
    fails(_edit_args(run, "--guidance", "3"), 2, "already exists", "--overwrite")


# --------------------------------------------------------------------------- 8: a full disk


def test_full_disk_says_so_and_leaves_nothing(tmp_path):
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("tmpfs mount not permitted here")
    try:
        clip = write_clip(tmp_path / "clip.mp4", frames=8)
        line = fails(_tune_args(clip, disk / "run", "--checkpoint-every", "1", "--steps", "2"), 1, "no space left on",
                     str(disk), "needs about", "MB")
        assert "Traceback" not in line and list(disk.iterdir()) == []
        assert invoke(_tune_args(clip, tmp_path / "run")).exit_code == 0  # nothing blocks a rerun elsewhere
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# --------------------------------------------------------------------------- 10, 11: leftovers and records


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_process_leftovers_go_a_live_ones_stay(tuned, tmp_path):
    run = _copy(tuned, tmp_path)
    edits = run / "edits"
    edits.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_dir = edits / f".out.mp4.p{_dead_pid()}h{HOST}.0123abcd.tmp"
        dead_file = edits / f".x.mp4.p{_dead_pid()}h{HOST}.89abcdef.tmp.mp4"
        live_dir = edits / f".out.mp4.p{live.pid}h{HOST}.deadbeef.tmp"
        other_host = edits / f".out.mp4.p{_dead_pid()}h{'0' * 6 if HOST != '0' * 6 else '1' * 6}.01234567.tmp"
        for folder in (dead_dir, live_dir, other_host):
            folder.mkdir()
            (folder / "part").write_bytes(b"x")
        dead_file.write_bytes(b"partial")
        assert invoke(_edit_args(run)).exit_code == 0
        assert not dead_dir.exists() and not dead_file.exists()
        assert live_dir.is_dir() and other_host.is_dir()
    finally:
        live.kill()
        live.wait()


def test_concurrent_record_merges_keep_every_entry(tmp_path):
    """Four real processes merge 15 outputs each into one edits.json at the same moment."""
    # A barrier, not a fixed delay: each process says it has imported, then waits for "go".
    code = ("import sys, time; from pathlib import Path; from contextedit.commands.edit_record import merge_output\n"
            "out = Path(sys.argv[2]); (out / f'ready-{sys.argv[1]}').touch()\n"
            "while not (out / 'go').exists(): time.sleep(0.001)\n"
            "for i in range(15): merge_output(out, {'run': 'r'}, {'file': f'{sys.argv[1]}-{i}.mp4'})\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n), str(tmp_path)], env=ENV) for n in range(4)]
    deadline = time.time() + 120
    while len(list(tmp_path.glob("ready-*"))) < 4 and time.time() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.01)
    (tmp_path / "go").touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    files = {o["file"] for o in json.loads((tmp_path / "edits.json").read_text())["outputs"]}
    assert files == {f"{n}-{i}.mp4" for n in range(4) for i in range(15)}
    merge_output(tmp_path, {}, drop="0-0.mp4")
    assert len(json.loads((tmp_path / "edits.json").read_text())["outputs"]) == 59


# --------------------------------------------------------------------------- 12: said too little


@pytest.mark.parametrize("prompt", ["\u200b\u200b", "\x01\x02", "\u200d \ufeff"])
def test_invisible_prompts_are_refused(tuned, tmp_path, prompt):
    run = _copy(tuned, tmp_path)
    fails(["edit", "--run", run, "--prompt", prompt, *CPU], 2, "empty", "invisible", out=run / "edits")


def test_mask_of_another_aspect_is_resized_with_a_warning(tuned, tmp_path):
    from PIL import Image

    run = _copy(tuned, tmp_path)
    Image.fromarray(np.full((20, 50), 255, np.uint8)).save(tmp_path / "mask.png")
    result = invoke(_edit_args(run, "--mask", tmp_path / "mask.png"))
    assert result.exit_code == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warned) == 1 and "50x20" in warned[0] and "64x64" in warned[0] and "stretched" in warned[0]


@pytest.mark.parametrize("size", [(1, 1), (7, 13)])
def test_tiny_sources_are_upscaled_with_a_warning(tmp_path, size):
    frames = np.random.default_rng(0).integers(0, 255, (4, size[1], size[0], 3), np.uint8)
    clip = vio.write_video(frames, tmp_path / "small", 8.0, fmt="frames")
    result = invoke(_tune_args(clip, tmp_path / "run"))
    assert result.exit_code == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warned) == 1 and f"{size[0]}x{size[1]}" in warned[0] and "upscaled" in warned[0]


def test_model_folder_with_custom_classes_is_refused(tmp_path):
    from contextedit.models.loading import load_components, save_components

    folder = save_components(load_components(MODEL), tmp_path / "model")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "unet": ["my_lib", "MyUNet"]}))
    clip = write_clip(tmp_path / "clip.mp4", frames=8)
    args = _tune_args(clip, tmp_path / "run")
    args[args.index(MODEL)] = str(folder)
    fails(args, 2, "custom classes", "unet: my_lib.MyUNet", out=tmp_path / "run")
