#!/usr/bin/env python3
"""Writes tests/fixtures/interop/reference_names.json: the state_dict names and shapes of MONAI
GenerativeModels' (GM) autoencoderkl.Decoder and PatchDiscriminator, built as the paper's
reference code builds its T1 decoder and discriminator (causal_synthesis/configs/
training_causal.json), at the widths of each of our presets. `export_torch.py --check` compares
its --names reference export with this list, without monai.

  ~/.cache/cpets/torch-venv/bin/pip install monai-generative      (0.2.3; it pulls monai)
  ~/.cache/cpets/torch-venv/bin/python tools/make_reference_names_fixture.py [OUT.json]

Before writing, it checks what the list stands for:
- the full preset builds GM's classes with the reference config's very arguments (adapted as
  reference-implementation.md §8.1 says GM's Decoder needs);
- export_torch's mapping takes every tensor of torch_model's t1_decoder and discriminator to a
  GM tensor of the same shape, one to one (the mapping follows structure; shapes confirm it);
- with our weights loaded under those names, GM's networks compute what ours compute (random
  weights and inputs, a small volume: the networks are convolutional, widths are what matter).
"""
import argparse
import json
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_torch  # noqa: E402
import torch_model as tm  # noqa: E402

try:
    import generative
    import monai
    from generative.networks.nets import PatchDiscriminator
    from generative.networks.nets.autoencoderkl import Decoder
except ImportError as e:
    raise SystemExit(f"make_reference_names_fixture: {e}: install MONAI GenerativeModels into this Python "
                     "(~/.cache/cpets/torch-venv/bin/pip install monai-generative) and run it with that Python")

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                                    "interop", "reference_names.json"))
PRESETS = ("full", "demo", "tiny")

# causal_synthesis/configs/training_causal.json, verbatim: t1_autoencoder_def.decoder, discriminator.
REFERENCE_DECODER = {"spatial_dims": 3, "in_channels": 3, "out_channels": 1, "num_channels": [32, 64, 64, 64],
                     "num_res_blocks": 2, "norm_num_groups": 32, "norm_eps": 1e-06,
                     "attention_levels": [False, False, False, False], "with_encoder_nonlocal_attn": False,
                     "with_decoder_nonlocal_attn": False}
REFERENCE_DISCRIMINATOR = {"spatial_dims": 3, "num_channels": 64, "num_layers_d": 2, "in_channels": 1,
                           "out_channels": 1}


def gm_decoder_args(cfg):
    """GM's Decoder rejects the config's with_encoder_nonlocal_attn / with_decoder_nonlocal_attn and
    an int num_res_blocks (the reference's fork accepted them): the decoder's flag becomes
    with_nonlocal_attn, the encoder's is dropped, num_res_blocks is given per level."""
    args = {k: v for k, v in cfg.items() if k not in ("with_encoder_nonlocal_attn", "with_decoder_nonlocal_attn")}
    args["with_nonlocal_attn"] = cfg["with_decoder_nonlocal_attn"]
    args["num_res_blocks"] = [cfg["num_res_blocks"]] * len(cfg["num_channels"])
    return args


def reference_configs(c):
    """The reference config with our preset's widths. GM's Decoder takes the encoder's channel
    order and reverses it, so our t1_decoder_channels enter reversed."""
    ch = list(reversed(c["t1_decoder_channels"]))
    decoder = dict(REFERENCE_DECODER, in_channels=c["latent_channels"], num_channels=ch,
                   norm_num_groups=c["t1_decoder_groups"], norm_eps=c["norm_eps"], attention_levels=[False] * len(ch))
    return decoder, dict(REFERENCE_DISCRIMINATOR, num_channels=c["discriminator_channels"])


def randomised(module, seed):
    """Every parameter and BatchNorm statistic non-trivial, so a swapped tensor shows."""
    gen = torch.Generator().manual_seed(seed)
    tm.randomise(module, gen)
    with torch.no_grad():
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.rand(b.shape, generator=gen) - 0.5)
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
    return module.eval()


def same_names_and_shapes(preset, network, ours, gm):
    got = {n: list(t.shape) for n, t in ours.items()}
    want = {n: list(t.shape) for n, t in gm.items()}
    if got != want:
        diff = [f"{n}: ours {got.get(n)}, GM {want.get(n)}" for n in sorted(set(got) | set(want))
                if got.get(n) != want.get(n)]
        raise SystemExit(f"make_reference_names_fixture: preset {preset}, {network}: export_torch's names differ "
                         f"from GM's at {diff[:5]} (fix gm_*_module in tools/export_torch.py)")


def same_outputs(preset, network, ours, gm, x):
    with torch.no_grad():
        a, b = ours(x), gm(x)
    b = b[-1] if isinstance(b, list) else b  # PatchDiscriminator returns every layer's output
    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        raise SystemExit(f"make_reference_names_fixture: preset {preset}, {network}: GM's network with our weights "
                         "computes something else than ours (the mapping pairs tensors of equal shape wrongly: fix "
                         "gm_*_module in tools/export_torch.py)")


def preset_entry(preset):
    c = tm.preset(preset)
    decoder_cfg, disc_cfg = reference_configs(c)
    if preset == "full" and (decoder_cfg, disc_cfg) != (REFERENCE_DECODER, REFERENCE_DISCRIMINATOR):
        raise SystemExit("make_reference_names_fixture: torch_model's full preset no longer has the reference "
                         f"config's T1 decoder / discriminator: {decoder_cfg} / {disc_cfg}")
    torch.manual_seed(0)
    gm_dec, gm_disc = Decoder(**gm_decoder_args(decoder_cfg)), PatchDiscriminator(**disc_cfg)
    ours_dec, ours_disc = randomised(tm.T1Decoder(c), 1), randomised(tm.PatchDiscriminator(c), 2)
    n_blocks = len(ours_dec.blocks)
    dec_state = export_torch.renamed(ours_dec.state_dict(), lambda m: export_torch.gm_decoder_module(m, n_blocks),
                                     "t1_decoder")
    disc_state = export_torch.renamed(ours_disc.state_dict(), export_torch.gm_discriminator_module, "discriminator")
    same_names_and_shapes(preset, "t1_decoder", dec_state, gm_dec.state_dict())
    same_names_and_shapes(preset, "discriminator", disc_state, gm_disc.state_dict())
    gm_dec.load_state_dict(dec_state, strict=True)
    gm_disc.load_state_dict(disc_state, strict=True)
    gen = torch.Generator().manual_seed(3)
    same_outputs(preset, "t1_decoder", ours_dec, gm_dec.eval(),
                 torch.randn(1, c["latent_channels"], 2, 2, 2, generator=gen))
    same_outputs(preset, "discriminator", ours_disc, gm_disc.eval(), torch.rand(1, 1, 16, 16, 16, generator=gen))
    print(f"{preset}: t1_decoder {len(dec_state)} tensors, discriminator {len(disc_state)} tensors: GM's names and "
          "shapes, same outputs")
    shapes = lambda net: {n: list(t.shape) for n, t in net.state_dict().items()}  # noqa: E731
    return {"t1_decoder": {"class": "generative.networks.nets.autoencoderkl.Decoder",
                           "args": gm_decoder_args(decoder_cfg), "tensors": shapes(gm_dec)},
            "discriminator": {"class": "generative.networks.nets.PatchDiscriminator", "args": disc_cfg,
                              "tensors": shapes(gm_disc)}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=OUT)
    a = ap.parse_args()
    fixture = {"producer": "tools/make_reference_names_fixture.py",
               "about": "GM's state_dict names and shapes (no 'module.' prefix) of the reference's T1 decoder and "
                        "discriminator at our presets' widths; export_torch.py --check compares with them",
               "monai_generative": getattr(generative, "__version__", "unknown"), "monai": monai.__version__,
               "presets": {p: preset_entry(p) for p in PRESETS}}
    text = json.dumps(fixture, indent=1)
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
                  text)  # a list of numbers or flags on one line: one tensor a line
    with open(a.out, "w") as f:
        f.write(text + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
