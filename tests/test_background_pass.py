"""How a background edit samples (issue 27): the background's words alone as its prompt, chosen
from the source's cross-attention; one fresh draw over the whole frame; only the kept object's
core pinned to the source."""

from __future__ import annotations

import pytest
import torch

from contextedit.attention.control import BlendMask, BlendWords
from contextedit.attention.regions import OUTSIDE, CorePinned, RegionMask, background_prompts, word_score
from contextedit.pipelines import editing
from contextedit.pipelines.common import token_ids
from contextedit.pipelines.edit_options import EditSettings

from helpers import tiny

H = W = 8
FRAMES = 2


def _object() -> torch.Tensor:
    m = torch.zeros(FRAMES, 1, H, W)
    m[:, :, 1:4, 1:4] = 1
    return m


@pytest.fixture(scope="module")
def tokenizer():
    return tiny().tokenizer


def _corner() -> torch.Tensor:
    """(F, 1, H, W): a 3×3 patch in the lower right, away from the object."""
    m = torch.zeros(FRAMES, 1, H, W)
    m[:, :, 5:8, 5:8] = 1
    return m


def _prompts_from_attention(tokenizer, source: str, target: str, stands_out: dict) -> tuple[str, str] | None:
    """The background prompts :func:`assign_regions` would build, from constructed source attention:
    each named source word 0.1 everywhere and 0.1 + its value on the object (or on the region given
    with it)."""
    from contextedit.pipelines.edit_options import EditSettings
    from contextedit.pipelines.prompt_control import prompt_control

    control = prompt_control(tokenizer, token_ids(tokenizer, [source])[0], target, EditSettings().resolve(), (H, W),
                             source_prompt=source)
    groups, words = control.groups, control.word_tokens
    track = sorted(p for ps in words.values() for p in ps)
    probe = BlendMask(groups[0].words, (H, W), track=track)
    probs = torch.full((FRAMES, 2, H * W, 77), 0.1)
    obj = _object()
    for j, w in enumerate(source.split()):
        for p in words.get(j, []):
            value, region = stands_out[w] if isinstance(stands_out.get(w), tuple) else (stands_out.get(w, 0.0), obj)
            probs[..., p] += value * region.flatten(1).unsqueeze(1)
    probe.add(probs, probs, frames=FRAMES)
    scores = {j: sum(word_score(probe.token_deviation(p), 1 - obj) for p in ps) / len(ps) for j, ps in words.items()}
    return background_prompts(source, groups, scores)


@pytest.mark.parametrize("names", [1.0, -1.0])  # a model that marks what a word names with more or with less attention
def test_the_background_prompt_leaves_the_objects_words_out(tokenizer, names):
    """The words that stand out on the object the way the object's own words do are left out; the
    changed words and those siding with them stay, in order, and the source counterpart has the
    old words in their place. No word list: a surfing scene too."""
    shapes = _prompts_from_attention(tokenizer, "a red circle moving left on a black background",
                                    "a red circle moving left on a white background",
                                    {"red": 0.08 * names, "circle": 0.06 * names, "left": (0.05 * names, _corner()),
                                     "black": -0.05 * names, "background": -0.04 * names})
    # "left" stands out on a patch of the background: its side, but a sixth of the changed word's score
    assert shapes == ("a white background", "a black background")
    surf = _prompts_from_attention(tokenizer, "a man surfing a wave in the sea", "a man surfing a wave in a snowstorm",
                                  {"man": 0.08 * names, "surfing": 0.05 * names, "wave": -0.03 * names, "sea": -0.06 * names})
    assert surf == ("a wave a snowstorm", "a wave the sea")


def test_no_background_prompt_for_an_insertion(tokenizer):
    """An inserted background has no source words to compare the others with: the full prompt is kept."""
    assert _prompts_from_attention(tokenizer, "a man surfing", "a man surfing in a snowstorm", {"man": 0.08}) is None


def test_only_the_kept_objects_core_is_pinned_while_sampling():
    """The edited region grows by one latent cell into the 3×3 object: its centre cell alone follows
    the source; the composite still keeps the whole object (the RegionMask itself is unchanged)."""
    obj = _object()
    regions = RegionMask([BlendMask(BlendWords([2], [2]), (H, W))], [OUTSIDE], [1 - obj])
    pinned = CorePinned(regions)
    expected = torch.ones(FRAMES, 1, H, W)
    expected[:, :, 2, 2] = 0
    assert torch.equal(pinned.mask(), expected)
    assert torch.equal(regions.mask(), 1 - obj) and torch.equal(pinned.outside(), 1 - obj)
    pinned.begin_step()
    assert torch.equal(pinned.tokens(H * W), expected.flatten(1).unsqueeze(-1))


def test_the_shrinking_pin_grows_from_a_core_to_the_whole_object():
    """``background_pin`` shrink over six steps in three stages: on a 5×5 object the pinned part is
    its centre cell at steps 0–1 (the edited region grown by two cells), its 3×3 core at steps 2–3
    (one cell) and all of it at steps 4–5."""
    from contextedit.attention.regions import ShrinkingPin

    obj = torch.zeros(FRAMES, 1, H, W)
    obj[:, :, 1:6, 1:6] = 1
    regions = RegionMask([BlendMask(BlendWords([2], [2]), (H, W))], [OUTSIDE], [1 - obj])
    pin = ShrinkingPin(regions, steps=6)
    pinned = []
    for _ in range(6):
        pin.begin_step()
        pinned.append([(r, c) for r in range(H) for c in range(W) if pin.mask()[0, 0, r, c] == 0])
    centre, core = [(3, 3)], [(r, c) for r in range(2, 5) for c in range(2, 5)]
    whole = [(r, c) for r in range(1, 6) for c in range(1, 6)]
    assert pinned == [centre, centre, core, core, whole, whole]
    assert torch.equal(pin.tokens(H * W), (1 - obj).flatten(1).unsqueeze(-1))  # this step's mask
    assert torch.equal(regions.mask(), 1 - obj)


def _one_step_background_pass(unet, adapter=None, **settings) -> torch.Tensor:
    """One DDIM step of :func:`editing.sample_edit` on a background edit of :func:`_object` (its
    rest of the frame an OUTSIDE region), with ``settings``; returns the x_T it starts from."""
    from contextedit.attention.fusion import FusionStore
    from contextedit.pipelines.edit_options import EditSettings
    from contextedit.pipelines.inversion import SourcePass
    from contextedit.pipelines.prompt_control import PromptControl
    from contextedit.schedulers import ContextualDDIMScheduler

    x_T = torch.randn(FRAMES, 4, H, W, generator=torch.Generator().manual_seed(1))
    control = PromptControl(blend=RegionMask([BlendMask(BlendWords([2], [2]), (H, W))], [OUTSIDE], [1 - _object()]))
    scheduler = ContextualDDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(1)
    opts = EditSettings(steps=1, fusion=False, inversion="ddim", **settings).resolve()
    text = torch.zeros(1, 77, 8)
    editing.sample_edit(unet, scheduler, SourcePass(levels=[torch.zeros_like(x_T), x_T], store=FusionStore()), text, text,
                        opts, control, adapter=adapter)
    return x_T


@pytest.mark.parametrize(("area", "seed"), [("frame", 0), ("region", 0), ("frame", 7)])
def test_fresh_noise_goes_over_the_whole_frame_or_the_background(area, seed):
    """The first UNet call sees x_T with fresh noise mixed in: everywhere (one draw, as a plain
    sample starts) or outside the object only, drawn from ``background_seed``."""
    seen = []

    class Zero(torch.nn.Module):
        def forward(self, x, t, encoder_hidden_states=None, cross_attention_kwargs=None, return_dict=False):
            seen.append(x.clone())
            return (torch.zeros_like(x),)

    x_T = _one_step_background_pass(Zero(), background_noise=0.5, background_noise_area=area, background_seed=seed)
    obj = _object()
    first = seen[0][-FRAMES:]  # the conditional half of the guided batch
    noise = torch.randn(x_T.shape[1:], generator=torch.Generator().manual_seed(seed))
    mixed = 0.5 ** 0.5 * x_T + 0.5 ** 0.5 * noise
    region = torch.ones_like(obj) if area == "frame" else 1 - obj
    expected = region * mixed + (1 - region) * x_T
    assert torch.allclose(first, expected, atol=4 * torch.finfo(torch.float32).eps * 8)


def test_a_background_pass_samples_its_words_without_the_word_swap():
    """With ``background_prompt`` words the pass samples the background's words (``background_negative``
    words: guided from their source counterpart instead of the source prompt), and its control
    neither swaps nor reweights (both address the full prompt's tokens); with full, the prompt and
    the source prompt as before."""
    from contextedit.attention.control import PromptEdit
    from contextedit.pipelines.edit_options import EditSettings
    from contextedit.pipelines.prompt_control import PromptControl

    prompt = "a red circle moving left on a white background"
    obj = _object()
    control = PromptControl(edit=PromptEdit(torch.tensor([0]), torch.tensor([1.0])),
                            blend=RegionMask([BlendMask(BlendWords([2], [2]), (H, W))], [OUTSIDE], [1 - obj]),
                            background_prompt="a white background", background_source="a black background")
    texts = {prompt: "the prompt's states"}
    encode = lambda ps: f"states of {ps}"  # noqa: E731
    args = (prompt, texts, encode, "the source prompt's states", "the empty prompt's states")
    opts = lambda **kw: EditSettings(**{"inversion": "direct", "background_negative": "source", **kw})  # noqa: E731
    text, negative, sampled = editing._pass_prompt(control, opts(background_prompt="words"), *args)
    assert (text, negative) == ("states of ['a white background']", "the source prompt's states")
    assert sampled.edit is None and not sampled.aligned
    text, negative, _ = editing._pass_prompt(control, opts(background_prompt="words", background_negative="words"), *args)
    assert (text, negative) == ("states of ['a white background']", "states of ['a black background']")
    assert control.edit is not None and control.aligned  # the prompt's own control is left as it was
    for negative_setting in ("source", "words"):  # the full prompt's counterpart is the source prompt
        text, negative, sampled = editing._pass_prompt(control, opts(background_prompt="full", background_negative=negative_setting), *args)
        assert (text, negative, sampled) == ("the prompt's states", "the source prompt's states", control)
    text, negative, _ = editing._pass_prompt(control, opts(background_prompt="words", background_negative="empty"), *args)
    assert (text, negative) == ("states of ['a white background']", "the empty prompt's states")
    # the background pass of a two-change prompt takes mixed_background_negative where it is set
    both = opts(background_prompt="words", background_negative="source", mixed_background_negative="empty")
    assert editing._pass_prompt(control, both, *args, mixed=True)[1] == "the empty prompt's states"
    assert editing._pass_prompt(control, both, *args)[1] == "the source prompt's states"
    unset = opts(background_prompt="words", background_negative="words")
    assert editing._pass_prompt(control, unset, *args, mixed=True)[1] == "states of ['a black background']"
    plain = PromptControl(edit=control.edit)  # not a background edit: its prompt, whatever the setting
    assert editing._pass_prompt(plain, opts(background_prompt="words"), *args) == ("the prompt's states",
                                                                                    "the empty prompt's states", plain)


@pytest.mark.parametrize("area", ["object", "frame"])
def test_the_adapters_bias_acts_on_the_kept_object_only(monkeypatch, area):
    """With ``background_bias`` object the sampler's r_φ is the adapter's output on the kept object
    and zero where the background is redrawn; with frame it is the adapter's output everywhere."""
    given = {}
    monkeypatch.setattr(editing, "sample", lambda scheduler, model, x, *, context=None, **kw: given.setdefault("r", context) and x)
    adapter = lambda x, text, level, num_frames=None: x + 2.0  # noqa: E731  (r_φ of x̂0: not a constant)
    _one_step_background_pass(None, adapter=adapter, background_bias=area)
    obj = _object()
    x0_hat = torch.randn(FRAMES, 4, H, W, generator=torch.Generator().manual_seed(2))
    expected = (x0_hat + 2.0) * (obj if area == "object" else torch.ones_like(obj))
    assert torch.equal(given["r"](x0_hat, 500), expected)


def test_only_the_background_pass_of_a_two_change_prompt_is_marked_mixed(monkeypatch):
    """``_by_region`` samples the rest of the frame (marked ``mixed``: its negative may differ) and
    then the objects (not marked), each with only its own changes applied to the source prompt."""
    from contextedit.attention.regions import INSIDE, ChangeGroup
    from contextedit.pipelines.prompt_control import PromptControl

    source = "a red circle moving left on a black background"
    words = BlendWords([0], [0])
    control = PromptControl(groups=[ChangeGroup(words, "", (1, 2), ["blue"], side=INSIDE),
                                    ChangeGroup(words, "", (7, 8), ["white"], side=OUTSIDE)])
    calls = []

    def sample_prompt(text, what, control=None, mixed=False):
        calls.append((text, mixed))
        return torch.zeros(FRAMES, 4, H, W), PromptControl()

    monkeypatch.setattr(editing, "decode_latents", lambda vae, x: x)
    monkeypatch.setattr(editing, "to_frames", lambda x: x)
    opts = EditSettings(composite="off")
    comps = type("Components", (), {"vae": None})()
    editing._by_region(control, source, sample_prompt, comps, lambda: None, opts)
    assert calls == [("a red circle moving left on a white background", True),
                     ("a blue circle moving left on a black background", False)]
