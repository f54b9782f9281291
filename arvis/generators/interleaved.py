"""Interleaved text and image tokens on one causal stream (Chameleon's role in Orthus's recipe), discrete.

Team, "Chameleon: Mixed-Modal Early-Fusion Foundation Models", 2024, https://arxiv.org/abs/2405.09818, the base
of Orthus (Kou et al., 2024, https://arxiv.org/abs/2412.00127; upstream zhijie-group/Orthus). Facts in
``shared/reference/generators.md`` section 3.

Shapes: b batch, p prompt positions, l image tokens (the tokenizer's grid, row-major), n stream positions,
d width, V the stream vocabulary.

One vocabulary (:class:`StreamVocabulary`) holds the text words (id 0 pads, 1 is unknown), ``<bos>``, ``<eos>``,
``<boi>``, ``<eoi>``, Orthus's ``<image>`` placeholder and the tokenizer's image codes; one embedding table and one
LM head cover all of it. An image is written ``<boi>`` + l positions + ``<eoi>``. Every document starts with the
prompt segment ``<bos>`` + p prompt positions (left-padded; the padding hidden from every key, the empty prompt
being the null condition of guidance), then a body of one of three kinds (:data:`DOCUMENT_KINDS`):

* ``text-to-image``: ``<boi> I_i <eoi> <eos>`` under the caption of image i;
* ``image-to-text``: ``<boi> I_i <eoi> C_i <eos>`` under the empty prompt (captioning);
* ``interleaved``: ``<boi> I_i <eoi> C_j <boi> I_j <eoi> <eos>`` under the caption of i, with j the next row of
  the batch (text, image, text, image).

Training (:meth:`InterleavedGenerator.forward`) draws the kind of each row from ``document_mix`` and takes the
cross-entropy of every position from the last prompt position on (the prompt itself is the condition). In every
kind the first image sits at the same positions, so ``forward`` also returns the image-code logits that predict
it, (b, l, vocab_size), and ``step`` continues the text-to-image document: the contract's raster sampler
(``next-token``) draws an image from a prompt, and the ``interleaved`` sampler switches between text and image
modes on ``<boi>`` / ``<eoi>`` (captioning, interleaved documents) through :meth:`step_stream`.

Positions: 1D RoPE over the stream (Chameleon's). Deviations: a small word vocabulary instead of Chameleon's BPE
(65536 entries with the image codes), RoPE channel pairs interleaved as LlamaGen's (Chameleon's HF port rotates
halves; converting weights would permute q and k), trained from scratch.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import Tensor, nn

from arvis.conditions import Condition, as_condition
from arvis.generators.base import GENERATORS, IGNORE_INDEX, Generator, GeneratorOutput, StepOutput, check_batch
from arvis.generators.llama import (LlamaGeneratorConfig, PromptConfig, RotaryConfig, TokenGridConfig,
                                   TokenGridLayout, check_prompt_ids, reset_llama_parameters)
from arvis.nn.attention import causal_mask, with_key_padding
from arvis.nn.kv_cache import KVCache
from arvis.nn.linear import Linear
from arvis.nn.llama_trunk import LlamaTrunk
from arvis.nn.norms import RMSNorm
from arvis.nn.prompt import drop_prompt_rows
from arvis.nn.rope import RotaryTable, rope_table_1d

DOCUMENT_KINDS = ("text-to-image", "image-to-text", "interleaved")
PAD, UNKNOWN = 0, 1  # the text tokenizer's (arvis.text.TextTokenizer)


@dataclasses.dataclass(frozen=True)
class StreamVocabulary:
    """The stream's ids: words [0, T), then ``<bos>``, ``<eos>``, ``<boi>``, ``<eoi>``, ``<image>``, then the V
    image codes."""

    text_size: int
    image_size: int

    @property
    def bos(self) -> int:
        return self.text_size

    @property
    def eos(self) -> int:
        return self.text_size + 1

    @property
    def boi(self) -> int:
        return self.text_size + 2

    @property
    def eoi(self) -> int:
        return self.text_size + 3

    @property
    def placeholder(self) -> int:
        """Orthus's ``<image>``: the id of an image position whose input is a continuous latent."""
        return self.text_size + 4

    @property
    def image_offset(self) -> int:
        return self.text_size + 5

    @property
    def size(self) -> int:
        return self.image_offset + self.image_size

    def is_image(self, ids: Tensor) -> Tensor:
        """Whether each id is an image position (a code or the placeholder)."""
        return ids >= self.placeholder

    def text_choices(self, *, images: bool) -> Tensor:
        """(V,) bool: the ids text mode may draw: words (not the padding or the unknown word) and ``<eos>``, and
        ``<boi>`` when ``images``."""
        allowed = torch.zeros(self.size, dtype=torch.bool)
        allowed[2:self.text_size] = True
        allowed[self.eos] = True
        allowed[self.boi] = images
        return allowed


@dataclasses.dataclass
class Documents:
    """A batch of token streams, right-padded to n positions.

    Attributes:
        ids: (b, n) long stream ids fed at each position.
        latents: (b, n, e) float latents of the image positions (zero elsewhere), or None (discrete images).
        attendable: (b, n) bool, False at padding (hidden from every key).
        targets: (b, n) long, the id each position predicts (``IGNORE_INDEX``: none).
        target_latents: (b, n, e) float, the latent each position predicts where ``targets`` is an image
            position (zero elsewhere), or None.
    """

    ids: Tensor
    latents: Tensor | None
    attendable: Tensor
    targets: Tensor
    target_latents: Tensor | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class InterleavedConfig(LlamaGeneratorConfig, RotaryConfig, PromptConfig, TokenGridConfig):
    """The interleaved generator (trunk, Llama generator, prompt and grid fields inherited). ``vocab_size`` is the
    tokenizer's codebook, ``text_vocab_size`` the word vocabulary (required), ``class_dropout`` the probability
    that a training prompt is emptied (teaching the null prompt of guidance); ``num_classes`` is not read.

    Attributes:
        document_mix: probabilities of the training documents' kinds, in :data:`DOCUMENT_KINDS` order.
    """

    text_vocab_size: int | None = 32
    document_mix: tuple[float, float, float] = (0.5, 0.25, 0.25)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_prompt_fields()
        if self.text_vocab_size is None:
            raise ValueError("an interleaved generator embeds prompt words in its own table: give text_vocab_size")
        if len(self.token_grid) != 2 or min(self.token_grid) < 1:
            raise ValueError(f"token_grid must be two positive sides (rows, cols), got {self.token_grid}")
        if self.head_dim % 2:
            raise ValueError(f"head dim dim/num_heads ({self.head_dim}) must be even for RoPE")
        if len(self.document_mix) != len(DOCUMENT_KINDS) or min(self.document_mix) < 0 or not sum(self.document_mix) > 0:
            raise ValueError(f"document_mix must be {len(DOCUMENT_KINDS)} non-negative weights of {DOCUMENT_KINDS} "
                             f"with a positive sum, got {self.document_mix}")

    @property
    def max_length(self) -> int:
        """The longest stream decoding may feed: the prompt segment, two images and three text segments of up to
        p tokens (training documents are shorter)."""
        length = self.token_grid[0] * self.token_grid[1]
        return 1 + 4 * self.prompt_length + 2 * (length + 2)


@GENERATORS.register
class InterleavedGenerator(TokenGridLayout, Generator):
    """Text and discrete image tokens on one stream; see the module docstring."""

    config_class = InterleavedConfig
    samplers = ("next-token", "interleaved")

    def __init__(self, config: InterleavedConfig) -> None:
        super().__init__(config)
        self.stream = StreamVocabulary(config.text_vocab_size, config.vocab_size)
        self.tok_embeddings = nn.Embedding(self.stream.size, config.dim)
        self.tok_dropout = nn.Dropout(config.token_dropout)
        self.trunk = LlamaTrunk(config, RotaryTable(lambda: rope_table_1d(config.max_length, config.head_dim,
                                                                          config.rope_base)))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = Linear(config.dim, self.stream.size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, initializer_range) linear and embedding weights, unit norms, a zero LM head (as LlamaGen)."""
        reset_llama_parameters(self, self.config.initializer_range)

    @classmethod
    def fit_config(cls, config: InterleavedConfig, *, tokenizer, num_classes: int) -> InterleavedConfig:
        """The tokenizer's grid and codebook (the classes are not read: the condition is a prompt)."""
        return super().fit_config(config, tokenizer=tokenizer, num_classes=config.num_classes)

    # ---- conditions ---------------------------------------------------------------------------------------

    @property
    def condition_fields(self) -> frozenset[str]:
        return frozenset({"prompt"})

    @property
    def prompt_length(self) -> int:
        return self.config.prompt_length

    @property
    def prefix_length(self) -> int:
        """``<bos>``, the p prompt positions and ``<boi>`` before the first image token."""
        return self.config.prompt_length + 2

    def check_prompt(self, prompt: Tensor, mask: Tensor) -> None:
        super().check_prompt(prompt, mask)
        check_prompt_ids(prompt, self.prompt_length, self.config.text_vocab_size)

    def null_condition(self, batch_size: int, device: torch.device | str | None = None) -> Condition:
        """The empty prompt."""
        shape = (batch_size, self.prompt_length)
        return Condition(prompt=torch.zeros(shape, dtype=torch.long, device=device),
                         prompt_mask=torch.zeros(shape, dtype=torch.bool, device=device))

    def prompt_segment(self, condition: Condition) -> Tensor:
        """-> ids (b, 1 + p) of ``<bos>`` and the prompt (padding as id 0)."""
        prompt = condition.prompt.masked_fill(~condition.prompt_mask, PAD)
        bos = torch.full((prompt.shape[0], 1), self.stream.bos, dtype=torch.long, device=prompt.device)
        return torch.cat([bos, prompt], dim=1)

    @staticmethod
    def prompt_keys(condition: Condition) -> Tensor:
        """-> (b, 1 + p) bool, the prompt segment's keys other positions may attend to: ``<bos>`` and the real
        prompt tokens."""
        mask = condition.prompt_mask
        return torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)

    # ---- documents and teacher forcing --------------------------------------------------------------------

    def draw_kinds(self, batch_size: int, device: torch.device) -> Tensor:
        """(b,) long indices into :data:`DOCUMENT_KINDS`: text-to-image in eval mode, drawn from ``document_mix``
        in training (torch's global RNG, as dropout)."""
        if not self.training:
            return torch.zeros(batch_size, dtype=torch.long, device=device)
        weights = torch.tensor(self.config.document_mix, dtype=torch.float32, device=device)
        return torch.multinomial(weights, batch_size, replacement=True)

    def image_positions(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """images (b, l) long codes -> their stream ids (b, l) and no latents (a continuous generator feeds
        latents)."""
        return images + self.stream.image_offset, None

    def documents(self, images: Tensor, condition: Condition, kinds: Tensor | None = None) -> Documents:
        """The training documents of a batch (see the module docstring): images (b, l) codes (or, for a
        continuous generator, (b, l, e) latents), the prompts (the captions; the prompt segment of the
        text-to-image and interleaved kinds goes through the training-time prompt dropout) and kinds (b,) long
        (None: :meth:`draw_kinds`)."""
        stream, device = self.stream, images.device
        kinds = self.draw_kinds(images.shape[0], device) if kinds is None else kinds
        image_ids, latents = self.image_positions(images)
        dropped = self.drop_prompt_mask(condition.prompt_mask)
        rows = []
        for row in range(images.shape[0]):
            kind = DOCUMENT_KINDS[int(kinds[row])]
            partner = (row + 1) % images.shape[0]
            mask = dropped[row] if kind != "image-to-text" else torch.zeros_like(dropped[row])
            caption = condition.prompt[row][condition.prompt_mask[row]]
            segments = [(torch.tensor([stream.bos], device=device), None, True),
                        (condition.prompt[row].masked_fill(~mask, PAD), None, mask),
                        *self._image_segment(image_ids, latents, row)]
            if kind == "image-to-text":
                segments.append((caption, None, True))
            elif kind == "interleaved":
                segments += [(condition.prompt[partner][condition.prompt_mask[partner]], None, True),
                             *self._image_segment(image_ids, latents, partner)]
            segments.append((torch.tensor([stream.eos], device=device), None, True))
            rows.append(segments)
        return self._pack(rows, None if latents is None else latents.shape[-1],
                          None if latents is None else latents.dtype)

    def _image_segment(self, image_ids: Tensor, latents: Tensor | None, row: int) -> list:
        stream, device = self.stream, image_ids.device
        return [(torch.tensor([stream.boi], device=device), None, True),
                (image_ids[row], None if latents is None else latents[row], True),
                (torch.tensor([stream.eoi], device=device), None, True)]

    def _pack(self, rows: list, latent_dim: int | None, dtype) -> Documents:
        """Rows of segments (ids, latents or None, key mask: bool or (k,) tensor) -> right-padded Documents."""
        fulls, latent_rows, masks = [], [], []
        for segments in rows:
            ids = torch.cat([segment[0] for segment in segments])
            fulls.append(ids)
            masks.append(torch.cat([segment[2] if isinstance(segment[2], Tensor)
                                    else torch.full((len(segment[0]),), segment[2], device=ids.device)
                                    for segment in segments]))
            if latent_dim is not None:
                latent_rows.append(torch.cat([segment[1] if segment[1] is not None
                                              else torch.zeros(len(segment[0]), latent_dim, dtype=dtype,
                                                               device=ids.device) for segment in segments]))
        width = max(len(ids) for ids in fulls)  # the full documents, <eos> included
        batch, device = len(fulls), fulls[0].device
        full = torch.full((batch, width), PAD, dtype=torch.long, device=device)
        mask = torch.zeros(batch, width, dtype=torch.bool, device=device)
        full_latents = torch.zeros(batch, width, latent_dim, dtype=dtype, device=device) if latent_dim else None
        for row, ids in enumerate(fulls):
            full[row, :len(ids)] = ids
            mask[row, :len(ids)] = masks[row]
            if full_latents is not None:
                full_latents[row, :len(ids)] = latent_rows[row]
        targets = full[:, 1:].clone()
        targets[:, :self.prompt_length] = IGNORE_INDEX  # the prompt is the condition, not a target
        targets[~mask[:, 1:]] = IGNORE_INDEX  # padding, inside the prompt and after <eos>
        return Documents(ids=full[:, :-1], latents=None if full_latents is None else full_latents[:, :-1],
                         attendable=mask[:, :-1], targets=targets,
                         target_latents=None if full_latents is None else full_latents[:, 1:])

    def drop_prompt_mask(self, mask: Tensor) -> Tensor:
        """The training-time prompt dropout: each row emptied with probability ``class_dropout`` (a no-op in eval
        mode; torch's global RNG)."""
        return drop_prompt_rows(mask, self.config.class_dropout) if self.training else mask

    def embed_stream(self, ids: Tensor, latents: Tensor | None = None) -> Tensor:
        """ids (b, n) long (and latents (b, n, e), read by continuous generators) -> input embeddings (b, n, d)."""
        return self.tok_embeddings(ids)

    def run_trunk(self, documents: Documents) -> Tensor:
        """Teacher forcing of documents -> hidden states (b, n, d) before the norm."""
        ids = documents.ids
        x = self.tok_dropout(self.embed_stream(ids, documents.latents))
        mask = with_key_padding(causal_mask(ids.shape[1], device=ids.device), documents.attendable, ids.shape[1],
                                ids.shape[1])
        return self.trunk(x, mask=mask)

    def forward(self, tokens: Tensor, condition: Condition | Tensor, targets: Tensor | None = None, *,
                kinds: Tensor | None = None) -> GeneratorOutput:
        """Teacher forcing. tokens (b, l) long image codes, condition the prompts (their captions), kinds (b,) long
        document kinds (None: drawn, see :meth:`draw_kinds`) -> the cross-entropy of the documents, and logits
        (b, l, vocab_size) of the image codes at the positions predicting the first image."""
        tokens, condition = self.checked_batch(tokens, condition, targets)
        documents = self.documents(tokens, condition, self.checked_kinds(kinds, tokens.shape[0], tokens.device))
        logits = self.logits(self.run_trunk(documents))
        output = self.teacher_forcing_output(logits, documents.targets)
        is_image = self.stream.is_image(documents.targets)
        valid = documents.targets != IGNORE_INDEX
        correct = logits.argmax(-1) == documents.targets
        output.metrics["image_accuracy"] = ((correct & is_image).float().sum() / is_image.sum().clamp(min=1)).detach()
        text = valid & ~is_image
        output.metrics["text_accuracy"] = ((correct & text).float().sum() / text.sum().clamp(min=1)).detach()
        output.logits = self.first_image_logits(logits)
        return output

    def checked_batch(self, tokens: Tensor, condition: Condition | Tensor,
                      targets: Tensor | None) -> tuple[Tensor, Condition]:
        if targets is not None:
            raise ValueError(f"{type(self).__name__} builds its targets from the documents; pass targets=None")
        self.check_tokens(tokens)
        condition = self.check_condition(condition)
        check_batch(tokens, condition)
        return tokens, condition

    @staticmethod
    def checked_kinds(kinds: Tensor | None, batch_size: int, device: torch.device) -> Tensor | None:
        if kinds is None:
            return None
        if not isinstance(kinds, Tensor) or kinds.dtype != torch.long or tuple(kinds.shape) != (batch_size,) \
                or kinds.min() < 0 or kinds.max() >= len(DOCUMENT_KINDS):
            raise ValueError(f"kinds must be ({batch_size},) long indices into {DOCUMENT_KINDS}, got {kinds!r:.80}")
        return kinds.to(device)

    def first_image_logits(self, logits: Tensor) -> Tensor:
        """Document logits (b, n, V) -> (b, l, vocab_size): the image codes at the positions predicting the first
        image (``<boi>`` and the first l - 1 image positions)."""
        start = self.prompt_length + 1
        offset = self.stream.image_offset
        return logits[:, start:start + self.layout.length, offset:offset + self.vocab_size]

    # ---- heads --------------------------------------------------------------------------------------------

    def normed(self, hidden: Tensor) -> Tensor:
        """The final RMSNorm of hidden states (b, n, d) (the LM head's and a diffusion head's input)."""
        return self.norm(hidden)

    def logits(self, hidden: Tensor) -> Tensor:
        """Hidden states (b, n, d) -> stream logits (b, n, V) float32."""
        return self.output(self.norm(hidden)).float()

    # ---- decoding -----------------------------------------------------------------------------------------

    def new_cache(self, batch_size: int) -> KVCache:
        return self.trunk.new_cache(self.config.max_length)

    def attention_mask(self, condition: Condition, start: int, count: int, device: torch.device) -> Tensor:
        """The mask of ``count`` positions after ``start`` cached ones: causal, the prompt's padding hidden."""
        attendable = self.prompt_keys(condition)
        mask = causal_mask(count, start + count, device=device) if count > 1 else None
        return with_key_padding(mask, attendable, count, start + count)

    def step_stream(self, ids: Tensor, condition: Condition, cache: KVCache, *, latents: Tensor | None = None,
                    store: bool = True) -> StepOutput:
        """Feeds stream ids (b, n) (the first call starts with the prompt segment, :meth:`prompt_segment`; a
        continuous generator reads ``latents`` (b, n, e) at ``<image>`` positions) -> the stream logits (b, 1, V)
        and hidden state (b, 1, d) of the last fed position. ``store=False`` leaves the cache as it was. The
        condition is not checked here (a sampler checks it once)."""
        if ids.ndim != 2 or ids.dtype != torch.long:
            raise ValueError(f"expected (b, n) long stream ids, got {ids.dtype} {tuple(ids.shape)}")
        start, count = cache.length, ids.shape[1]
        if start + count > cache.max_length:
            raise ValueError(f"the stream would reach {start + count} positions, more than this generator's "
                             f"longest document ({cache.max_length})")
        mask = self.attention_mask(condition, start, count, ids.device)
        hidden = self.trunk(self.embed_stream(ids, latents), mask=mask, cache=cache, store=store)[:, -1:]
        return StepOutput(logits=self.logits(hidden), hidden=hidden)

    def prefix_ids(self, condition: Condition) -> Tensor:
        """(b, p + 2): the prompt segment and ``<boi>``, the prefix of text-to-image decoding."""
        ids = self.prompt_segment(condition)
        return torch.cat([ids, torch.full_like(ids[:, :1], self.stream.boi)], dim=1)

    def step(self, tokens: Tensor | None, condition: Condition | Tensor, cache: KVCache, *,
             output: Literal["logits", "hidden", "both"] = "logits", store: bool = True) -> Tensor | StepOutput:
        """Text-to-image decoding: the prompt segment and ``<boi>`` (``tokens=None``, first call; the condition
        is checked then) or the next (b, n) image codes -> the image-code logits (b, 1, vocab_size) of the next
        image token (``"hidden"``: its hidden state (b, 1, d); ``"both"``: a :class:`StepOutput`)."""
        condition = as_condition(condition)
        self.check_step_order(tokens, cache.length, "the prompt segment")
        if tokens is None:
            condition = self.check_condition(condition)
            ids, latents = self.prefix_ids(condition), None
        else:
            ids, latents = self.image_positions(tokens)
        return self.image_step_output(self.step_stream(ids, condition, cache, latents=latents, store=store), output)

    def image_step_output(self, result: StepOutput, output: Literal["logits", "hidden", "both"]) -> Tensor | StepOutput:
        """What :meth:`step` returns of a stream step: the image-code logits (b, 1, vocab_size), the hidden state,
        or both."""
        offset = self.stream.image_offset
        logits = result.logits[..., offset:offset + self.vocab_size]
        if output == "hidden":
            return result.hidden
        return StepOutput(logits=logits, hidden=result.hidden) if output == "both" else logits

def _interleaved(**fields) -> InterleavedConfig:
    return InterleavedConfig(token_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0, **fields)


GENERATORS.add_preset("interleaved-tiny", _interleaved(vocab_size=64, token_grid=(4, 4), text_vocab_size=31,
                                                       prompt_length=10, dim=32, num_layers=2, num_heads=2,
                                                       ffn_multiple_of=32, qk_norm=True),
                      "2-layer discrete interleaved test model for vq-tiny (10 prompt words of the 31 caption words)")
GENERATORS.add_preset("interleaved-demo", _interleaved(vocab_size=256, token_grid=(8, 8), text_vocab_size=31,
                                                       prompt_length=12, dim=128, num_layers=4, num_heads=4,
                                                       ffn_multiple_of=64, qk_norm=True),
                      "discrete text + image baseline on the glyph captions for vq-demo (Orthus's stage 1)")
GENERATORS.add_preset("chameleon-7b", InterleavedConfig(vocab_size=8192, token_grid=(32, 32), text_vocab_size=57339,
                                                        prompt_length=1024, dim=4096, num_layers=32, num_heads=32,
                                                        ffn_multiple_of=256, qk_norm=True, token_dropout=0.0,
                                                        resid_dropout=0.0, ffn_dropout=0.0),
                      "Chameleon-7B's trunk (32 layers, 4096 wide, qk-norm; 8192 image codes of a 32x32 grid, "
                      "65536 stream ids in all)")
