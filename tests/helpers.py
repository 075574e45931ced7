"""Small builders shared by the tests: clips of the shapes world and the tiny-random model."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from contextedit import video
from contextedit.testing import shapes
from contextedit.models.loading import load_components

MODEL = "tiny-random"
BENCH = Path(__file__).resolve().parents[1] / "bench"


@contextlib.contextmanager
def bench_script(name: str):
    """Import ``bench/<name>.py`` as a module for the duration of the block."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def interruptible() -> None:
    """``preexec_fn`` of a CLI child a test sends SIGINT to: Ctrl-C's default disposition, as in a
    user's shell, whatever the test process inherited (a child started with SIGINT ignored keeps
    it ignored, and Python then installs no KeyboardInterrupt)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def write_clip(path: Path, frames: int = 8, shape="circle", colour="red", background="black", direction="right", fps=8.0) -> Path:
    clip, _ = shapes.make_clip(shape, colour, background, direction, start=(20, 30), frames=frames)
    return video.write_video(clip, path, fps)


def tiny():
    return load_components(MODEL, "cpu", __import__("torch").float32)


def write_images(folder: Path, n: int = 4, captions: bool = True) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        spec = shapes.random_spec(rng)
        image, caption = shapes.make_image(spec["shape"], spec["colour"], spec["background"], rng=rng)
        Image.fromarray(image).save(folder / f"img{i}.png")
        if captions:
            (folder / f"img{i}.txt").write_text(caption)
    return folder


F32_EPS = torch.finfo(torch.float32).eps  # 2**-23: one ulp at 1.0


def f32_tol(*terms, ops: int) -> float:
    """An ``atol`` for two float32 implementations of one formula (ours against diffusers).

    ``terms`` are the summands of the formula (tensors or numbers, at the scale of the result:
    a coefficient times what it multiplies). Every float32 operation — a product, a sum, a
    quotient, a square root, or rounding a float64 coefficient to float32 — is exact up to a
    relative eps/2 of its result, and no intermediate exceeds Σ max|term| (before cancellation).
    With ``ops`` operations on the longest chain of either implementation, each result is
    within ops·eps/2·Σ max|term| of the exact value, so the two are within ops·eps·Σ max|term|.
    Rounding is relative to the summands, not to the result: where they cancel (x̂0 at large t),
    the bound says so instead of a fixed 1e-5 failing on another CPU.
    """
    scale = sum(float(torch.as_tensor(t).abs().max()) for t in terms)
    return ops * F32_EPS * scale


# --------------------------------------------------------------------------- the web UI's server

ROOT = Path(__file__).resolve().parents[1]


def ui_env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ui_server(tmp_path: Path, *extra: str, model: str = MODEL, edit_steps: int = 2):
    """``contextedit ui --model tiny-random`` in a subprocess on 127.0.0.1 and a free port, its runs
    in ``tmp_path/runs``; yields ``(url, runs, port)`` once it accepts connections."""
    import socket
    import subprocess
    import time

    port, runs = free_port(), tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "contextedit.cli", "ui", "--model", model, "--device", "cpu",
                             "--port", str(port), "--runs", str(runs), "--edit-steps", str(edit_steps), *extra], env=ui_env(),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the server did not start in 120 s"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", runs, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
