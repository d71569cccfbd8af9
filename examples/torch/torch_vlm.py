"""A small multimodal model in PyTorch for the pipeline runtime (example code, not library API).

A ViT-like encoder ("vit") over image patches, whose last layer is followed by a projector into
the language model's width, feeds a decoder-only language model ("llm") with a token embedding,
causal attention, a vocabulary head and a next-token cross-entropy loss. It matches
examples/torch/torch-vlm.json: every module's layers, widths and heads are the spec's.

Conventions. Attention never crosses items: an image is one encoder item; a sample's language
sequence is [projected patch tokens of its images in item order, then its text tokens], as the
planner counts them (output_tokens_per_input_token = 1). The loss of a step is the sum over its
predicted text tokens of their cross-entropy times 1 / (predicted tokens of the step), so it does
not depend on how the step is cut into pieces.

Data. Every sample's patches and text are drawn from a generator seeded by (seed, step,
microbatch, sample), so every rank makes the same data without exchanging it. The text is
learnable: each token is the previous one plus a stride set by the sample's image count.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PATCH_DIM = 12  # a 2x2 RGB patch
MAX_PATCHES = 64


def module_specs(spec):
    """(vit, llm) ModuleSpecs of a pipeweaver ModelSpec shaped like torch-vlm.json."""
    llm = spec.modules[spec.backbone]
    feeders = spec.feeders(spec.backbone)
    if len(feeders) != 1 or spec.modules[feeders[0]].output_tokens_per_input_token != 1.0 or llm.vocab is None:
        raise ValueError("torch_vlm needs one encoder (1 output token per patch) feeding a backbone with a vocabulary")
    return spec.modules[feeders[0]], llm


class Block(nn.Module):
    """A pre-norm transformer layer; attention runs per item over `lengths` rows."""

    def __init__(self, hidden, ffn, heads, causal, swiglu):
        super().__init__()
        self.heads, self.causal, self.swiglu = heads, causal, swiglu
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.up = nn.Linear(hidden, 2 * ffn if swiglu else ffn)
        self.down = nn.Linear(ffn, hidden)

    def attention(self, x):
        n, h = x.shape
        q, k, v = self.qkv(x).view(n, 3, self.heads, h // self.heads).permute(1, 2, 0, 3)
        scores = q @ k.transpose(-1, -2) / math.sqrt(h // self.heads)
        if self.causal:
            mask = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        return self.proj((scores.softmax(-1) @ v).transpose(0, 1).reshape(n, h))

    def forward(self, x, lengths):
        a = torch.cat([self.attention(part) for part in torch.split(self.norm1(x), lengths)])
        x = x + a
        u = self.up(self.norm2(x))
        if self.swiglu:
            g, u = u.chunk(2, dim=-1)
            u = F.silu(g) * u
        else:
            u = F.gelu(u)
        return x + self.down(u)


class TorchVLM(nn.Module):
    """The whole model; `stage(module, first_layer, layer_count)` is one chunk of it."""

    def __init__(self, spec, seed=0, dtype=torch.float64):
        super().__init__()
        vit, llm = module_specs(spec)
        self.spec = spec
        self.vit_id, self.llm_id = spec.feeders(spec.backbone)[0], spec.backbone
        self.vocab = llm.vocab
        torch.manual_seed(seed)
        self.patch_embed = nn.Linear(PATCH_DIM, vit.hidden)
        self.vit_pos = nn.Parameter(0.02 * torch.randn(MAX_PATCHES, vit.hidden))
        self.vit_blocks = nn.ModuleList(Block(vit.hidden, vit.ffn_hidden, vit.heads, False, False) for _ in range(vit.layers))
        self.vit_norm = nn.LayerNorm(vit.hidden)
        self.projector = nn.Sequential(nn.Linear(vit.hidden, llm.hidden), nn.GELU(), nn.Linear(llm.hidden, llm.hidden))
        self.embed = nn.Embedding(llm.vocab, llm.hidden)
        self.llm_blocks = nn.ModuleList(Block(llm.hidden, llm.ffn_hidden, llm.heads, True, True) for _ in range(llm.layers))
        self.llm_norm = nn.LayerNorm(llm.hidden)
        self.head = nn.Linear(llm.hidden, llm.vocab, bias=False)
        self.to(dtype)
        self.dtype = dtype
        self.data = None

    # ---- data ----------------------------------------------------------------------------

    def set_step(self, batch, step, seed=0):
        """The step's samples (a pipeweaver Batch): every rank calls it before the step."""
        self.data = StepData(batch, step, seed, self.vocab, self.dtype, self.head.weight.device)

    # ---- what the pipeline runtime asks ----------------------------------------------------

    def stage(self, module, first_layer, layer_count):
        return Stage(self, module, first_layer, layer_count)

    def output_shape(self, module, chunk, sub_microbatch, partition):
        """(rows of each item, width) of a chunk's forward output on a sub-microbatch."""
        vit, llm = module_specs(self.spec)
        chunks = partition.modules[module].chunks
        last = chunk == len(chunks) - 1
        width = llm.hidden if module == self.llm_id or last else vit.hidden
        return list(sub_microbatch.item_tokens), width

    # ---- the same step without a pipeline (the reference) --------------------------------------

    def reference_loss(self, batch):
        """The step's loss computed sample by sample in one process (set_step first)."""
        total = 0
        for mb, samples in enumerate(batch.microbatches):
            for s, sample in enumerate(samples):
                images = self.data.patches(mb, s)
                feats = []
                if images:
                    x = self.encode_in(images)
                    x = self.run_blocks(self.vit_blocks, 0, len(self.vit_blocks), x, [len(p) for p in images])
                    feats = list(torch.split(self.encode_out(x), [len(p) for p in images]))
                seq = self.decode_in(feats, mb, s)
                seq = self.run_blocks(self.llm_blocks, 0, len(self.llm_blocks), seq, [len(seq)])
                total = total + self.decode_loss(seq, [(mb, s)], [len(seq)])
        return total

    # ---- pieces shared by the stages and the reference --------------------------------------

    def encode_in(self, images):
        return torch.cat([self.patch_embed(p) + self.vit_pos[: len(p)] for p in images])

    def encode_out(self, x):
        return self.projector(self.vit_norm(x))

    def run_blocks(self, blocks, first, count, x, lengths):
        for block in blocks[first : first + count]:
            x = block(x, lengths)
        return x

    def decode_in(self, image_features, mb, s):
        return torch.cat(list(image_features) + [self.embed(self.data.text(mb, s))])

    def decode_loss(self, x, samples, lengths):
        """Sum of the next-token losses of the samples' text, times the step's loss scale."""
        logits = self.head(self.llm_norm(x))
        total = 0
        for (mb, s), part in zip(samples, torch.split(logits, lengths)):
            text = self.data.text(mb, s)
            n = len(text)
            if n < 2:
                continue
            pred = part[len(part) - n : len(part) - 1]
            total = total + F.cross_entropy(pred, text[1:], reduction="sum")
        return total * self.data.loss_scale


class Stage(nn.Module):
    """One chunk of one module: layers [first_layer, first_layer + layer_count)."""

    def __init__(self, model, module, first_layer, layer_count):
        super().__init__()
        self.model, self.module_id, self.first, self.count = model, module, first_layer, layer_count
        self.encoder = module == model.vit_id
        blocks = model.vit_blocks if self.encoder else model.llm_blocks
        self.first_chunk = first_layer == 0
        self.last_chunk = first_layer + layer_count == len(blocks)
        self.blocks = blocks

    def parameters(self, recurse=True):  # the chunk's own parameters only
        m = self.model
        ps = []
        if self.first_chunk:
            ps += [m.patch_embed.weight, m.patch_embed.bias, m.vit_pos] if self.encoder else [m.embed.weight]
        for b in self.blocks[self.first : self.first + self.count]:
            ps += list(b.parameters())
        if self.last_chunk:
            ps += list(m.vit_norm.parameters()) + list(m.projector.parameters()) if self.encoder else list(m.llm_norm.parameters()) + [m.head.weight]
        return iter(ps)

    def forward(self, inputs, smb):
        """inputs: None (first encoder chunk), a tensor (later chunks) or, for the first language
        chunk, per item the list of its images' projected features. Returns the output rows, or
        the loss for the last language chunk."""
        m, lengths, refs = self.model, list(smb.item_tokens), smb.items
        if self.encoder and self.first_chunk:
            x = m.encode_in([m.data.patches(smb.microbatch, s)[i] for s, i in refs])
        elif not self.encoder and self.first_chunk:
            x = torch.cat([m.decode_in(feats, smb.microbatch, s) for feats, (s, _) in zip(inputs, refs)])
        else:
            x = inputs
        if x.shape[0] != sum(lengths):
            raise ValueError(f"stage input has {x.shape[0]} rows, the plan says {sum(lengths)}")
        x = m.run_blocks(self.blocks, self.first, self.count, x, lengths)
        if self.last_chunk:
            return m.encode_out(x) if self.encoder else m.decode_loss(x, [(smb.microbatch, s) for s, _ in refs], lengths)
        return x


class StepData:
    """The synthetic patches and text of one step's samples, the same on every rank."""

    def __init__(self, batch, step, seed, vocab, dtype, device):
        self.batch, self.step, self.seed, self.vocab, self.dtype, self.device = batch, step, seed, vocab, dtype, device
        self._cache = {}
        predicted = sum(max(s.text - 1, 0) for mb in batch.microbatches for s in mb)
        self.loss_scale = 1.0 / max(predicted, 1)

    def _draw(self, mb, s):
        key = (mb, s)
        if key not in self._cache:
            sample = self.batch.microbatches[mb][s]
            g = torch.Generator().manual_seed(((self.seed * 1000003 + self.step) * 1009 + mb) * 10007 + s)
            images = [torch.randn(n, PATCH_DIM, generator=g, dtype=torch.float64).to(self.dtype).to(self.device)
                      for n in sample.items.get("image", [])]
            stride = 1 + len(images)
            start = int(torch.randint(0, self.vocab, (1,), generator=g))
            text = (start + stride * torch.arange(sample.text)) % self.vocab
            self._cache[key] = (images, text.to(self.device))
        return self._cache[key]

    def patches(self, mb, s):
        return self._draw(mb, s)[0]

    def text(self, mb, s):
        return self._draw(mb, s)[1]
