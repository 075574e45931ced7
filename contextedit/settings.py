"""Settings declared once: each is a dataclass field made by :func:`setting`, carrying its
built-in default, help text, choices and flag; the CLI builds its options from these fields
(:mod:`contextedit.cli_options`), ``batch`` checks its jobs' options against them, and the
records (``manifest.json``, ``edits.json``) name them by the field names.

A setting left unset (``None``) is resolved once, by :func:`resolve`, in one order:

    explicit value > the run's manifest > the model's ``contextedit.json`` > the built-in default.

No torch here: ``contextedit --help`` reads these without loading a model library.
"""

from __future__ import annotations

import math
import os
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Callable, Iterable

from .errors import UsageError

UNSET = None  # a setting nobody set: resolve fills it


@dataclass(frozen=True)
class Setting:
    """What a field declares besides its type."""

    help: str
    default: Any = None               # the built-in default (None: none, or said in default_text)
    choices: tuple | Callable[[], tuple] | None = None  # a callable for a registry that grows
    flag: str | None = None           # e.g. "--blend/--no-blend", "--no-adapter"; default: --field-name
    default_text: str | None = None   # for --help, when the default is not a plain value
    from_run: bool = False            # an edit inherits it from the run it edits, when unset
    cli: bool = True                  # shown as a CLI option
    hidden: bool = False              # accepted, not listed in --help
    argument: bool = False            # a positional CLI argument


def setting(help: str, default: Any = None, *, choices: Iterable | None = None, flag: str | None = None,
            default_text: str | None = None, from_run: bool = False, cli: bool = True, hidden: bool = False,
            argument: bool = False, value: Any = UNSET, factory=None, required: bool = False) -> Field:
    """A settings field. Its dataclass default is ``value`` (unset: None, filled by :func:`resolve`
    from ``default``); ``factory`` for lists; ``required`` for a field with no default at all."""
    choices = choices if callable(choices) or choices is None else tuple(choices)
    meta = {"setting": Setting(help, default, choices, flag, default_text,
                               from_run, cli, hidden, argument)}
    if required:
        return field(metadata=meta)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=value, metadata=meta)


def same_as(cls, name: str) -> Field:
    """A field declared as ``cls``'s setting ``name`` (help, default, flag): a setting two commands
    share (``ui``'s ``caption_model`` is ``tune``'s) is written once."""
    f = {f.name: f for f in fields(cls)}[name]
    if f.default_factory is not MISSING:
        return field(default_factory=f.default_factory, metadata=f.metadata)
    return field(default=f.default, metadata=f.metadata)


def choices_of(s: Setting) -> tuple | None:
    return s.choices() if callable(s.choices) else s.choices


def declared(cls_or_obj) -> dict[str, tuple[Field, Setting]]:
    """The settings fields of a dataclass (or instance), by name, in declaration order."""
    return {f.name: (f, f.metadata["setting"]) for f in fields(cls_or_obj) if "setting" in f.metadata}


def builtin_defaults(cls) -> dict[str, Any]:
    """{name: built-in default} of the fields that resolve fills (their dataclass value is unset)."""
    return {name: s.default for name, (f, s) in declared(cls).items() if f.default is UNSET and f.default_factory is MISSING}


def effective_default(cls, name: str) -> str:
    """``[default: X]`` for --help, with the embedded tiny model's own value where it differs."""
    f, s = declared(cls)[name]
    if s.default_text is not None:
        text = s.default_text
    else:
        value = s.default if f.default is UNSET else f.default
        if f.default is MISSING or value is None or f.default_factory is not MISSING:
            return ""
        text = fmt(value)
    tiny = _tiny_defaults().get(getattr(cls, "SECTION", ""), {})
    if name in tiny and tiny[name] != s.default:
        text += f"; --model tiny: {fmt(tiny[name])}"
    return f"[default: {text}]"


def _tiny_defaults() -> dict:
    import json

    from .defaults import TINY_DEFAULTS

    try:
        return json.loads(TINY_DEFAULTS.read_text())
    except (OSError, ValueError):
        return {}


def fmt(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def resolve(opts, section: str, *, run: dict | None = None, model: dict | None = None) -> list[str]:
    """Fill each unset setting of ``opts``: the run's value (for settings marked ``from_run``), else
    the model's recommendation (``contextedit.json`` section ``section``), else the built-in
    default. Explicit values stay. Returns the names that came from the run."""
    recommended = (model or {}).get(section, {})
    defaults = builtin_defaults(type(opts))
    unknown = set(recommended) - set(defaults)
    if unknown:
        raise UsageError(f"the model's contextedit.json sets unknown {section} settings {sorted(unknown)}; "
                         f"known: {', '.join(defaults)}")
    inherited = []
    for name, (_, s) in declared(opts).items():
        if name not in defaults or getattr(opts, name) is not UNSET:
            continue
        if s.from_run and (run or {}).get(name) is not None:
            setattr(opts, name, run[name])
            inherited.append(name)
        else:
            setattr(opts, name, recommended.get(name, s.default))
    return inherited


def check_choices(opts) -> None:
    """Every set value of a field with choices is one of them."""
    for name, (_, s) in declared(opts).items():
        value = getattr(opts, name)
        if s.choices is not None and value is not None:
            check_choice(f"`{name}`", value, choices_of(s))


def check_choice(option: str, value: str, choices) -> None:
    if value not in choices:
        raise UsageError(f"{option} must be one of {', '.join(map(str, choices))} (got {value!r})")


def check_at_least_one(opts: object, *names: str) -> None:
    for name in names:
        value = getattr(opts, name)
        if value < 1:
            raise UsageError(f"`{name}` must be at least 1 (got {value})")


def check_lr(lr: float, hint: str = "", option: str = "`lr`") -> None:
    if not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"{option} must be a positive number (got {lr}){hint}")


def check_guidance(guidance: float) -> None:
    if not math.isfinite(guidance):
        raise UsageError(f"`guidance` must be a finite number (got {guidance}); 7.5 is usual")


def check_prompts(prompts: list[str], how: str) -> list[str]:
    if not prompts:
        raise UsageError(f"no prompt; {how}")
    return [check_prompt(p) for p in prompts]


def check_prompt(prompt: str, what: str = "`prompt`") -> str:
    """A prompt with something to read: zero-width and control characters alone (Unicode Cc/Cf)
    are as empty as spaces."""
    import unicodedata

    text = "" if prompt is None else str(prompt)
    if not "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf")).strip():
        shown = "" if not text else f" (it holds only invisible characters: {text!r})" if text.strip() else ""
        raise UsageError(f"{what} is empty{shown}; give a text prompt such as \"a red square moving right\"")
    return text.strip()


def check_share(name: str, value: float | None, meaning: str) -> None:
    if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise UsageError(f"`{name}` must be between 0 and 1 (got {value}); it is {meaning}")


def check_types(opts) -> None:
    """A value of the wrong type (a batch job's ``"guidance": "lots"``) is one line naming it."""
    hints = typing.get_type_hints(type(opts))
    for name in declared(opts):
        value = getattr(opts, name)
        if name in hints and not suits(value, hints[name]):
            raise UsageError(f"`{name}` must be {describe_type(hints[name])} (got {value!r})")


_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text", type(None): "null"}


def suits(value, hint) -> bool:
    """Whether ``value`` (from JSON or Python) has the annotated type; an int is a float, a bool no number."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(suits(value, h) for h in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint) or (object,)
        return isinstance(value, list) and all(suits(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:  # paths are given as Path objects too
        return isinstance(value, (str, os.PathLike))
    return isinstance(value, hint) if isinstance(hint, type) else True


def describe_type(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(h) for h in typing.get_args(hint))
    if origin is list:
        return f"a list of {describe_type((typing.get_args(hint) or (object,))[0])}"
    return _WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def device_setting() -> Field:
    """``device``, one declaration for every command that takes it."""
    return setting("auto | cpu | cuda | cuda:N (auto: CUDA when available).", value="auto", default_text="auto")


@dataclass(kw_only=True)
class RuntimeOptions:
    """Options of every command that loads a model (keyword-only, after each command's own)."""

    model: str | None = setting("Hub id, local diffusers folder, or 'tiny' (embedded).", flag="--model",
                                default_text="$CONTEXTEDIT_MODEL, else stable-diffusion-v1-5/stable-diffusion-v1-5")
    model_config: str | None = setting("For a single-file --model (.safetensors, SD-1/SD-2/SDXL): the diffusers config "
                                       "to map it onto, a hub id (from the local cache) or a folder.",
                                       default_text="the matching base model's hub id")
    lora: list[str] | None = setting("A LoRA .safetensors file (diffusers or kohya format) as FILE or FILE:SCALE, fused "
                                     "into the model's weights before inflation; repeatable. edit: the run's LoRAs "
                                     "unless given (--lora none: none).", flag="--lora", default_text="none; edit: the run's")
    device: str = device_setting()
    dtype: str = setting("auto | fp32 | fp16 | bf16 (auto: bf16/fp16 on GPU, fp32 on CPU).", value="auto",
                         default_text="auto")
    seed: int = setting("Random seed; the same inputs and seed give the same outputs.", value=0, default_text="0")
    overwrite: bool = setting("Replace existing outputs.", flag="--overwrite", value=False)
