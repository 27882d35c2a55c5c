"""`toymodels sae train DATASET.safetensors --out DIR [key=value ...]`: train SAEs and export SAELens folders.

A list value (e.g. `variant=[topk,jumprelu]`, `d_sae=[64,128]`) trains the product of all listed values; a key
that a chosen variant does not have is an error. `--plugin my_sae.py` registers a user's variant first."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

EXAMPLES = """examples:
  toymodels sae train data.safetensors --out runs/saes variant=[topk,batchtopk,matryoshka] d_sae=128 k=4
  toymodels sae train data.safetensors --out runs/saes variant=relu "l1_coeff=[0.3,1,3]" steps=5000
  toymodels sae train data.safetensors --plugin my_sae.py --out runs/saes variant=my_variant
"""


def register(sub) -> None:
    p = sub.add_parser("sae", help="train sparse autoencoders and export them in SAELens format", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = p.add_subparsers(dest="sae_command", metavar="SAE_COMMAND")
    t = ssub.add_parser("train", help="train one or more SAEs on a safetensors file with a `hidden` tensor",
                        usage="toymodels sae train DATASET.safetensors --out DIR [key=value ...]",
                        description=__doc__.splitlines()[0], epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    # argparse cannot mix positionals around an option, so key=value after `--out DIR` are collected by --out
    t.add_argument("args", nargs="+", metavar="DATASET [key=value ...]",
                   help="dataset file (safetensors with `hidden` [n_samples, d_in] float32), then key=value for any "
                        "field of the chosen variant's config or of SAETrainConfig")
    t.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                   help="import a user's SAE variant(s) first (repeatable)")
    t.add_argument("--out", nargs="+", required=True, metavar="DIR",
                   help="folder; one SAELens sub-folder per SAE (key=value may follow)")
    t.set_defaults(func=_train)
    p.set_defaults(func=lambda args: p.print_help())


def expand(sae_kw: dict) -> list[dict]:
    """Cartesian product over list-valued keys (except `prefixes`/`betas`, whose values are lists)."""
    keys = list(sae_kw)
    vals = [v if isinstance(v, list) and not (k == "prefixes" and v and not isinstance(v[0], list)) else [v]
            for k, v in sae_kw.items()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*vals)]


def split_keys(values: dict) -> tuple[dict, dict]:
    """(SAE config keys, SAETrainConfig keys). `seed` goes to the SAEs; a key no variant and no training
    field has is an error here, a key the chosen variant lacks is one when its config is built."""
    from toymodels.errors import ConfigError
    from toymodels.sae import SAETrainConfig
    from toymodels.sae.registry import config_fields, variant_names

    sae_keys = {"variant"}.union(*(config_fields(v) for v in variant_names()))
    train_keys = {f.name for f in dataclasses.fields(SAETrainConfig)} - sae_keys
    sae_kw, train_kw = {}, {}
    for key, value in values.items():
        if key not in sae_keys | train_keys:
            raise ConfigError(f"{key}: unknown key; valid keys: {', '.join(sorted(sae_keys | train_keys))}")
        (train_kw if key in train_keys else sae_kw)[key] = value
    return sae_kw, train_kw


def _train(args) -> None:
    from toymodels.cli import parse_overrides
    from toymodels.groundtruth.files import load_dataset
    from toymodels.io import safe_join
    from toymodels.sae import SAEConfig, SAETrainConfig, export_saelens, load_plugin, train_saes

    for spec in args.plugin:
        load_plugin(spec)
    dataset, overrides = Path(args.args[0]), args.args[1:] + args.out[1:]
    out = Path(args.out[0])
    sae_kw, train_kw = split_keys(parse_overrides(overrides))
    if "betas" in train_kw:
        train_kw["betas"] = tuple(train_kw["betas"])
    tc = SAETrainConfig(**train_kw)
    hidden = load_dataset(dataset).hidden  # validated: 2-D float32, non-empty, finite
    sae_kw.setdefault("d_in", int(hidden.shape[1]))
    cfgs = [SAEConfig(**kw) for kw in expand(sae_kw)]
    names = [c.label for c in cfgs]
    if len(set(names)) < len(names):  # disambiguate folders when labels collide
        cfgs = [dataclasses.replace(c, name=f"{c.label}-{i}") for i, c in enumerate(cfgs)]
    folders = [safe_join(out, c.label) for c in cfgs]  # a name like ../x fails here, before any training
    saes = train_saes(cfgs, hidden.float(), tc)
    x = hidden[:4096].float()
    print(f"{'sae':<28} {'arch':<9} {'L0':>7} {'FVU':>8} {'dead':>5}")
    for s, folder in zip(saes, folders, strict=True):
        acts = s.encode(x)
        fvu = float((s.decode(acts) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12))
        dead = int(((acts > 0).sum(0) == 0).sum())
        print(f"{s.cfg.label:<28} {s.architecture:<9} {float((acts > 0).sum(1).float().mean()):7.2f} "
              f"{fvu:8.4f} {dead:5d}")
        export_saelens(s, folder)
    print(f"saved {len(saes)} SAE(s) under {out}/ (SAELens format: cfg.json + sae_weights.safetensors)")
