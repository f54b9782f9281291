"""Mixed-modal decoding: text mode and image mode in one loop, switching on ``<boi>`` / ``<eoi>`` (Chameleon, Orthus).

Shapes: b batch, l image tokens, n generated positions, V the stream vocabulary, e latent width.

Every step feeds one position per row and reads the stream logits and hidden state of the next
(:meth:`arvis.generators.interleaved.InterleavedGenerator.step_stream`). A row in **text mode** draws from the
logits of the ids text may take (words, ``<eos>`` once its document holds the asked number of images, ``<boi>``
while it holds fewer; upstream's logits processors suppress the others the same way) with the temperature,
top-k and top-p of the settings; drawing ``<boi>`` puts it in **image mode**, where the next l positions are drawn
as image tokens (:meth:`InterleavedSampler.draw_image`: guided, filtered image codes here; the ``diffusion-head``
sampler draws continuous latents), after which ``<eoi>`` is fed without a draw (upstream forces it) and the row is
back in text mode. A text segment longer than ``max_text_tokens`` is ended by force (``<boi>`` or ``<eos>``).
Rows switch modes independently: one pass serves the batch, and a row's draws use only its own generator, so
with per-sample generators a batch gives what its rows give one by one.

Guidance applies to image tokens only: the batch runs as [prompt; empty prompt] (the generator's null
condition), both halves fed the same positions, and image-mode rows mix the halves with the CFG schedule over the
l positions of each image. Deviation: upstream's uncond branch is a fixed second prompt ("Generate an image." for
text-to-image, "generate images" in interleaved documents) restarted at each ``<boi>``, so it sees only the
current image; here the null half carries the whole document under the empty prompt (the null condition the
generator was trained with by prompt dropout). For text -> image the two agree in kind; for the later images of a
document, guidance here amplifies the opening prompt, not the text generated before that image.

Entry points: ``__call__`` (text -> image, the contract's: (b, l) codes), :meth:`InterleavedSampler.caption`
(image -> text: (b, m) word ids) and :meth:`InterleavedSampler.interleave` (prompt -> text, image, text, image ...).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from arvis.conditions import Condition
from arvis.samplers.base import SAMPLERS, Sampler
from arvis.samplers.guidance import guidance_conditions
from arvis.samplers.logits import RandomSource, cfg_scale_at, filter_logits, sample_categorical
from arvis.samplers.settings import CategoricalSettings, setting

PAD = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class InterleavedSettings(CategoricalSettings):
    """Settings of the ``interleaved`` sampler: the categorical draws of text and image codes, guidance of the
    image tokens, and the longest text segment."""

    max_text_tokens: int = setting(0, "longest text segment (caption) before it is ended (0: the prompt length)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_text_tokens < 0:
            raise ValueError(f"max_text_tokens must be >= 0 (0: the generator's prompt length), got "
                             f"{self.max_text_tokens}")


@dataclasses.dataclass
class Decoded:
    """What a decoding run generated after its prefix.

    Attributes:
        ids: (b, n) long stream ids (``<boi>``, image ids or ``<image>`` placeholders, ``<eoi>``, words, ``<eos>``;
            0 after a row's end).
        latents: (b, n, e) float latents at the placeholder positions (zero elsewhere), or None.
    """

    ids: Tensor
    latents: Tensor | None


def rows_of(rng: RandomSource, rows: list[int]) -> RandomSource:
    """The randomness of a subset of the batch: per-sample generators are selected, one generator is shared."""
    if rng is None or isinstance(rng, torch.Generator):
        return rng
    return [rng[row] for row in rows]


@SAMPLERS.register
class InterleavedSampler(Sampler):
    """Text and discrete image tokens, switching on ``<boi>`` / ``<eoi>``; see the module docstring."""

    name = "interleaved"
    config_class = InterleavedSettings
    description = "text and image modes on one stream, switching on <boi>/<eoi> (Chameleon; captioning, interleaving)"

    # ---- entry points -------------------------------------------------------------------------------------

    @torch.inference_mode()
    def __call__(self, model, condition: Condition | Tensor, *, rng: RandomSource = None) -> Tensor:
        """Text -> image: prompts of b samples -> (b, l) image codes (or the (b, l, e) latents of a continuous
        generator), from the prefix ``<bos>`` prompt ``<boi>``."""
        self.check_drivable(model)
        condition = model.check_condition(condition)
        decoded = self.decode(model, condition, model.prefix_ids(condition), None, rng=rng, images=1,
                              start_in_image=True)
        return self.first_image(model, decoded)

    @torch.inference_mode()
    def caption(self, model, images: Tensor, *, rng: RandomSource = None) -> Tensor:
        """Image -> text: images (b, l) codes (or (b, l, e) latents) -> (b, m) word ids, 0 after each caption's
        ``<eos>`` (m = ``max_text_tokens``), from ``<bos>`` (empty prompt) ``<boi>`` image ``<eoi>``."""
        self.check_drivable(model)
        model.check_tokens(images)
        condition = model.null_condition(images.shape[0], images.device)
        stream = model.stream
        prefix = model.prefix_ids(condition)  # <bos>, the empty prompt, <boi>
        image_ids, image_latents = model.image_positions(images)
        ids = torch.cat([prefix, image_ids, torch.full_like(prefix[:, :1], stream.eoi)], dim=1)
        latents = None
        if image_latents is not None:  # zero at the text and special positions
            latents = image_latents.new_zeros(*ids.shape, image_latents.shape[-1])
            latents[:, prefix.shape[1]:prefix.shape[1] + image_ids.shape[1]] = image_latents
        unguided = dataclasses.replace(self.settings, cfg_scale=1.0)
        decoded = self.decode(model, condition, ids, latents, rng=rng, images=0, settings=unguided)
        words = decoded.ids.masked_fill(decoded.ids >= stream.text_size, PAD)
        length = self.text_budget(model)
        return torch.nn.functional.pad(words, (0, max(0, length - words.shape[1])))[:, :length]

    @torch.inference_mode()
    def interleave(self, model, condition: Condition | Tensor, *, rng: RandomSource = None, images: int = 2) -> Decoded:
        """Prompt -> a document of text and ``images`` images after ``<bos>`` prompt: ``<eos>`` is suppressed
        until it holds them and ``<boi>`` after."""
        self.check_drivable(model)
        condition = model.check_condition(condition)
        if images < 1:
            raise ValueError(f"an interleaved document needs at least one image, got images={images}")
        return self.decode(model, condition, model.prompt_segment(condition), None, rng=rng, images=images)

    # ---- the loop -----------------------------------------------------------------------------------------

    def text_budget(self, model) -> int:
        return self.settings.max_text_tokens or model.prompt_length

    def decode(self, model, condition: Condition, prefix: Tensor, prefix_latents: Tensor | None, *,
               rng: RandomSource, images: int, start_in_image: bool = False,
               settings: InterleavedSettings | None = None) -> Decoded:
        """Feeds ``prefix`` (b, k) stream ids (with latents (b, k, e) at placeholders) and decodes until every row
        has ended: with ``start_in_image`` after its first image, else at ``<eos>`` (allowed once a row holds
        ``images`` images). Raises ``ValueError`` when the longest such document does not fit the generator."""
        settings = settings or self.settings
        stream, length, batch = model.stream, model.layout.length, condition.batch_size
        budget = self.text_budget(model)
        longest = prefix.shape[1] + (length if start_in_image else images * (length + 2) + (images + 1) * budget)
        cache_length = model.config.max_length
        if longest > cache_length:
            raise ValueError(f"a document of {images} image(s) and text segments of up to {budget} tokens after this "
                             f"prefix may need {longest} positions; the generator holds {cache_length}: ask for fewer "
                             "images or a smaller max_text_tokens")
        if isinstance(rng, (list, tuple)) and len(rng) != batch:
            raise ValueError(f"got {len(rng)} per-sample generators for a batch of {batch}")
        guided = settings.guided and images > 0
        conditions = guidance_conditions(condition, model, settings) if guided else condition
        cache = model.new_cache(conditions.batch_size)
        device = prefix.device
        image_position = torch.full((batch,), 0 if start_in_image else -1, dtype=torch.long)  # -1: text mode
        images_done = torch.zeros(batch, dtype=torch.long)
        text_run = torch.zeros(batch, dtype=torch.long)
        ended = torch.zeros(batch, dtype=torch.bool)
        inputs, latents = prefix, prefix_latents
        width = self.latent_width(model)
        generated, generated_latents = [], []
        while not ended.all():
            out = model.step_stream(torch.cat([inputs, inputs]) if guided else inputs, conditions, cache,
                                    latents=None if latents is None else
                                    (torch.cat([latents, latents]) if guided else latents))
            next_ids = torch.full((batch,), PAD, dtype=torch.long, device=device)
            next_latents = None if width is None else torch.zeros(batch, width, device=device)
            image_rows = [row for row in range(batch) if not ended[row] and 0 <= image_position[row] < length]
            eoi_rows = [row for row in range(batch) if not ended[row] and image_position[row] == length]
            text_rows = [row for row in range(batch) if not ended[row] and image_position[row] < 0]
            if image_rows:
                ids, vectors = self.draw_image(model, out, image_rows, image_position[image_rows], guided, settings,
                                               rows_of(rng, image_rows))
                next_ids[image_rows] = ids
                if vectors is not None:
                    next_latents[image_rows] = vectors.to(next_latents.dtype)
                image_position[image_rows] += 1
            for row in eoi_rows:  # the image is complete: <eoi> is fed without a draw
                next_ids[row] = stream.eoi
                image_position[row] = -1
                images_done[row] += 1
                text_run[row] = 0
            if text_rows:
                drawn = self.draw_text(model, out.logits[:batch, -1][text_rows], images_done[text_rows] < images,
                                       text_run[text_rows] >= budget, settings, rows_of(rng, text_rows))
                next_ids[text_rows] = drawn
                for row, token in zip(text_rows, drawn.tolist(), strict=True):
                    if token == stream.boi:
                        image_position[row] = 0
                    elif token == stream.eos:
                        ended[row] = True
                    else:
                        text_run[row] += 1
            if start_in_image:  # text -> image ends with the first image's last token
                ended |= image_position == length
            generated.append(next_ids)
            generated_latents.append(next_latents)
            inputs = next_ids[:, None]
            latents = None if next_latents is None else next_latents[:, None]
        return Decoded(ids=torch.stack(generated, dim=1),
                       latents=None if width is None else torch.stack(generated_latents, dim=1))

    def latent_width(self, model) -> int | None:
        """The width e of the latents image mode draws, or None for image codes (here)."""
        return None

    def draw_text(self, model, logits: Tensor, may_open_image: Tensor, must_end: Tensor,
                  settings: InterleavedSettings, rng: RandomSource) -> Tensor:
        """The next text-mode ids of m rows from their stream logits (m, V): words, ``<boi>`` where
        ``may_open_image``, else ``<eos>``; a row that ``must_end`` its segment takes ``<boi>`` or ``<eos>``."""
        stream = model.stream
        allowed = stream.text_choices(images=True).to(logits.device).expand(logits.shape[0], -1).clone()
        allowed[:, stream.boi] = may_open_image.to(logits.device)
        allowed[:, stream.eos] = ~may_open_image.to(logits.device)
        logits = logits.masked_fill(~allowed, float("-inf"))
        logits = filter_logits(logits, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
        drawn = sample_categorical(logits, rng)
        forced = torch.where(may_open_image, stream.boi, stream.eos).to(drawn.device)
        return torch.where(must_end.to(drawn.device), forced, drawn)

    def draw_image(self, model, out, rows: list[int], positions: Tensor, guided: bool, settings: InterleavedSettings,
                   rng: RandomSource) -> tuple[Tensor, Tensor | None]:
        """The next image tokens of image-mode ``rows`` at image positions ``positions`` (m,) -> stream ids (m,)
        and latents (m, e) (None here: image codes drawn from the guided, filtered code logits)."""
        offset, batch = model.stream.image_offset, len(out.logits) // (2 if guided else 1)
        codes = out.logits[:, -1, offset:offset + model.vocab_size]
        logits = codes[rows]
        if guided:
            logits = self.guide_rows(logits, codes[batch:][rows], self.row_scales(positions, model.layout.length,
                                                                                    settings))
        logits = filter_logits(logits, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
        return sample_categorical(logits, rng) + offset, None

    @staticmethod
    def row_scales(positions: Tensor, length: int, settings: InterleavedSettings) -> Tensor:
        """(m,) float32 guidance scales of rows at image positions ``positions`` (m,) under the CFG schedule over
        an image's l tokens."""
        return torch.tensor([cfg_scale_at(settings.cfg_schedule, settings.cfg_scale, int(position), length,
                                          settings.cfg_start, settings.cfg_interval) for position in positions],
                            dtype=torch.float32)

    @staticmethod
    def guide_rows(cond: Tensor, uncond: Tensor, scales: Tensor) -> Tensor:
        """uncond + s·(cond − uncond) per row of (m, ...) predictions with scales (m,) (cond itself where s = 1)."""
        scale = scales.to(cond).reshape(-1, *([1] * (cond.ndim - 1)))
        return torch.where(scale == 1.0, cond, uncond + scale * (cond - uncond))

    @staticmethod
    def first_image(model, decoded: Decoded) -> Tensor:
        """The first image's (b, l) codes, or (b, l, e) latents, of runs that started in image mode."""
        length = model.layout.length
        if decoded.latents is not None:
            return decoded.latents[:, :length]
        return decoded.ids[:, :length] - model.stream.image_offset
