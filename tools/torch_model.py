#!/usr/bin/python3
"""A PyTorch build of docs/model.md, with state_dict names and shapes identical to cpets'
(models/networks.cpp), written independently of the C++ code from the spec; and PyTorch builds
of the baselines (model.kind unet, unet-cond, pix2pix, cyclegan, bmgan, bpgan), written from
models/baselines/*.cpp with our parameter counts per preset (their state_dict names are not
guaranteed to be ours; see the baselines' section for where the computation differs). Runs on
Debian's python3-torch (1.13, CPU) or the PyTorch 2.x venv of `tools/cpets.sh bench`.

  --count full|demo|tiny [--kind K]
                           parameter counts per network (to double-check models/'s figures)
  --check-counts           every kind's and preset's generator- and discriminator-phase counts
                           against ours (OUR_COUNTS); exit status 1 if one differs
  --fixture OUT [--variant reference|vae-raw]
                           golden fixture for tests/test_golden.cpp (tiny preset): random but
                           fixed weights (every parameter non-trivial, also the zero-initialised
                           ones), inputs and noise; the generator objective's terms and outputs
                           and the gradient of L_G w.r.t. every generator parameter; then one
                           discriminator step on the detached fake: its two losses, D's gradients
                           and the BatchNorm running statistics after both steps.
  --baseline-fixture OUT    every baseline kind (tiny preset, random weights): its weights under our
                           parameter names, random inputs and the PET it synthesises in eval mode
                           (tests/fixtures/golden/baselines.safetensors, read by test_baselines).
  --flops full              GFLOP of one training step per sample, counted on the meta device
                           (PyTorch 2.x): the compute side of the README's scaling model.
  --bench demo [--kind K]  median time of a full training step (G forward+backward+Adam, then D
                           step on a regenerated fake) at batch 2 (--batch) on random data, peak RSS and
                           one inference; prints JSON. --bench-full-infer adds one full-preset
                           inference. --kind (default causal-pets) picks the model: a baseline's
                           step is train/trainer.cpp's with the kind's default loss weights and
                           optimisers and train.perceptual=none, as `cpets-bench train --kind`.
                           --device cuda[:N] runs it on a GPU (weights, data and random draws
                           there; the timers stop after torch.cuda.synchronize) and adds the peak
                           device memory, as `cpets-bench train --device`. --precision (GPU only):
                           fp32 switches TF32 off for cuBLAS and cuDNN (PyTorch's cuDNN default
                           is on), tf32 switches it on, bf16 runs the step and the inference
                           under torch.autocast(bfloat16) with fp32 weights — what our
                           train.precision does to conv and GEMM.

The fixture is written with a small safetensors writer of our own (the `safetensors` package is
not a Debian package): 8-byte little-endian header length, JSON header, raw float32 data.
"""
import argparse
import contextlib
import json
import math
import os
import re
import resource
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- configuration (the same keys and presets as models/config.cpp) ---------------------------

FULL = dict(preset="full", volume=[96, 128, 96], latent_channels=3, latent="reference", csf_inputs=1,
            covariate_inputs=4, encoder_channels=[64, 128, 128], encoder_groups=16, encoder_heads=4,
            fusion="mlp", fusion_width=128, fusion_tokens=8, context_width=64,
            t1_decoder_channels=[64, 64, 64, 32], t1_decoder_groups=32, generator_channels=[64, 64, 32],
            generator_groups=32, generator_heads=8, discriminator_channels=64, t1_reconstruction=True,
            discriminator=True, perceptual="lpips-squeeze", norm_eps=1e-6, ln_eps=1e-5, bn_eps=1e-5,
            bn_momentum=0.1)


def preset(name, tracer="AV45"):
    c = dict(FULL)
    c["preset"] = name
    if name == "demo":
        c.update(volume=[48, 64, 48], encoder_channels=[16, 32, 32], encoder_groups=8, encoder_heads=2,
                 t1_decoder_channels=[32, 32, 32, 16], t1_decoder_groups=8, generator_channels=[32, 32, 16],
                 generator_groups=8, generator_heads=4, fusion_width=64, fusion_tokens=4, context_width=32,
                 discriminator_channels=16, perceptual="none")
    elif name == "tiny":
        c.update(volume=[16, 16, 16], encoder_channels=[4, 8, 8], encoder_groups=2, encoder_heads=2,
                 t1_decoder_channels=[8, 8, 4, 4], t1_decoder_groups=2, generator_channels=[8, 8, 4],
                 generator_groups=2, generator_heads=2, fusion_width=8, fusion_tokens=3, context_width=6,
                 discriminator_channels=4, perceptual="none")
    elif name != "full":
        raise SystemExit(f"unknown preset {name!r}: use full, demo or tiny")
    c["csf_inputs"] = {"AV45": 1, "AV1451": 2}[tracer]
    return c


# ---- building blocks (docs/model.md §2) ---------------------------------------------------------

def conv3(cin, cout):
    return nn.Conv3d(cin, cout, 3, padding=1)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, groups, eps, resample=None):
        super().__init__()
        self.resample = resample
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = conv3(cin, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = conv3(cout, cout)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip_connection = nn.Conv3d(cin, cout, 1) if cin != cout else None

    def _resample(self, x):
        if self.resample == "down":
            return F.avg_pool3d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, x):
        h = self._resample(F.silu(self.norm1(x)))
        x = self._resample(x)
        h = self.conv2(F.silu(self.norm2(self.conv1(h))))
        return (self.skip_connection(x) if self.skip_connection is not None else x) + h


class AEResBlock(nn.Module):
    def __init__(self, cin, cout, groups, eps):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = conv3(cin, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = conv3(cout, cout)
        self.nin_shortcut = nn.Conv3d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = conv3(c, c)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Attention(nn.Module):
    def __init__(self, c, c_ctx, heads):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(c, c, bias=False)
        self.to_k = nn.Linear(c_ctx, c, bias=False)
        self.to_v = nn.Linear(c_ctx, c, bias=False)
        self.to_out = nn.Linear(c, c)

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        B, N, C = x.shape
        h, d = self.heads, C // self.heads
        q = self.to_q(x).reshape(B, N, h, d).transpose(1, 2)
        k = self.to_k(ctx).reshape(B, ctx.shape[1], h, d).transpose(1, 2)
        v = self.to_v(ctx).reshape(B, ctx.shape[1], h, d).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        return self.to_out((w @ v).transpose(1, 2).reshape(B, N, C))


class FeedForward(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.proj = nn.Linear(c, 2 * hidden)
        self.out = nn.Linear(hidden, c)

    def forward(self, x):
        a, b = self.proj(x).chunk(2, dim=-1)
        return self.out(a * F.gelu(b))


class SpatialTransformer(nn.Module):
    def __init__(self, c, heads, c_ctx, groups, gn_eps, ln_eps):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=gn_eps)
        self.proj_in = nn.Conv3d(c, c, 1)
        self.norm1 = nn.LayerNorm(c, eps=ln_eps)
        self.attn1 = Attention(c, c, heads)
        self.norm2 = nn.LayerNorm(c, eps=ln_eps)
        self.attn2 = Attention(c, c_ctx if c_ctx else c, heads)
        self.norm3 = nn.LayerNorm(c, eps=ln_eps)
        self.ff = FeedForward(c, 4 * c)
        self.proj_out = nn.Conv3d(c, c, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x, ctx=None):
        r = x
        B, C, D, H, W = x.shape
        t = self.proj_in(self.norm(x)).reshape(B, C, D * H * W).transpose(1, 2)
        t = t + self.attn1(self.norm1(t))
        t = t + self.attn2(self.norm2(t), ctx)
        t = t + self.ff(self.norm3(t))
        t = t.transpose(1, 2).reshape(B, C, D, H, W)
        return self.proj_out(t) + r


# ---- the networks (docs/model.md §3) --------------------------------------------------------------

class FusionMLP(nn.Module):
    def __init__(self, n, c):
        super().__init__()
        self.n, self.raw = n, c["fusion"] == "raw"
        if not self.raw:
            self.K, self.w = c["fusion_tokens"], c["context_width"]
            self.fc1 = nn.Linear(n, c["fusion_width"])
            self.fc2 = nn.Linear(c["fusion_width"], c["fusion_width"])
            self.fc3 = nn.Linear(c["fusion_width"], self.K * self.w)

    def forward(self, x):
        if self.raw:
            return x.reshape(x.shape[0], 1, self.n)
        return self.fc3(F.silu(self.fc2(F.silu(self.fc1(x))))).reshape(x.shape[0], self.K, self.w)


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        ch, G, eps = c["encoder_channels"], c["encoder_groups"], c["norm_eps"]
        self.conv_in = conv3(1, ch[0])
        self.down_blocks = nn.ModuleList()
        cin = ch[0]
        for cout in ch:
            level = nn.Module()
            level.resnets = nn.ModuleList([ResnetBlock(cin, cout, G, eps), ResnetBlock(cout, cout, G, eps)])
            level.downsampler = ResnetBlock(cout, cout, G, eps, "down")
            self.down_blocks.append(level)
            cin = cout
        ctx = 0
        self.demographics = None
        if c["fusion"] != "raw":
            self.demographics = FusionMLP(c["covariate_inputs"], c)
            ctx = c["context_width"]
        self.transformer = SpatialTransformer(ch[2], c["encoder_heads"], ctx, G, eps, c["ln_eps"])
        self.norm_out = nn.GroupNorm(G, ch[2], eps=eps)
        self.conv_out = conv3(ch[2], 2 * c["latent_channels"])

    def forward(self, t1, cov):
        h = self.conv_in(t1)
        for level in self.down_blocks:
            for block in level.resnets:
                h = block(h)
            h = level.downsampler(h)
        m = self.demographics(cov) if self.demographics is not None else None
        h = self.transformer(h, m)
        return self.conv_out(F.silu(self.norm_out(h)))


class T1Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        ch, G, eps = c["t1_decoder_channels"], c["t1_decoder_groups"], c["norm_eps"]
        self.conv_in = conv3(c["latent_channels"], ch[0])
        self.blocks = nn.ModuleList()
        cin = ch[0]
        for i, cout in enumerate(ch):
            self.blocks.append(AEResBlock(cin, cout, G, eps))
            self.blocks.append(AEResBlock(cout, cout, G, eps))
            cin = cout
            if i + 1 < len(ch):
                self.blocks.append(Upsample(cout))
        self.norm_out = nn.GroupNorm(G, cin, eps=eps)
        self.conv_out = conv3(cin, 1)

    def forward(self, z):
        h = self.conv_in(z)
        for b in self.blocks:
            h = b(h)
        return self.conv_out(self.norm_out(h))  # no SiLU, no output activation


class PETGenerator(nn.Module):
    def __init__(self, c):
        super().__init__()
        ch, G, eps = c["generator_channels"], c["generator_groups"], c["norm_eps"]
        token_width = c["csf_inputs"] + c["covariate_inputs"] if c["fusion"] == "raw" else c["context_width"]
        self.conv_in = conv3(c["latent_channels"], ch[0])
        self.up_blocks = nn.ModuleList()
        cin = ch[0]
        for i, cout in enumerate(ch):
            level = nn.Module()
            level.resnets = nn.ModuleList([ResnetBlock(cin if j == 0 else cout, cout, G, eps) for j in range(3)])
            if i == 0:
                level.attentions = nn.ModuleList([SpatialTransformer(cout, c["generator_heads"], token_width if j == 0 else 0,
                                                                     G, eps, c["ln_eps"]) for j in range(3)])
            level.upsampler = Upsample(cout)
            self.up_blocks.append(level)
            cin = cout
        self.norm_out = nn.GroupNorm(G, cin, eps=eps)
        self.conv_out = conv3(cin, 1)

    def forward(self, z, tokens):
        h = self.conv_in(z)
        for level in self.up_blocks:
            for j, block in enumerate(level.resnets):
                h = block(h)
                if hasattr(level, "attentions"):
                    h = level.attentions[j](h, tokens if j == 0 else None)
            h = level.upsampler(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class PatchDiscriminator(nn.Module):
    """MONAI Generative's PatchDiscriminator: `discriminator_layers` (2 in Causal PETS, whose
    config lacks the key) BatchNorm layers, `in_channels` inputs (Pix2Pix's reads [T1, PET])."""

    def __init__(self, c, in_channels=1):
        super().__init__()
        d, self.layers = c["discriminator_channels"], c.get("discriminator_layers", 2)
        bn = dict(eps=c["bn_eps"], momentum=c["bn_momentum"])
        self.initial_conv = nn.Conv3d(in_channels, d, 4, stride=2, padding=1)
        width = d
        for i in range(1, self.layers + 1):  # stride 2, the last keeps the resolution
            setattr(self, f"conv{i}", nn.Conv3d(width, 2 * width, 4, stride=2 if i < self.layers else 1, padding=1,
                                                bias=False))
            setattr(self, f"norm{i}", nn.BatchNorm3d(2 * width, **bn))
            width *= 2
        self.final_conv = nn.Conv3d(width, 1, 4, stride=1, padding=1)
        for name, m in self.named_children():  # conv weights N(0, 0.02), BatchNorm γ ~ N(1, 0.02)
            nn.init.normal_(m.weight, 1.0 if name.startswith("norm") else 0.0, 0.02)

    def forward(self, x):
        h = F.leaky_relu(self.initial_conv(x), 0.2)
        for i in range(1, self.layers + 1):
            h = F.leaky_relu(getattr(self, f"norm{i}")(getattr(self, f"conv{i}")(h)), 0.2)
        return self.final_conv(h)


class CausalPETS(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.encoder = Encoder(c)
        self.fusion = FusionMLP(c["csf_inputs"] + c["covariate_inputs"], c)
        self.t1_decoder = T1Decoder(c) if c["t1_reconstruction"] else None
        self.pet_generator = PETGenerator(c)
        self.discriminator = PatchDiscriminator(c) if c["discriminator"] else None

    def encode(self, t1, cov):
        h = self.encoder(t1, cov)
        z = self.c["latent_channels"]
        return h[:, :z], h[:, z:]

    def log_variance(self, s):
        return s.clamp(-30, 20) if self.c["latent"] == "vae" else s

    def reparameterise(self, mu, s, eps):
        if eps is None:
            return mu
        sigma = torch.exp(0.5 * self.log_variance(s)) if self.c["latent"] == "vae" else s
        return mu + eps * sigma

    def forward(self, t1, csf, cov, eps_t1, eps_pet):
        mu, s = self.encode(t1, cov)
        tokens = self.fusion(torch.cat([csf, cov], dim=1))
        t1_rec = self.t1_decoder(self.reparameterise(mu, s, eps_t1)) if self.t1_decoder is not None else None
        pet = self.pet_generator(self.reparameterise(mu, s, eps_pet), tokens)
        return dict(mu=mu, s=s, tokens=tokens, t1_rec=t1_rec, pet_syn=pet)

    def generator_modules(self):
        return [m for m in (self.encoder, self.fusion, self.t1_decoder, self.pet_generator) if m is not None]


# ---- objective (docs/model.md §5) -----------------------------------------------------------------

def generator_objective(model, batch, noise, lambda_adv=0.005, beta_kl=0.001, t1_loss="l1", eps_pet=True):
    out = model(batch["t1"], batch["csf"], batch["covariates"], noise["eps_t1"], noise["eps_pet"] if eps_pet else None)
    terms = {"pet_l1": (out["pet_syn"] - batch["pet"]).abs().mean()}
    total = terms["pet_l1"]
    if out["t1_rec"] is not None:
        diff = out["t1_rec"] - batch["t1"]
        terms["t1"] = diff.abs().mean() if t1_loss == "l1" else (diff ** 2).mean()
        total = total + terms["t1"]
    logvar = model.log_variance(out["s"])
    terms["kl"] = -0.5 * torch.sum(1 + logvar - out["mu"] ** 2 - logvar.exp()) / out["mu"].shape[0]
    total = total + beta_kl * terms["kl"]
    if lambda_adv > 0 and model.discriminator is not None:
        terms["adv"] = ((model.discriminator(out["pet_syn"]) - 1) ** 2).mean()
        total = total + lambda_adv * terms["adv"]
    terms["total"] = total
    return terms, out


def discriminator_objective(model, fake, real):
    l_fake = (model.discriminator(fake) ** 2).mean()
    l_real = ((model.discriminator(real) - 1) ** 2).mean()
    return l_fake, l_real


# ---- the baselines (models/baselines/*.cpp), one training step each -------------------------------
#
# Written from our C++ definitions, with the same parameter counts per preset (--check-counts).
# Where this build and ours compute the same thing differently:
#   - BMGAN's InstanceNorm (no affine) runs as F.group_norm with one group per channel, as ours
#     does: F.instance_norm refuses a single voxel in training, which the tiny preset's last
#     encoder stage has (the result is the same function).
#   - Attention is the shared Attention above (explicit softmax(QKᵀ/√d)V, as MONAI Generative's
#     CrossAttention without xformers), not F.scaled_dot_product_attention.
#   - The parameters' initial values follow ours in kind (zeroed U-Net outputs, N(0, 0.02) GAN
#     weights) but not draw for draw: a step's cost does not depend on them.
#   - Work our step does besides the network and not repeated here: train/trainer.cpp also takes
#     the generator gradients' norm (a serial pass over them, for train.jsonl) and reads the loss
#     terms' values; inference runs there in training mode (Pix2Pix's BatchNorm on batch
#     statistics), here in eval mode.

def baseline_preset(name, kind, tracer="AV45"):
    """The baselines' model config (models/config.cpp apply_baseline_preset) on the preset's volume."""
    base = preset(name, tracer)
    c = {k: base[k] for k in ("preset", "volume", "csf_inputs", "covariate_inputs", "norm_eps", "ln_eps", "bn_eps",
                              "bn_momentum")}
    c["kind"], c["discriminator_layers"] = kind, 3
    if kind == "bmgan":  # its D: PatchGAN 32 channels × 4 layers at full width
        c.update({"full": dict(bmgan_levels=4, bmgan_width_divisor=1, discriminator_channels=32, discriminator_layers=4),
                  "demo": dict(bmgan_levels=3, bmgan_width_divisor=4, discriminator_channels=8, discriminator_layers=4),
                  "tiny": dict(bmgan_levels=2, bmgan_width_divisor=16, discriminator_channels=4,
                               discriminator_layers=2)}[name])
        return c
    pix2pix = kind in ("pix2pix", "cyclegan")  # the same U-Net generator
    if name == "full":
        c.update(baseline_channels=[64, 128, 256, 512] if pix2pix else [16, 32, 64, 128], baseline_groups=16,
                 baseline_heads=4, discriminator_channels=64)
    elif name == "demo":
        c.update(baseline_channels=[16, 32, 64, 128] if pix2pix else [8, 16, 32, 64], baseline_groups=8,
                 baseline_heads=2, discriminator_channels=16)
    else:  # tiny: a 16³ volume leaves no patch grid after four stride-2 convolutions
        c.update(baseline_channels=[4, 8, 8, 8], baseline_groups=2, baseline_heads=2, discriminator_channels=4,
                 discriminator_layers=2)
    return c


# The baselines' training defaults (train/config.cpp train_defaults) with train.perceptual=none.
TRAIN_DEFAULTS = {
    "unet": dict(lr=5e-4, lr_d=1e-4, beta1=0.9, lambda_l1=1.0, lambda_adv=0.1),
    "unet-cond": dict(lr=5e-4, lr_d=1e-4, beta1=0.9, lambda_l1=1.0, lambda_adv=0.1),
    "pix2pix": dict(lr=2e-4, lr_d=2e-4, beta1=0.5, lambda_l1=100.0, lambda_adv=1.0),
    "cyclegan": dict(lr=2e-4, lr_d=2e-4, beta1=0.5, lambda_adv=1.0, lambda_cycle=10.0, lambda_identity=0.5),
    "bmgan": dict(lr=2e-4, lr_d=2e-4, beta1=0.9, lambda_l1=20.0, lambda_adv=1.0),
    "bpgan": dict(lr=2e-4, lr_d=2e-4, beta1=0.5, lambda_l1=100.0, lambda_adv=1.0, lambda_gp=100.0, lambda_ssim=10.0),
}


def lsgan(logits, target):
    return ((logits - target) ** 2).mean()


def l1_adversarial(fake, real, w, critic):
    """λ_l1·L1 + λ_adv·LSGAN(critic(fake), 1) (models/baselines/common.cpp)."""
    return w["lambda_l1"] * (fake - real).abs().mean() + w["lambda_adv"] * lsgan(critic(fake), 1.0)


def lsgan_discriminator(critic, fake, real):
    return lsgan(critic(fake), 0.0) + lsgan(critic(real), 1.0)  # fake first, as ours


class AttentionUNet(nn.Module):
    """MONAI Generative's DiffusionModelUNet without time embedding (models/baselines/unet.cpp):
    two ResnetBlocks a level, ResnetBlock(down/up) resampling, SpatialTransformers at the deepest
    level and in the middle, skip concatenation, GN → SiLU → zeroed Conv3³ out."""

    def __init__(self, c, context_channels):
        super().__init__()
        ch, G, eps = c["baseline_channels"], c["baseline_groups"], c["norm_eps"]
        levels = len(ch)
        transformer = lambda w: SpatialTransformer(w, c["baseline_heads"], context_channels, G, eps, c["ln_eps"])
        self.conv_in = conv3(1, ch[0])
        self.down_blocks = nn.ModuleList()
        width = ch[0]
        for l in range(levels):
            block = nn.Module()
            block.resnets = nn.ModuleList([ResnetBlock(width if j == 0 else ch[l], ch[l], G, eps) for j in range(2)])
            if l == levels - 1:
                block.attentions = nn.ModuleList([transformer(ch[l]) for _ in range(2)])
            else:
                block.downsampler = ResnetBlock(ch[l], ch[l], G, eps, "down")
            self.down_blocks.append(block)
            width = ch[l]
        self.middle_block = nn.Module()
        self.middle_block.resnet_1 = ResnetBlock(width, width, G, eps)
        self.middle_block.attention = transformer(width)
        self.middle_block.resnet_2 = ResnetBlock(width, width, G, eps)
        # Up, deepest first: three blocks on [h, skip]; the third's skip is the level above's.
        self.up_blocks = nn.ModuleList()
        previous = ch[-1]
        for i in range(levels):
            l = levels - 1 - i
            out, above = ch[l], ch[max(l - 1, 0)]
            block = nn.Module()
            block.resnets = nn.ModuleList([ResnetBlock((previous if j == 0 else out) + (above if j == 2 else out), out, G,
                                                       eps) for j in range(3)])
            if i == 0:
                block.attentions = nn.ModuleList([transformer(out) for _ in range(3)])
            if l > 0:
                block.upsampler = ResnetBlock(out, out, G, eps, "up")
            self.up_blocks.append(block)
            previous = out
        self.out_norm = nn.GroupNorm(G, ch[0], eps=eps)
        self.out_conv = conv3(ch[0], 1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, x, context):
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            for j, resnet in enumerate(block.resnets):
                h = resnet(h)
                if hasattr(block, "attentions"):
                    h = block.attentions[j](h, context)
                skips.append(h)
            if hasattr(block, "downsampler"):
                h = block.downsampler(h)
                skips.append(h)
        m = self.middle_block
        h = m.resnet_2(m.attention(m.resnet_1(h), context))
        for block in self.up_blocks:
            for j, resnet in enumerate(block.resnets):
                h = resnet(torch.cat([h, skips.pop()], 1))
                if hasattr(block, "attentions"):
                    h = block.attentions[j](h, context)
            if hasattr(block, "upsampler"):
                h = block.upsampler(h)
        return self.out_conv(F.silu(self.out_norm(h)))


class Baseline(nn.Module):
    """What the step needs of a baseline kind: its two parameter sets and two phase losses."""

    def discriminators(self):
        return []

    def generator_parameters(self):
        ds = {id(p) for d in self.discriminators() for p in d.parameters()}
        return [p for p in self.parameters() if id(p) not in ds]

    def discriminator_parameters(self):
        return [p for d in self.discriminators() for p in d.parameters()]


class AttentionUNetModel(Baseline):
    """kind "unet-cond": the context is the tabular vector [B_CSF, M] as one token; "unet": zeros."""

    def __init__(self, c):
        super().__init__()
        self.conditional = c["kind"] == "unet-cond"
        self.unet = AttentionUNet(c, c["csf_inputs"] + c["covariate_inputs"])
        self.discriminator = PatchDiscriminator(c)

    def discriminators(self):
        return [self.discriminator]

    def synthesise(self, b, gen=None):
        token = torch.cat([b["csf"], b["covariates"]], 1).unsqueeze(1)
        return self.unet(b["t1"], token if self.conditional else token * 0)

    def generator_loss(self, b, w, gen):
        return l1_adversarial(self.synthesise(b), b["pet"], w, self.discriminator)

    def discriminator_loss(self, b, w, gen):
        with torch.no_grad():
            fake = self.synthesise(b)
        return lsgan_discriminator(self.discriminator, fake, b["pet"])


class Pix2PixGenerator(nn.Module):
    """Four Conv4 stride-2 downs (LeakyReLU 0.2 before all but the first, BatchNorm between the
    outermost and innermost), ReLU → nearest ×2 → Conv3³ ups on [h, skip], ½(tanh + 1) out."""

    def __init__(self, c):
        super().__init__()
        ch, levels = c["baseline_channels"], len(c["baseline_channels"])
        bn = dict(eps=c["bn_eps"], momentum=c["bn_momentum"])
        self.down, self.up = [], []  # (conv name, norm name or None), in forward order
        cin = 1
        for l in range(levels):
            normed = 0 < l < levels - 1
            setattr(self, f"down{l}", nn.Conv3d(cin, ch[l], 4, stride=2, padding=1, bias=not normed))
            if normed:
                setattr(self, f"down_norm{l}", nn.BatchNorm3d(ch[l], **bn))
            self.down.append((f"down{l}", f"down_norm{l}" if normed else None))
            cin = ch[l]
        for l in reversed(range(levels)):
            src, dst = ch[l] if l == levels - 1 else 2 * ch[l], 1 if l == 0 else ch[l - 1]
            setattr(self, f"up{l}", nn.Conv3d(src, dst, 3, padding=1, bias=l == 0))
            if l > 0:
                setattr(self, f"up_norm{l}", nn.BatchNorm3d(dst, **bn))
            self.up.append((f"up{l}", f"up_norm{l}" if l > 0 else None))
        pix2pix_init(self)

    def forward(self, x):
        skips, h = [], x
        for l, (conv, norm) in enumerate(self.down):
            if l > 0:
                h = F.leaky_relu(h, 0.2)
            h = getattr(self, conv)(h)
            if norm:
                h = getattr(self, norm)(h)
            skips.append(h)
        skips.pop()  # the innermost output is h itself
        for conv, norm in self.up:
            h = getattr(self, conv)(F.interpolate(F.relu(h), scale_factor=2, mode="nearest"))
            if norm:
                h = torch.cat([getattr(self, norm)(h), skips.pop()], 1)
        return 0.5 * (torch.tanh(h) + 1)


class Pix2Pix(Baseline):
    """G(T1) → PET; a conditional PatchGAN on [T1, PET]. BPGAN is the same with its own G and loss."""

    def __init__(self, c, generator=Pix2PixGenerator):
        super().__init__()
        self.generator = generator(c)
        self.discriminator = PatchDiscriminator(c, in_channels=2)

    def discriminators(self):
        return [self.discriminator]

    def synthesise(self, b, gen=None):
        return self.generator(b["t1"])

    def generator_loss(self, b, w, gen):
        return l1_adversarial(self.generator(b["t1"]), b["pet"], w,
                              lambda x: self.discriminator(torch.cat([b["t1"], x], 1)))

    def discriminator_loss(self, b, w, gen):
        with torch.no_grad():
            fake = self.generator(b["t1"])
        return lsgan_discriminator(lambda x: self.discriminator(torch.cat([b["t1"], x], 1)), fake, b["pet"])


class CycleGAN(Baseline):
    """G: T1 → PET and F: PET → T1 (Pix2Pix's generator), PatchGANs on PET and on T1; cycle,
    identity (λ_cycle·λ_identity) and LSGAN terms (models/baselines/cyclegan.cpp)."""

    def __init__(self, c):
        super().__init__()
        self.t1_to_pet, self.pet_to_t1 = Pix2PixGenerator(c), Pix2PixGenerator(c)
        self.pet_discriminator, self.t1_discriminator = PatchDiscriminator(c), PatchDiscriminator(c)

    def discriminators(self):
        return [self.pet_discriminator, self.t1_discriminator]

    def synthesise(self, b, gen=None):
        return self.t1_to_pet(b["t1"])

    def generator_loss(self, b, w, gen):
        t1, pet = b["t1"], b["pet"]
        l1 = lambda a, r: (a - r).abs().mean()
        fake_pet, fake_t1 = self.t1_to_pet(t1), self.pet_to_t1(pet)
        cycle = l1(self.pet_to_t1(fake_pet), t1) + l1(self.t1_to_pet(fake_t1), pet)
        identity = l1(self.t1_to_pet(pet), pet) + l1(self.pet_to_t1(t1), t1)
        adv = lsgan(self.pet_discriminator(fake_pet), 1.0) + lsgan(self.t1_discriminator(fake_t1), 1.0)
        with torch.no_grad():  # ours logs L1(G(T1), PET) too (not in the loss)
            l1(fake_pet, pet).item()
        return (w["lambda_cycle"] * cycle + w["lambda_cycle"] * w["lambda_identity"] * identity +
                w["lambda_adv"] * adv)

    def discriminator_loss(self, b, w, gen):
        with torch.no_grad():
            fake_pet, fake_t1 = self.t1_to_pet(b["t1"]), self.pet_to_t1(b["pet"])
        return (lsgan_discriminator(self.pet_discriminator, fake_pet, b["pet"]) +
                lsgan_discriminator(self.t1_discriminator, fake_t1, b["t1"]))


def pix2pix_init(module):
    """pix2pix's "normal" init: conv weights N(0, 0.02), zero biases, BatchNorm γ ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.BatchNorm3d)):
            nn.init.normal_(m.weight, 1.0 if isinstance(m, nn.BatchNorm3d) else 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MultiConvBlock(nn.Module):
    """Conv1³ + Conv3³ + Conv3³ → LeakyReLU → Conv3³, summed, BatchNorm, LeakyReLU 0.2."""

    def __init__(self, cin, cout, c):
        super().__init__()
        self.point = nn.Conv3d(cin, cout, 1, bias=False)
        self.cube = nn.Conv3d(cin, cout, 3, padding=1, bias=False)
        self.wide_in = nn.Conv3d(cin, cout, 3, padding=1)
        self.wide_out = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm3d(cout, eps=c["bn_eps"], momentum=c["bn_momentum"])

    def forward(self, x):
        wide = self.wide_out(F.leaky_relu(self.wide_in(x), 0.2))
        return F.leaky_relu(self.norm(self.point(x) + self.cube(x) + wide), 0.2)


class MultiConvUNet(nn.Module):
    """BPGAN's generator as we read its abstract (models/baselines/bpgan.h): multiple-convolution
    blocks at four levels, max-pool downs, nearest ×2 + Conv3³ ups, skips concatenated, Conv3³ head."""

    def __init__(self, c):
        super().__init__()
        ch = c["baseline_channels"]
        self.levels = len(ch)
        for l in range(self.levels):
            setattr(self, f"down{l}", MultiConvBlock(1 if l == 0 else ch[l - 1], ch[l], c))
        for l in reversed(range(self.levels - 1)):
            setattr(self, f"up_conv{l}", nn.Conv3d(ch[l + 1], ch[l], 3, padding=1))
            setattr(self, f"up{l}", MultiConvBlock(2 * ch[l], ch[l], c))
        self.head = nn.Conv3d(ch[0], 1, 3, padding=1)
        pix2pix_init(self)

    def forward(self, x):
        skips, h = [], x
        for l in range(self.levels):
            h = getattr(self, f"down{l}")(F.max_pool3d(h, 2) if l > 0 else h)
            skips.append(h)
        skips.pop()
        for l in reversed(range(self.levels - 1)):
            h = getattr(self, f"up_conv{l}")(F.interpolate(h, scale_factor=2, mode="nearest"))
            h = getattr(self, f"up{l}")(torch.cat([h, skips.pop()], 1))
        return 0.5 * (torch.tanh(self.head(h)) + 1)


def gradient_profile_loss(fake, real):
    """Mean over the three axes of L1(forward differences of fake, of real)."""
    return sum((torch.diff(fake, dim=d) - torch.diff(real, dim=d)).abs().mean() for d in (2, 3, 4)) / 3


def ssim_loss(fake, real, sigma=1.5, taps=11):
    """1 − mean SSIM over the valid windows (separable Gaussian σ 1.5, K1 0.01, K2 0.03, range 1)."""
    g = torch.exp(-0.5 * ((torch.arange(taps, dtype=fake.dtype, device=fake.device) - (taps - 1) / 2) / sigma) ** 2)
    g = g / g.sum()
    b = fake.shape[0]
    m = torch.cat([fake, real, fake * fake, real * real, fake * real], 0)
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = taps
        m = F.conv3d(m, g.reshape(shape))
    mx, my, exx, eyy, exy = m.split(b, 0)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mx * my + c1) * (2 * (exy - mx * my) + c2)) / (
        (mx * mx + my * my + c1) * (exx - mx * mx + eyy - my * my + c2))
    return 1 - ssim.mean()


class BPGAN(Pix2Pix):
    """Pix2Pix with the MultiConvUNet and the hybrid loss λ_l1·L1 + λ_gp·GP + λ_ssim·(1 − SSIM) +
    λ_adv·LSGAN (models/baselines/bpgan.cpp)."""

    def __init__(self, c):
        super().__init__(c, MultiConvUNet)

    def generator_loss(self, b, w, gen):
        fake = self.generator(b["t1"])
        critic = lambda x: self.discriminator(torch.cat([b["t1"], x], 1))
        return (l1_adversarial(fake, b["pet"], w, critic) + w["lambda_gp"] * gradient_profile_loss(fake, b["pet"]) +
                w["lambda_ssim"] * ssim_loss(fake, b["pet"]))


def instance_norm(x):
    return F.group_norm(x, x.shape[1], eps=1e-5)  # InstanceNorm3d(affine=False); see the section's note


class ConvNormAct(nn.Module):
    """Conv3³ (stride, padding 1) → InstanceNorm → ReLU | LeakyReLU(0.2) | PReLU (one slope)."""

    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, stride=stride, padding=1)
        self.act = act
        if act == "prelu":
            self.prelu = nn.Parameter(torch.full((1,), 0.25))

    def forward(self, x):
        h = instance_norm(self.conv(x))
        if self.act == "prelu":
            return F.prelu(h, self.prelu)
        return F.relu(h) if self.act == "relu" else F.leaky_relu(h, 0.2)


class ResidualUnit(nn.Module):
    """MONAI's ResidualUnit: `subunits` ConvNormAct plus a shortcut (strided Conv3³ when the grid
    changes, Conv1³ when only the width does, else identity)."""

    def __init__(self, cin, cout, stride, subunits, act):
        super().__init__()
        self.units = nn.ModuleList([ConvNormAct(cin if u == 0 else cout, cout, stride if u == 0 else 1, act)
                                    for u in range(subunits)])
        self.residual = None
        if stride != 1:
            self.residual = nn.Conv3d(cin, cout, 3, stride=stride, padding=1)
        elif cin != cout:
            self.residual = nn.Conv3d(cin, cout, 1)

    def forward(self, x):
        h = x
        for u in self.units:
            h = u(h)
        return h + (self.residual(x) if self.residual is not None else x)


class DenseBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.dense1 = ResidualUnit(cin, cout, 1, 1, "leaky_relu")
        self.conv1 = ConvNormAct(cin + cout, cout, 1, "leaky_relu")
        self.dense2 = ResidualUnit(cout, cout, 1, 1, "leaky_relu")
        self.conv2 = ConvNormAct(2 * cout, cout, 1, "leaky_relu")

    def forward(self, x):
        h = self.conv1(torch.cat([x, self.dense1(x)], 1))
        return self.conv2(torch.cat([h, self.dense2(h)], 1))


BMGAN_STEM, BMGAN_ENCODER_INPUT = 64, 32
BMGAN_DOWN, BMGAN_UP = [128, 256, 256, 512], [512, 256, 256, 256, 128]
BMGAN_ENCODER = [64, 128, 128, 128, 128, 128]
BMGAN_CODE = 8


class DenseUNetGenerator(nn.Module):
    """(T1, code) → PET in [−1, 1]: the code as 8 constant channels, a stem (the last stride 2),
    dense down stages with stride-2 convs, a dense middle, dense up stages on [h, skip] with
    ConvTranspose(4, 2, 1) → InstanceNorm → LeakyReLU, two ConvNormAct and Conv3³ → Tanh."""

    def __init__(self, c):
        super().__init__()
        div, levels = c["bmgan_width_divisor"], c["bmgan_levels"]
        stem = BMGAN_STEM // div
        self.stem = nn.ModuleList([ConvNormAct(1 + BMGAN_CODE, stem, 1, "leaky_relu"),
                                   ConvNormAct(stem, stem, 1, "leaky_relu"), ConvNormAct(stem, stem, 2, "leaky_relu")])
        skips, current = [stem], stem
        self.down_blocks, self.down_convs = nn.ModuleList(), nn.ModuleList()
        for l in range(levels):
            w = BMGAN_DOWN[l] // div
            self.down_blocks.append(DenseBlock(current, w))
            self.down_convs.append(ConvNormAct(w, w, 2, "leaky_relu"))
            skips.append(w)
            current = w
        self.middle = DenseBlock(current, current)
        self.up_blocks, self.up_convs = nn.ModuleList(), nn.ModuleList()
        for i in range(levels + 1):
            w = BMGAN_UP[4 - levels + i] // div
            self.up_blocks.append(DenseBlock(current + skips[-1 - i], w))
            self.up_convs.append(nn.ConvTranspose3d(w, w, 4, stride=2, padding=1))
            current = w
        self.out = nn.ModuleList([ConvNormAct(current, stem, 1, "leaky_relu"), ConvNormAct(stem, stem, 1, "leaky_relu")])
        self.to_pet = conv3(stem, 1)

    def forward(self, t1, code):
        B, _, D, H, W = t1.shape
        h = torch.cat([t1, code.reshape(B, BMGAN_CODE, 1, 1, 1).expand(B, BMGAN_CODE, D, H, W)], 1)
        for s in self.stem:
            h = s(h)
        skips = [h]
        for block, conv in zip(self.down_blocks, self.down_convs):
            h = conv(block(h))
            skips.append(h)
        h = self.middle(h)
        for block, up in zip(self.up_blocks, self.up_convs):
            h = F.leaky_relu(instance_norm(up(block(torch.cat([h, skips.pop()], 1)))), 0.2)
        for o in self.out:
            h = o(h)
        return torch.tanh(self.to_pet(h))


class ResNetEncoder(nn.Module):
    """PET → (μ, log σ²): ConvNormAct(ReLU), bmgan_levels + 2 stride-2 ResidualUnits (PReLU), two Linear heads."""

    def __init__(self, c):
        super().__init__()
        div = c["bmgan_width_divisor"]
        current = BMGAN_ENCODER_INPUT // div
        self.input = ConvNormAct(1, current, 1, "relu")
        self.stages = nn.ModuleList()
        grid = list(c["volume"])
        for i in range(c["bmgan_levels"] + 2):
            self.stages.append(ResidualUnit(current, BMGAN_ENCODER[i] // div, 2, 2, "prelu"))
            current = BMGAN_ENCODER[i] // div
            grid = [(n - 1) // 2 + 1 for n in grid]
        features = current * grid[0] * grid[1] * grid[2]
        self.mu, self.log_variance = nn.Linear(features, BMGAN_CODE), nn.Linear(features, BMGAN_CODE)

    def forward(self, pet):
        h = self.input(pet)
        for s in self.stages:
            h = s(h)
        h = h.flatten(1)
        return self.mu(h), self.log_variance(h)


def kl_gaussian(mu, logvar):
    return -0.5 * torch.sum(1 + logvar - mu ** 2 - logvar.exp()) / mu.shape[0]


class BMGAN(Baseline):
    """G(T1, z ~ N(0, I)); E learns KL(E(PET)) + KL(E(G(T1, z) detached)) unweighted and is stepped
    with G; the PatchGAN on the PET alone (models/baselines/bmgan.cpp, with its departures from the
    reference: D is stepped, E's update rides in the generator phase, the D phase draws a new z)."""

    def __init__(self, c):
        super().__init__()
        self.generator = DenseUNetGenerator(c)
        self.encoder = ResNetEncoder(c)
        self.discriminator = PatchDiscriminator(c)

    def discriminators(self):
        return [self.discriminator]

    def code(self, b, gen):
        n = b["t1"].shape[0]
        return torch.zeros(n, BMGAN_CODE) if gen is None else torch.randn(n, BMGAN_CODE, generator=gen)

    def synthesise(self, b, gen=None):
        return self.generator(b["t1"], self.code(b, gen))

    def generator_loss(self, b, w, gen):
        fake = self.synthesise(b, gen)
        total = l1_adversarial(fake, b["pet"], w, self.discriminator)
        return total + kl_gaussian(*self.encoder(b["pet"])) + kl_gaussian(*self.encoder(fake.detach()))

    def discriminator_loss(self, b, w, gen):
        with torch.no_grad():
            fake = self.synthesise(b, gen)
        return lsgan_discriminator(self.discriminator, fake, b["pet"])


BASELINES = {"unet": AttentionUNetModel, "unet-cond": AttentionUNetModel, "pix2pix": Pix2Pix, "cyclegan": CycleGAN,
             "bmgan": BMGAN, "bpgan": BPGAN}
KINDS = ["causal-pets"] + list(BASELINES)


# ---- safetensors writer ---------------------------------------------------------------------------

def save_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        data = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


# ---- modes ----------------------------------------------------------------------------------------

def count(c):
    m = CausalPETS(c)
    n = lambda mod: sum(p.numel() for p in mod.parameters()) if mod is not None else 0
    counts = {"kind": "causal-pets", "encoder": n(m.encoder), "encoder_demographics": n(m.encoder.demographics),
              "encoder_transformer": n(m.encoder.transformer), "fusion": n(m.fusion), "t1_decoder": n(m.t1_decoder),
              "pet_generator": n(m.pet_generator), "discriminator": n(m.discriminator), "total": n(m)}
    print(json.dumps(counts, indent=1))


def on_meta(build):
    """build() on the meta device where PyTorch has it (2.x): counting the full BMGAN's 265 M
    parameters then allocates and initialises nothing."""
    try:
        device = torch.device("meta")
        device.__enter__
    except AttributeError:  # PyTorch 1.x: a device is no context manager
        return build()
    with device:
        return build()


def baseline_counts(name, kind, tracer="AV45"):
    """Generator-phase parameters (what G's Adam steps: BMGAN's E included), discriminator-phase
    parameters, the total, and per network."""
    m = on_meta(lambda: BASELINES[kind](baseline_preset(name, kind, tracer)))
    n = lambda params: sum(p.numel() for p in params)
    return {"kind": kind, "preset": name, "generator": n(m.generator_parameters()),
            "discriminator": n(m.discriminator_parameters()), "total": n(m.parameters()),
            "networks": {k: n(child.parameters()) for k, child in m.named_children()}}


# Ours: (generator phase, discriminator phase) per kind and preset, AV45, as
# `cpets-train --print-model --set model.kind=K --set model.preset=P` prints them (Causal PETS:
# E + f + G_T1 + G_P, and D); tests/test_baselines.cpp pins the same table on the C++ side.
OUR_COUNTS = {
    "causal-pets": {"tiny": (82652, 11573), "demo": (1387448, 169169), "full": (10164328, 2642753)},
    "unet": {"tiny": (108881, 11573), "demo": (3150145, 697809), "full": (12562945, 11048769)},
    "unet-cond": {"tiny": (108881, 11573), "demo": (3150145, 697809), "full": (12562945, 11048769)},
    "pix2pix": {"tiny": (17709, 11829), "demo": (1050001, 698833), "full": (16770625, 11052865)},
    "cyclegan": {"tiny": (35418, 23146), "demo": (2100002, 1395618), "full": (33541250, 22097538)},
    "bmgan": {"tiny": (254333 + 14980, 11573), "demo": (5980657 + 322730, 705513),
              "full": (247592897 + 6433756, 11177889)},
    "bpgan": {"tiny": (38957, 11829), "demo": (552665, 698833), "full": (2208177, 11052865)},
}


def phase_counts(name, kind):
    if kind != "causal-pets":
        got = baseline_counts(name, kind)
        return got["generator"], got["discriminator"]
    m = on_meta(lambda: CausalPETS(preset(name)))
    return (sum(p.numel() for mod in m.generator_modules() for p in mod.parameters()),
            sum(p.numel() for p in m.discriminator.parameters()))


def check_counts():
    """Every kind and preset: this build's counts against OUR_COUNTS; exit status 1 on a mismatch."""
    bad = 0
    for kind, presets in OUR_COUNTS.items():
        for name, ours in presets.items():
            got = phase_counts(name, kind)
            bad += got != ours
            verdict = "equal" if got == ours else f"DIFFER: cpets has G {ours[0]:,}, D {ours[1]:,}"
            print(f"{kind:12s} {name:5s} G {got[0]:>12,}  D {got[1]:>12,}  {verdict}")
    print("all counts equal ours" if bad == 0 else f"{bad} of the counts differ from ours")
    return 1 if bad else 0


def randomise(model, gen):
    """Every parameter non-trivial (also the zero-initialised convs and the norms' affines), so
    every gradient path is exercised: weights U(±1/√fan_in), norm scales 1 + U(±0.2), biases U(±0.2)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            u = torch.rand(p.shape, generator=gen) * 2 - 1
            if p.dim() >= 2:
                fan_in = p.shape[1] * (p[0, 0].numel())
                p.copy_(u / math.sqrt(fan_in))
            elif name.endswith("weight"):  # GroupNorm / LayerNorm / BatchNorm scale
                p.copy_(1 + 0.2 * u)
            else:
                p.copy_(0.2 * u)


# The golden fixtures: "reference" is the default model and objective; "vae-raw" the other
# branches (vae latent, raw fusion, MSE T1 loss, no ε_PET, no discriminator).
VARIANTS = {
    "reference": ({}, {"lambda_adv": 0.005, "beta_kl": 0.001, "t1_loss": "l1", "eps_pet": True}),
    "vae-raw": ({"latent": "vae", "fusion": "raw", "discriminator": False},
                {"lambda_adv": 0.005, "beta_kl": 0.001, "t1_loss": "mse", "eps_pet": False}),
}


def fixture(path, variant="reference", seed=2024, batch=2):
    overrides, objective = VARIANTS[variant]
    c = preset("tiny")
    c.update(overrides)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = CausalPETS(c)
    randomise(model, gen)
    model.train()
    D, H, W = c["volume"]
    g = [v // 8 for v in c["volume"]]
    z = c["latent_channels"]
    inputs = {"t1": torch.rand(batch, 1, D, H, W, generator=gen), "pet": torch.rand(batch, 1, D, H, W, generator=gen),
              "csf": torch.rand(batch, c["csf_inputs"], generator=gen),
              "covariates": torch.tensor([[0.3, 1.0, 2.0, 0.7], [0.8, 0.0, 0.0, 0.25]])[:batch]}
    noise = {"eps_t1": torch.randn(batch, z, *g, generator=gen), "eps_pet": torch.randn(batch, z, *g, generator=gen)}
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    # Generator step: D frozen (its parameters get no gradient), D in training mode (batch
    # statistics, running statistics updated), as the reference.
    if model.discriminator is not None:
        for p in model.discriminator.parameters():
            p.requires_grad_(False)
    terms, out = generator_objective(model, inputs, noise, **objective)
    terms["total"].backward()
    tensors = {f"input.{k}": v for k, v in inputs.items()}
    tensors.update({f"noise.{k}": v for k, v in noise.items()})
    tensors.update({f"weight.{k}": v for k, v in weights.items()})
    tensors.update({f"loss.{k}": v.reshape(()) for k, v in terms.items()})
    for k in ("mu", "s", "tokens", "t1_rec", "pet_syn"):
        if out[k] is not None:
            tensors[f"output.{k}"] = out[k]
    for mod_name in ("encoder", "fusion", "t1_decoder", "pet_generator"):
        if getattr(model, mod_name) is None:
            continue
        for name, p in getattr(model, mod_name).named_parameters(prefix=mod_name):
            assert p.grad is not None, name
            tensors[f"grad.{name}"] = p.grad

    # Discriminator step on the detached fake and the real PET (fake first).
    if model.discriminator is not None:
        for p in model.discriminator.parameters():
            p.requires_grad_(True)
        l_fake, l_real = discriminator_objective(model, out["pet_syn"].detach(), inputs["pet"])
        (l_fake + l_real).backward()
        tensors["dloss.fake"], tensors["dloss.real"] = l_fake, l_real
        for name, p in model.discriminator.named_parameters(prefix="discriminator"):
            tensors[f"dgrad.{name}"] = p.grad
        for name, b in model.discriminator.named_buffers(prefix="discriminator"):
            tensors[f"after.{name}"] = b

    meta = {"config": json.dumps(c), "objective": json.dumps(objective), "variant": variant,
            "torch": torch.__version__, "producer": "tools/torch_model.py --fixture"}
    save_safetensors(path, tensors, meta)
    print(f"wrote {path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


# Our parameter names where a PyTorch module's differ (nn.ModuleList indices against our named
# members); the other kinds share their names exactly.
BMGAN_NAMES = [(r"generator\.stem\.(\d+)", r"generator.stem\1"), (r"\.down_blocks\.(\d+)", r".down\1"),
               (r"\.down_convs\.(\d+)", r".down\1_conv"), (r"\.up_blocks\.(\d+)", r".up\1"),
               (r"\.up_convs\.(\d+)", r".up\1_conv"), (r"generator\.out\.(\d+)", r"generator.out\1"),
               (r"\.units\.(\d+)", r".unit\1"), (r"\.stages\.(\d+)", r".stage\1")]


def our_name(kind, name):
    if kind == "bmgan":
        for pattern, repl in BMGAN_NAMES:
            name = re.sub(pattern, repl, name)
    return name


def baseline_fixture(path, seed=2025, batch=2):
    """Every baseline kind at the tiny preset with random weights (randomise) on random inputs: the
    weights of everything but the discriminators under our parameter names, the inputs, and the
    PET its generator synthesises in eval mode (BMGAN with code z = 0), as cpets-infer runs it, and
    BPGAN's gradient profile and SSIM losses of that PET against the batch's. tests/test_baselines.cpp loads the
    weights into our build of the kind and compares."""
    tensors, meta = {}, {"producer": "tools/torch_model.py --baseline-fixture", "torch": torch.__version__}
    for kind in [k for k in KINDS if k != "causal-pets"]:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        c, model = build("tiny", kind)
        randomise(model, gen)
        model.eval()
        b = random_batch(c, batch, gen)
        with torch.no_grad():
            pet = model.synthesise(b)
        for k in ("t1", "csf", "covariates"):
            tensors[f"{kind}.input.{k}"] = b[k]
        for name, v in model.state_dict().items():  # the discriminators play no part in synthesis
            if not name.endswith("num_batches_tracked") and "discriminator" not in name:
                tensors[f"{kind}.weight.{our_name(kind, name)}"] = v
        tensors[f"{kind}.output.pet"] = pet
        if kind == "bpgan":  # its hybrid loss's structural terms, synthetic against the batch's PET
            tensors["bpgan.input.pet"] = b["pet"]
            tensors["bpgan.loss.gp"] = gradient_profile_loss(pet, b["pet"]).reshape(())
            tensors["bpgan.loss.ssim"] = ssim_loss(pet, b["pet"]).reshape(())
        meta[f"{kind}.config"] = json.dumps(c)
    save_safetensors(path, tensors, meta)
    print(f"wrote {path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


def random_batch(c, batch, gen):
    D, H, W = c["volume"]
    return {"t1": torch.rand(batch, 1, D, H, W, generator=gen), "pet": torch.rand(batch, 1, D, H, W, generator=gen),
            "csf": torch.rand(batch, c["csf_inputs"], generator=gen), "covariates": torch.rand(batch, 4, generator=gen)}


def causal_pets_step(model, c, batch, gen):
    """G step (D frozen), then the D step on a fake regenerated by the updated generator."""
    opt_g = torch.optim.Adam([p for m in model.generator_modules() for p in m.parameters()], lr=1e-4,
                             betas=(0.9, 0.999), eps=1e-8)
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=5e-4, betas=(0.9, 0.999), eps=1e-8)
    shape = (batch["t1"].shape[0], c["latent_channels"], *[v // 8 for v in c["volume"]])

    def step():
        for p in model.discriminator.parameters():
            p.requires_grad_(False)
        noise = {"eps_t1": torch.randn(shape, generator=gen), "eps_pet": torch.randn(shape, generator=gen)}
        opt_g.zero_grad(set_to_none=True)
        terms, _ = generator_objective(model, batch, noise)
        terms["total"].backward()
        opt_g.step()
        for p in model.discriminator.parameters():
            p.requires_grad_(True)
        with torch.no_grad():  # the fake is regenerated by the updated generator, new ε_PET
            mu, s = model.encode(batch["t1"], batch["covariates"])
            tokens = model.fusion(torch.cat([batch["csf"], batch["covariates"]], 1))
            fake = model.pet_generator(model.reparameterise(mu, s, torch.randn(shape, generator=gen)), tokens)
        opt_d.zero_grad(set_to_none=True)
        l_fake, l_real = discriminator_objective(model, fake, batch["pet"])
        (l_fake + l_real).backward()
        opt_d.step()
    return step


def baseline_step(model, kind, batch, gen):
    """train/trainer.cpp training_step for a baseline: G phase (discriminators frozen, still in
    training mode), Adam; then the D phase on fakes regenerated without gradients, Adam."""
    w = TRAIN_DEFAULTS[kind]
    adam = lambda params, lr: torch.optim.Adam(params, lr=lr, betas=(w["beta1"], 0.999), eps=1e-8)
    d_params = model.discriminator_parameters()
    opt_g, opt_d = adam(model.generator_parameters(), w["lr"]), adam(d_params, w["lr_d"])

    def step():
        for p in d_params:
            p.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        model.generator_loss(batch, w, gen).backward()
        opt_g.step()
        for p in d_params:
            p.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)
        model.discriminator_loss(batch, w, gen).backward()
        opt_d.step()
    return step


def build(name, kind):
    if kind == "causal-pets":
        c = preset(name)
        return c, CausalPETS(c)
    c = baseline_preset(name, kind)
    return c, BASELINES[kind](c)


def bench(name, steps, warmup, full_infer, batch_size=2, kind="causal-pets", device="cpu", precision="fp32"):
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    if precision != "fp32" and not gpu:
        raise SystemExit("--precision %s is tensor-core arithmetic; the CPU runs fp32 (leave it out or --device cuda)"
                         % precision)
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    # Autocast around the whole step: the backward and Adam see the same bf16 products as the
    # forward, the parameters and their gradients stay fp32 (no loss scaling: bf16 has fp32's range).
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    if gpu:  # every tensor, the weights and the random draws on the GPU (PyTorch 2.x)
        torch.set_default_device(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if gpu else (lambda: None)
    torch.manual_seed(0)
    gen = torch.Generator(device=dev).manual_seed(0)
    c, model = build(name, kind)
    model.train()
    batch = random_batch(c, batch_size, gen)
    step = causal_pets_step(model, c, batch, gen) if kind == "causal-pets" else baseline_step(model, kind, batch, gen)

    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with amp():
            step()
        sync()  # a GPU step is queued asynchronously
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = "unknown"
    with amp():
        infer = infer_seconds(model, c, gen, sync=sync)
    result = {"preset": name, "kind": kind, "batch": batch_size, "threads": torch.get_num_threads(), "steps": steps,
              "torch": torch.__version__, "cpu_capability": capability, "precision": precision,
              "train_step_seconds": times[len(times) // 2],
              "infer_seconds": infer,
              "device": torch.cuda.get_device_name(dev) if gpu else "cpu"}
    if full_infer:
        cf, full = build("full", kind)
        with amp():
            result["infer_full_seconds"] = infer_seconds(full, cf, gen, sync=sync)
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if gpu:
        result["peak_device_bytes"] = torch.cuda.max_memory_allocated(dev)
    print(json.dumps(result))


def flops(name):
    """Floating-point operations of one training step per sample (G phase forward + backward, the
    regenerated fake, D phase forward + backward), counted by PyTorch on the meta device: nothing
    is computed, so the full preset takes a second. Needs PyTorch 2.x (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode
    c = preset(name)
    with torch.device("meta"):
        model = CausalPETS(c)
        model.train()
        D, H, W = c["volume"]
        batch = {"t1": torch.rand(1, 1, D, H, W), "pet": torch.rand(1, 1, D, H, W),
                 "csf": torch.rand(1, c["csf_inputs"]), "covariates": torch.rand(1, 4)}
        shape = (1, c["latent_channels"], *[v // 8 for v in c["volume"]])
        with FlopCounterMode(display=False) as counter:
            terms, _ = generator_objective(model, batch, {"eps_t1": torch.randn(shape), "eps_pet": torch.randn(shape)})
            terms["total"].backward()
            with torch.no_grad():
                mu, s = model.encode(batch["t1"], batch["covariates"])
                tokens = model.fusion(torch.cat([batch["csf"], batch["covariates"]], 1))
                fake = model.pet_generator(model.reparameterise(mu, s, torch.randn(shape)), tokens)
            l_fake, l_real = discriminator_objective(model, fake, batch["pet"])
            (l_fake + l_real).backward()
    print(json.dumps({"preset": name, "gflop_per_sample_step": counter.get_total_flops() / 1e9}))


def infer_seconds(model, c, gen, repeats=3, sync=lambda: None):
    """Inference of one subject (Causal PETS: μ_S from E, B from f, PET = G_P(μ_S, B); a baseline:
    its generator on the T1, as cpets-infer); median of a few runs."""
    model.eval()
    b = random_batch(c, 1, gen)
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            if isinstance(model, Baseline):
                model.synthesise(b)  # no noise: BMGAN's code z = 0
            else:
                mu, _ = model.encode(b["t1"], b["covariates"])
                model.pet_generator(mu, model.fusion(torch.cat([b["csf"], b["covariates"]], 1)))
            sync()
            times.append(time.perf_counter() - t0)
    model.train()
    return sorted(times)[len(times) // 2]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="causal-pets", choices=KINDS, help="model.kind of --count and --bench")
    ap.add_argument("--count", choices=["full", "demo", "tiny"])
    ap.add_argument("--check-counts", action="store_true", help="every kind's and preset's counts against ours")
    ap.add_argument("--tracer", default="AV45", choices=["AV45", "AV1451"])
    ap.add_argument("--fixture", metavar="OUT.safetensors")
    ap.add_argument("--variant", default="reference", choices=sorted(VARIANTS), help="which golden fixture")
    ap.add_argument("--baseline-fixture", metavar="OUT.safetensors",
                    help="every baseline kind's weights, inputs and synthesised PET (tests/test_baselines.cpp)")
    ap.add_argument("--bench", choices=["demo", "full", "tiny"])
    ap.add_argument("--bench-full-infer", action="store_true")
    ap.add_argument("--flops", choices=["demo", "full", "tiny"], help="GFLOP of one training step per sample (meta device)")
    ap.add_argument("--batch", type=int, default=2, help="batch size of the benchmarked training step")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    ap.add_argument("--device", default="cpu", help="where --bench runs: cpu, cuda or cuda:N")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"],
                    help="--bench on a GPU: TF32 off (fp32) or on (tf32), or bf16 autocast")
    args = ap.parse_args()
    if args.kind != "causal-pets" and (args.fixture or args.flops):
        ap.error("--fixture and --flops build Causal PETS only; leave --kind out")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.count:
        if args.kind == "causal-pets":
            count(preset(args.count, args.tracer))
        else:
            print(json.dumps(baseline_counts(args.count, args.kind, args.tracer), indent=1))
    if args.fixture:
        fixture(args.fixture, args.variant)
    if args.baseline_fixture:
        baseline_fixture(args.baseline_fixture)
    if args.bench:
        bench(args.bench, args.steps, args.warmup, args.bench_full_infer, args.batch, args.kind, args.device,
              args.precision)
    if args.flops:
        flops(args.flops)
    if args.check_counts:
        raise SystemExit(check_counts())
    if not (args.count or args.fixture or args.baseline_fixture or args.bench or args.flops):
        ap.print_help()
