"""Regions of the changed words (issue 27): found from attention and the model's response, not from
a word list; several changes, each with its own region and settings; shape masks that hold both
shapes; the LocalBlend schedule; the pixel composite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from contextedit.attention import control as control_module
from contextedit.attention.control import BlendMask, BlendWords
from contextedit.attention.regions import INSIDE, OUTSIDE, RegionMask, change_groups, region_side
from contextedit.pipelines import editing
from contextedit.pipelines.background import RegionalOffsets, renoised
from contextedit.pipelines.common import token_ids
from contextedit.pipelines.composite import composite

from helpers import tiny

H = W = 8  # latent cells
FRAMES = 2


def _object() -> torch.Tensor:
    """(F, 1, H, W): a 3×3 object in the upper left."""
    m = torch.zeros(FRAMES, 1, H, W)
    m[:, :, 1:4, 1:4] = 1
    return m


def _probs(columns: dict[int, torch.Tensor], tokens: int = 77, level: float = 0.1) -> torch.Tensor:
    """Constructed cross-attention probabilities (F, heads, N, L): every column ``level`` everywhere,
    and each named column ``level`` + its map (F, 1, H, W) — where that word's attention stands out."""
    probs = torch.full((FRAMES, 2, H * W, tokens), level)
    for col, region in columns.items():
        probs[..., col] = probs[..., col] + region.flatten(1).unsqueeze(1)
    return probs


@pytest.fixture(scope="module")
def tokenizer():
    return tiny().tokenizer


def test_the_old_word_list_is_gone():
    assert not hasattr(control_module, "BACKGROUND_NOUNS") and not hasattr(control_module, "is_background_edit")


@pytest.mark.parametrize("polarity", ["more", "less"])
def test_a_background_word_edits_the_complement_and_an_attribute_word_the_object(tokenizer, polarity):
    """No word of these prompts was in the old list: the side comes from which way the changed word's
    constructed attention stands out on the man, read with the model's polarity."""
    source = "a man surfing in a snowstorm"
    obj = _object()
    names = 1.0 if polarity == "more" else -1.0  # how this model marks what a word names
    for target, sign, expected in (("a man surfing in a heatwave", -names, OUTSIDE),   # names the scene, not the man
                                   ("a robot surfing in a snowstorm", names, INSIDE)):  # names the man
        s_ids, t_ids = token_ids(tokenizer, [source])[0], token_ids(tokenizer, [target])[0]
        (group,) = change_groups(tokenizer, source, target, s_ids, t_ids)
        mask = BlendMask(group.words, (H, W), threshold=0.5)
        # the word's attention: 0.1 everywhere, and 0.1 + sign·0.08 on the man
        mask.add(_probs({p: sign * 0.08 * obj for p in group.words.source}),
                 _probs({p: sign * 0.08 * obj for p in group.words.target}), frames=FRAMES)
        segment = mask.segment()
        assert torch.equal(segment, obj)  # the man stands out, either way
        side, evidence = region_side(segment, mask.deviation(), polarity)
        assert side == expected
        assert evidence["attention_inside"] == pytest.approx(sign, rel=1e-5)  # normalised to ±1 on the man
        regions = RegionMask([mask], [side], [1 - segment if side == OUTSIDE else None])
        if side == OUTSIDE:  # the complement of the object, not grown: the object is kept as it is
            assert torch.equal(regions.mask(), 1 - obj) and torch.equal(regions.outside(), 1 - obj)
        else:  # the object grown by one latent cell, and no background settings anywhere
            grown = torch.nn.functional.max_pool2d(obj, 3, stride=1, padding=1)
            assert torch.equal(regions.mask(), grown) and regions.outside() is None


def test_the_applied_prompt_makes_only_the_chosen_changes(tokenizer):
    from contextedit.attention.regions import applied

    source = "a red circle moving left on a black background"
    target = "a blue circle moving left on a white background"
    groups = change_groups(tokenizer, source, target, token_ids(tokenizer, [source])[0], token_ids(tokenizer, [target])[0])
    assert applied(source, groups) == target
    assert applied(source, groups[1:]) == "a red circle moving left on a white background"
    assert applied(source, []) == source


def test_two_changes_make_two_groups_each_with_its_partial_prompt(tokenizer):
    source = "a red circle moving left on a black background"
    target = "a blue circle moving left on a white background"
    s_ids, t_ids = token_ids(tokenizer, [source])[0], token_ids(tokenizer, [target])[0]
    groups = change_groups(tokenizer, source, target, s_ids, t_ids)
    assert [g.partial_prompt for g in groups] == ["a blue circle moving left on a black background",
                                                  "a red circle moving left on a white background"]
    words = lambda ids, ps: [tokenizer.convert_ids_to_tokens([int(ids[p])])[0].replace("</w>", "") for p in ps]  # noqa: E731
    assert [words(s_ids, g.words.source) for g in groups] == [["red"], ["black"]]
    assert [words(t_ids, g.words.target) for g in groups] == [["blue"], ["white"]]


def test_two_regions_are_blended_each_with_its_own_settings():
    """Colour inside the object, background outside it: the union may change, the guidance and the
    direct-inversion offset shares are each region's own."""
    obj = _object()
    colour = BlendMask(BlendWords([1], [1]), (H, W), threshold=0.5)
    colour.add(_probs({1: obj}), _probs({1: obj}), frames=FRAMES)
    background = BlendMask(BlendWords([2], [2]), (H, W))
    regions = RegionMask([colour, background], [INSIDE, OUTSIDE], [None, 1 - obj])
    grown = torch.nn.functional.max_pool2d(obj, 3, stride=1, padding=1)
    assert torch.equal(regions.mask(), torch.maximum(grown, 1 - obj))
    assert torch.equal(regions.outside(), 1 - obj)
    # offsets: outside ← share_out · offset at the background guidance; the object ← offset_inside · its own
    inner, outer = [torch.full((FRAMES, 4, H, W), 2.0)], [torch.full((FRAMES, 4, H, W), 10.0)]
    offsets = RegionalOffsets(inner, outer, regions.outside(), offset_inside=0.5, share_out=0.25)
    got = offsets.at(0, regions.mask())
    assert torch.allclose(got[:, :, 2, 2], torch.tensor(2.0 * 0.5))     # inside the object
    assert torch.allclose(got[:, :, 6, 6], torch.tensor(10.0 * 0.25))   # the background
    # fresh noise goes into the outside region only, one draw for every frame
    x_T = torch.randn(FRAMES, 4, H, W, generator=torch.Generator().manual_seed(1))
    mixed = renoised(x_T, regions.outside(), 0.5)
    inside = obj.bool().expand_as(x_T)
    assert torch.equal(mixed[inside], x_T[inside])
    noise = torch.randn(x_T.shape[1:], generator=torch.Generator().manual_seed(0))
    expected = 0.5 ** 0.5 * x_T + 0.5 ** 0.5 * noise
    assert torch.allclose(mixed[~inside], expected[~inside], atol=4 * torch.finfo(torch.float32).eps * 8)


def test_a_shape_mask_holds_the_source_shape_and_the_target_words_map():
    """LocalBlend's mask is the union of both prompts' words (Prompt-to-Prompt), so a new shape
    larger than the old one is not clipped to it."""
    circle, square = torch.zeros(FRAMES, 1, H, W), torch.zeros(FRAMES, 1, H, W)
    circle[:, :, 3:5, 3:5] = 1
    square[:, :, 2:7, 2:7] = 1
    mask = BlendMask(BlendWords([3], [3]), (H, W), threshold=0.5)
    mask.add(_probs({3: circle}), _probs({3: square}), frames=FRAMES)  # source map: circle; target's own: square
    m = mask.mask().bool()
    assert m[circle.bool()].all() and m[square.bool()].all()


@pytest.mark.parametrize("steps, stop, expected", [(10, 1.0, list(range(10))), (10, 0.5, [0, 1, 2, 3, 4]), (20, 0.8, list(range(16)))])
def test_local_blend_acts_exactly_on_its_steps(steps, stop, expected):
    """The sampler reads the source level of step i only where LocalBlend acts: the indices are pinned."""
    from contextedit.pipelines.inversion import SourcePass
    from contextedit.attention.fusion import FusionStore
    from contextedit.pipelines.edit_options import EditSettings
    from contextedit.pipelines.prompt_control import PromptControl
    from contextedit.schedulers import ContextualDDIMScheduler

    class Zero(torch.nn.Module):  # ε = 0: the sampler runs, the UNet does not matter here
        def forward(self, x, t, encoder_hidden_states=None, cross_attention_kwargs=None, return_dict=False):
            return (torch.zeros_like(x),)

    levels = [torch.zeros(FRAMES, 4, H, W) for _ in range(steps + 1)]
    read = []

    class Logged(SourcePass):
        def level_after(self, i):
            read.append(i)
            return super().level_after(i)

    source = Logged(levels=levels, store=FusionStore())
    blend = BlendMask(BlendWords([], []), (H, W), user_mask=_object())
    scheduler = ContextualDDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(steps)
    opts = EditSettings(steps=steps, fusion=False, blend_stop=stop, inversion="ddim").resolve()
    text = torch.zeros(1, 77, 8)
    editing.sample_edit(Zero(), scheduler, source, text, text, opts, PromptControl(blend=blend))
    assert read == expected


def test_the_composite_keeps_the_source_object_and_heals_the_seam():
    """Pixels of a kept object come from the source; a halo the decoder drew around it is inpainted
    from the new background."""
    size, cell = 32, 4
    source = np.zeros((1, size, size, 3), np.uint8)
    source[0, 12:20, 12:20] = (220, 40, 40)                     # a red square on black
    edited = np.full((1, size, size, 3), 255, np.uint8)        # the new white background…
    edited[0, 10:22, 10:22] = (240, 160, 40)                    # …with an orange halo around the old object
    keep = torch.zeros(1, 1, size // cell, size // cell)
    keep[..., 3:5, 3:5] = 1                                     # the object's latent cells
    out = composite(edited, source, keep).astype(int)
    assert (np.abs(out[0, 13:19, 13:19] - (220, 40, 40)).max(-1) <= 2).all()    # the object's core: the source
    ring = np.zeros((size, size), bool)
    ring[9:23, 9:23], ring[11:21, 11:21] = True, False
    assert out[0][ring].min() >= 200                           # no halo: the seam takes the white around it
    far = np.ones((size, size), bool)
    far[6:26, 6:26] = False
    assert (out[0][far] == 255).all()                           # far from the object, the edit as it was


@pytest.mark.parametrize("standing_out, ratio, expected", [
    # readings as tiny measured them (BENCHMARKS.md, "Which side a word edits"); the sum decides
    (+0.06, 0.22, INSIDE),   # a colour word on a gray clip: the sign alone says "the rest"
    (-0.04, 0.34, INSIDE),   # a shape word: a third of its response spills outside
    (+0.27, 0.15, OUTSIDE),  # a background word the model answers by redrawing its object
    (+0.04, 0.61, OUTSIDE),  # a background word on a black clip: weak attention, clear response
    (-0.10, 1.20, OUTSIDE),  # most of the response is outside: the rest, whatever the attention says
])
def test_the_side_is_read_from_the_attention_and_the_response_together(standing_out, ratio, expected):
    from contextedit.attention.regions import OUTSIDE_SCORE, RESPONSE_WEIGHT

    obj = _object()
    deviation = standing_out * obj
    response = 1.0 * obj + ratio * (1 - obj)
    side, evidence = region_side(obj, deviation, "less", response)
    assert side == expected
    eps = 8 * torch.finfo(torch.float32).eps  # a mean over the object's cells, then a ratio of two
    assert evidence["response_ratio"] == pytest.approx(ratio, rel=eps)
    assert evidence["outside_score"] == pytest.approx(standing_out + RESPONSE_WEIGHT * ratio, rel=eps, abs=eps)
    assert (evidence["outside_score"] >= OUTSIDE_SCORE) == (expected == OUTSIDE)
    # the model's polarity reads the attention's sign the other way round
    flipped, _ = region_side(obj, -deviation, "more", response)
    assert flipped == expected


def test_the_composite_leaves_the_old_background_inside_a_coarse_mask_behind():
    """A multiple edit (square → circle, black → gray): the objects pass drew the new circle on the
    old black background, as `tiny` decoded it (tests/data, 64 px, 4 px latent cells), and its mask
    is the old square's cells grown by one, half of it old background. The circle is pasted over the
    gray pass and the black around it is not (GrabCut started from the whole mask kept 688 of those
    pixels: a black square around the circle)."""
    from PIL import Image

    objects = np.asarray(Image.open(Path(__file__).parent / "data" / "objects-pass-circle.png").convert("RGB"))[None]
    rows = [(6, 15)] * 6 + [(7, 15), (9, 12)]                          # the mask's cells per latent row: [start, end)
    keep = torch.zeros(1, 1, 16, 16)
    for r, (a, b) in enumerate(rows):
        keep[0, 0, r, a:b] = 1
    edited = np.full_like(objects, 128)                                # the rest of the frame's pass: gray
    out = composite(edited, objects, keep).astype(int)
    circle = objects[0, ..., 1] > 120
    inside = cv2_erode(circle, 1)
    assert inside.sum() > 200 and (out[0][inside] == objects[0][inside]).all()  # the circle: the objects pass
    coarse = np.kron(keep[0, 0].numpy(), np.ones((4, 4))) > 0
    around = coarse & ~cv2_dilate(circle, 2)
    assert around.sum() > 400 and (np.abs(out[0][around] - 128).max(-1) <= 2).all()  # the old black stays behind


def cv2_erode(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2

    return cv2.erode(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def cv2_dilate(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def test_composites_paste_the_clips_own_frames_read_once_and_decode_only_without_them():
    """The kept region is pasted from the clip as tuned, not from the VAE round trip of its latents
    (on `tiny` that rounds a square's corners, and the oracle then reads another shape); frames of
    another size or count than the latents say are not the clip's, and the latents are decoded."""
    from contextedit.pipelines.common import decode_latents
    from contextedit.pipelines.editing import _originals
    from contextedit.video import to_frames
    from helpers import tiny

    comps = tiny()
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    size = 8 * comps.vae_scale_factor
    clip = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    reads = []
    original = _originals(comps, latents, lambda: reads.append(1) or clip)
    assert original() is clip and original() is clip and len(reads) == 1
    decoded = to_frames(decode_latents(comps.vae, latents))
    for wrong in (clip[:, :-8], clip[:1]):
        assert np.array_equal(_originals(comps, latents, lambda: wrong)(), decoded)
    assert np.array_equal(_originals(comps, latents, None)(), decoded)
