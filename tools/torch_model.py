#!/usr/bin/python3
"""A PyTorch build of docs/model.md, with state_dict names and shapes identical to cpets'
(models/networks.cpp), written independently of the C++ code from the spec. Uses Debian's
python3-torch (1.13, CPU) and nothing else.

  --count full|demo|tiny   parameter counts per network (to double-check models/'s figures)
  --fixture OUT [--variant reference|vae-raw]
                           golden fixture for tests/test_golden.cpp (tiny preset): random but
                           fixed weights (every parameter non-trivial, also the zero-initialised
                           ones), inputs and noise; the generator objective's terms and outputs
                           and the gradient of L_G w.r.t. every generator parameter; then one
                           discriminator step on the detached fake: its two losses, D's gradients
                           and the BatchNorm running statistics after both steps.
  --flops full              GFLOP of one training step per sample, counted on the meta device
                           (PyTorch 2.x): the compute side of the README's scaling model.
  --bench demo             median time of a full training step (G forward+backward+Adam, then D
                           step on a regenerated fake) at batch 2 (--batch) on random data, peak RSS and
                           one inference; prints JSON. --bench-full-infer adds one full-preset
                           inference.

The fixture is written with a small safetensors writer of our own (the `safetensors` package is
not a Debian package): 8-byte little-endian header length, JSON header, raw float32 data.
"""
import argparse
import json
import math
import os
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
    def __init__(self, c):
        super().__init__()
        d = c["discriminator_channels"]
        bn = dict(eps=c["bn_eps"], momentum=c["bn_momentum"])
        self.initial_conv = nn.Conv3d(1, d, 4, stride=2, padding=1)
        self.conv1 = nn.Conv3d(d, 2 * d, 4, stride=2, padding=1, bias=False)
        self.norm1 = nn.BatchNorm3d(2 * d, **bn)
        self.conv2 = nn.Conv3d(2 * d, 4 * d, 4, stride=1, padding=1, bias=False)
        self.norm2 = nn.BatchNorm3d(4 * d, **bn)
        self.final_conv = nn.Conv3d(4 * d, 1, 4, stride=1, padding=1)
        for m in (self.initial_conv, self.conv1, self.conv2, self.final_conv):
            nn.init.normal_(m.weight, 0.0, 0.02)
        for m in (self.norm1, self.norm2):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        h = F.leaky_relu(self.initial_conv(x), 0.2)
        h = F.leaky_relu(self.norm1(self.conv1(h)), 0.2)
        h = F.leaky_relu(self.norm2(self.conv2(h)), 0.2)
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
    counts = {"encoder": n(m.encoder), "encoder_demographics": n(m.encoder.demographics),
              "encoder_transformer": n(m.encoder.transformer), "fusion": n(m.fusion), "t1_decoder": n(m.t1_decoder),
              "pet_generator": n(m.pet_generator), "discriminator": n(m.discriminator), "total": n(m)}
    print(json.dumps(counts, indent=1))


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


def random_batch(c, batch, gen):
    D, H, W = c["volume"]
    return {"t1": torch.rand(batch, 1, D, H, W, generator=gen), "pet": torch.rand(batch, 1, D, H, W, generator=gen),
            "csf": torch.rand(batch, c["csf_inputs"], generator=gen), "covariates": torch.rand(batch, 4, generator=gen)}


def bench(name, steps, warmup, full_infer, batch_size=2):
    c = preset(name)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = CausalPETS(c)
    model.train()
    g_params = [p for m in model.generator_modules() for p in m.parameters()]
    opt_g = torch.optim.Adam(g_params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=5e-4, betas=(0.9, 0.999), eps=1e-8)
    batch = random_batch(c, batch_size, gen)
    shape = (batch_size, c["latent_channels"], *[v // 8 for v in c["volume"]])

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

    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = "unknown"
    result = {"preset": name, "batch": batch_size, "threads": torch.get_num_threads(), "steps": steps,
              "torch": torch.__version__, "cpu_capability": capability,
              "train_step_seconds": times[len(times) // 2],
              "infer_seconds": infer_seconds(model, c, gen)}
    if full_infer:
        cf = preset("full")
        result["infer_full_seconds"] = infer_seconds(CausalPETS(cf), cf, gen)
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
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


def infer_seconds(model, c, gen, repeats=3):
    """Inference of one subject: μ_S from E, B from f, PET = G_P(μ_S, B); median of a few runs."""
    model.eval()
    b = random_batch(c, 1, gen)
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            mu, _ = model.encode(b["t1"], b["covariates"])
            model.pet_generator(mu, model.fusion(torch.cat([b["csf"], b["covariates"]], 1)))
            times.append(time.perf_counter() - t0)
    model.train()
    return sorted(times)[len(times) // 2]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", choices=["full", "demo", "tiny"])
    ap.add_argument("--tracer", default="AV45", choices=["AV45", "AV1451"])
    ap.add_argument("--fixture", metavar="OUT.safetensors")
    ap.add_argument("--variant", default="reference", choices=sorted(VARIANTS), help="which golden fixture")
    ap.add_argument("--bench", choices=["demo", "full", "tiny"])
    ap.add_argument("--bench-full-infer", action="store_true")
    ap.add_argument("--flops", choices=["demo", "full", "tiny"], help="GFLOP of one training step per sample (meta device)")
    ap.add_argument("--batch", type=int, default=2, help="batch size of the benchmarked training step")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.count:
        count(preset(args.count, args.tracer))
    if args.fixture:
        fixture(args.fixture, args.variant)
    if args.bench:
        bench(args.bench, args.steps, args.warmup, args.bench_full_infer, args.batch)
    if args.flops:
        flops(args.flops)
    if not (args.count or args.fixture or args.bench or args.flops):
        ap.print_help()
