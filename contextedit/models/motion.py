"""AnimateDiff motion modules (a diffusers ``MotionAdapter``) as the video UNet's temporal layers.

diffusers' motion modules are attached unchanged, not mapped onto this project's temporal layers:
``UNetMotionModel`` applies ``down_blocks[i].motion_modules[j]`` after the j-th resnet + attention
pair of down block i (after the resnet where a block has no attentions), the same for the up
blocks, and ``mid_block.motion_modules[j]`` after the mid block's j-th attention. Here each motion
module becomes a submodule ``motion_module`` of that ``attentions[j]`` (or ``resnets[j]``) of the
2-D UNet, applied by a forward hook on it, so the UNet's own forward, its attention processors
(sparse-causal self-attention, fusion, masks), the context adapter, windows and ControlNet residuals
are those of the plain inflated UNet. The number of frames comes from the
``cross_attention_kwargs={"num_frames": F}`` every video call passes; a forward pre-hook on the
UNet hands it to the hosts (it stays there, so gradient checkpointing's recomputation sees it).

With a motion adapter the project's own temporal layers are absent (the UNet is inflated without
them): the motion modules are the temporal layers. ``temporal`` tune trains the motion modules with
the attention queries (their tensors are saved in ``tuned.safetensors`` under their UNet names,
``….attentions.0.motion_module.…``); freeze keeps them as loaded (not saved; the run finds them
again by the adapter's id or folder, whose sha256 is checked).
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import torch

from ..errors import InputError, ModelNotFoundError

MOTION = "motion_module"       # the host's attribute, and the marker in parameter names
TEMPORAL_CHOICES = ("tune", "freeze")
_HOSTS = "_motion_hosts"       # the UNet's list of host module names


# --------------------------------------------------------------------------- loading


def _check_folder(path: Path) -> None:
    from .folders import refuse_pickle_weights

    refuse_pickle_weights(path)
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise ModelNotFoundError(f"`motion_adapter` {path} is not a MotionAdapter folder (config.json and .safetensors "
                                 "weights, as save_pretrained writes); pass such a folder or a hub id")


def folder_sha256(path: Path) -> str:
    """The sha256 of a folder's ``.safetensors`` weights: the file's own where there is one, else one
    over the sorted ``name sha256`` lines of all of them."""
    from ..runs import sha256_file

    files = sorted(path.glob("*.safetensors"))
    if len(files) == 1:
        return sha256_file(files[0])
    return hashlib.sha256("".join(f"{f.name} {sha256_file(f)}\n" for f in files).encode()).hexdigest()


def load_motion_adapter(spec: str | Path) -> tuple[torch.nn.Module, dict]:
    """``(MotionAdapter, record)`` for a hub id (the local cache first; ``HF_HUB_OFFLINE``
    respected) or a local folder, safetensors only. The record is ``{"id": …}`` for a hub id and
    ``{"folder": …, "sha256": …}`` for a folder."""
    from diffusers import MotionAdapter

    from .loading import from_pretrained_or_hub

    def load(source: str, local_files_only: bool):
        return MotionAdapter.from_pretrained(source, use_safetensors=True, local_files_only=local_files_only)

    try:
        adapter = from_pretrained_or_hub(load, str(spec), "`motion_adapter`", check_folder=_check_folder,
                                         folder_hint="pass a folder written by MotionAdapter.save_pretrained")
    except ModelNotFoundError as exc:  # the shared message offers a `tiny` model, which motion adapters lack
        raise ModelNotFoundError(str(exc).replace(" or use `motion_adapter` tiny", "")) from exc
    path = Path(spec).expanduser()
    record = {"folder": str(path.resolve()), "sha256": folder_sha256(path)} if path.is_dir() else {"id": str(spec)}
    return adapter.requires_grad_(False).eval(), record


def record_source(record: dict) -> str:
    return record.get("folder") or record["id"]


def check_recorded_motion(record: dict, run: str | Path) -> None:
    """A run's motion-adapter folder, where it was and unchanged, or one line saying what is needed."""
    from .single_file import check_unchanged

    if "folder" in record:
        check_unchanged(record["folder"], record["sha256"], f"run {run} was tuned with the motion adapter",
                        missing="put it back at that path, or tune again", changed="restore that adapter, or tune again",
                        digest_of=folder_sha256, present=Path.is_dir)


# --------------------------------------------------------------------------- attaching


def host_pairs(unet: torch.nn.Module, adapter: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(host module name, motion module)`` for every motion module of ``adapter``, placed as
    ``UNetMotionModel.from_unet2d`` places it; InputError where the adapter does not fit ``unet``."""
    pairs = []

    def block_pairs(kind: str, blocks, motion_blocks) -> None:
        if len(blocks) != len(motion_blocks):
            raise InputError(f"the motion adapter has {len(motion_blocks)} {kind} blocks, the model {len(blocks)}; "
                             "use a motion adapter made for this model's family")
        for i, (block, motion) in enumerate(zip(blocks, motion_blocks)):
            hosts = "attentions" if getattr(block, "attentions", None) is not None else "resnets"
            if len(getattr(block, hosts)) != len(motion.motion_modules):
                raise InputError(f"{kind}_blocks.{i} has {len(getattr(block, hosts))} layers, the motion adapter "
                                 f"{len(motion.motion_modules)}; use a motion adapter made for this model")
            pairs.extend((f"{kind}_blocks.{i}.{hosts}.{j}", m) for j, m in enumerate(motion.motion_modules))

    block_pairs("down", unet.down_blocks, adapter.down_blocks)
    block_pairs("up", unet.up_blocks, adapter.up_blocks)
    if adapter.mid_block is not None:
        attentions = getattr(unet.mid_block, "attentions", None) or []
        if len(attentions) != len(adapter.mid_block.motion_modules):
            raise InputError(f"the model's mid block has {len(attentions)} attentions, the motion adapter "
                             f"{len(adapter.mid_block.motion_modules)} motion modules; use one made for this model")
        pairs.extend((f"mid_block.attentions.{j}", m) for j, m in enumerate(adapter.mid_block.motion_modules))
    return pairs


def attach_motion_modules(unet: torch.nn.Module, adapter: torch.nn.Module, temporal: str = "tune") -> torch.nn.Module:
    """Give ``unet`` (in place) the motion modules of ``adapter``: copies when ``temporal`` is tune (the
    adapter is never changed), the adapter's own (frozen, shared) modules when freeze."""
    if temporal not in TEMPORAL_CHOICES:
        raise InputError(f"`temporal` must be one of {', '.join(TEMPORAL_CHOICES)} (got {temporal!r})")
    first = next(unet.parameters())
    names = []
    for name, module in host_pairs(unet, adapter):
        host = unet.get_submodule(name)
        channels = getattr(module, "in_channels", None)
        width = getattr(host, "in_channels", None) if not hasattr(host, "out_channels") else host.out_channels
        if channels is not None and width is not None and channels != width:
            raise InputError(f"the motion module for {name} has {channels} channels, the model {width}; "
                             "use a motion adapter made for this model")
        module = copy.deepcopy(module) if temporal == "tune" else module
        host.add_module(MOTION, module.to(device=first.device, dtype=first.dtype).requires_grad_(False))
        if not getattr(host, "_motion_hooked", False):
            host.register_forward_hook(_apply_motion)
            host._motion_hooked = True
        names.append(name)
    setattr(unet, _HOSTS, names)
    unet.tune_motion = temporal == "tune"
    if not getattr(unet, "_motion_frames_hooked", False):
        unet.register_forward_pre_hook(_set_frames, with_kwargs=True)
        unet._motion_frames_hooked = True
    return unet


def has_motion(unet: torch.nn.Module) -> bool:
    return bool(getattr(unet, _HOSTS, None))


def is_motion_parameter(name: str) -> bool:
    return f".{MOTION}." in name


def motion_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every motion-module tensor of ``unet`` by its UNet name."""
    return {n: p.detach() for n, p in unet.named_parameters() if is_motion_parameter(n)}


def _set_frames(unet, args, kwargs):
    extra = kwargs.get("cross_attention_kwargs") or {}
    frames = int(extra.get("num_frames") or 1)
    for name in getattr(unet, _HOSTS, ()):
        unet.get_submodule(name).motion_frames = frames


def _apply_motion(host, args, output):
    motion = getattr(host, MOTION, None)
    if motion is None:
        return output
    frames = getattr(host, "motion_frames", 1)
    if isinstance(output, tuple):
        return (motion(output[0], num_frames=frames), *output[1:])
    if torch.is_tensor(output):
        return motion(output, num_frames=frames)
    output.sample = motion(output.sample, num_frames=frames)  # a Transformer2DModelOutput
    return output
