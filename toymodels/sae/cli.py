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


EVAL_SAMPLES = 20_000
"""Samples the printed summary (L0, FVU, dead latents) is measured on: `benchmark score`'s default --n-eval."""
LIST_VALUED = ("prefixes", "prefix_weights")
"""SAEConfig fields whose value is itself a list: a flat list is one value, a list of lists is a sweep."""


def expand(sae_kw: dict) -> list[dict]:
    """Cartesian product over list-valued keys (a flat list of a `LIST_VALUED` field is one value)."""
    from toymodels.errors import ConfigError

    keys, vals = list(sae_kw), []
    for k, v in sae_kw.items():
        if k in LIST_VALUED:
            vals.append(v if isinstance(v, list) and v and all(isinstance(x, list) for x in v) else [v])
        elif isinstance(v, list):
            if not v:
                raise ConfigError(f"{k}: an empty list trains no SAE; give a value or a non-empty list")
            vals.append(v)
        else:
            vals.append([v])
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*vals)]


def run_key(cfg, tc, data_digest: str) -> str:
    """What an exported SAE depends on: its config, the training config, the dataset's bytes and the package's
    TRAINING_REVISION."""
    import hashlib
    import json

    from toymodels.config import to_dict
    from toymodels.device import hash_fields
    from toymodels.sae.train import TRAINING_REVISION

    train = {k: v for k, v in to_dict(tc).items() if k not in ("progress", "device", "precision")}
    train |= hash_fields(tc.device, tc.precision)
    blob = json.dumps({"sae": to_dict(cfg), "train": train, "data": data_digest, "revision": TRAINING_REVISION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    from toymodels.outdir import is_complete, lock, sha256
    from toymodels.sae import SAEConfig, SAETrainConfig, export_saelens, load_plugin, load_saelens
    from toymodels.sae.train import train_in_packs

    for spec in args.plugin:
        load_plugin(spec)
    dataset, overrides = Path(args.args[0]), args.args[1:] + args.out[1:]
    out = Path(args.out[0])
    sae_kw, train_kw = split_keys(parse_overrides(overrides))
    if isinstance(train_kw.get("betas"), list):
        train_kw["betas"] = tuple(train_kw["betas"])
    tc = SAETrainConfig(**train_kw)
    hidden = load_dataset(dataset).hidden  # validated: 2-D float32, non-empty, finite
    sae_kw.setdefault("d_in", int(hidden.shape[1]))
    cfgs = [SAEConfig(**kw) for kw in expand(sae_kw)]
    names = [c.label for c in cfgs]
    if len(set(names)) < len(names):  # disambiguate folders when labels collide
        cfgs = [dataclasses.replace(c, name=f"{c.label}-{i}") for i, c in enumerate(cfgs)]
    folders = [safe_join(out, c.label) for c in cfgs]  # a name like ../x fails here, before any training
    digest = sha256(dataset)
    keys = [run_key(c, tc, digest) for c in cfgs]

    def resume(idx):  # a pack is done when every SAE folder of it is complete and from this exact run
        if all(is_complete(folders[i], keys[i]) for i in idx):
            return [load_saelens(folders[i]) for i in idx]
        return None

    def finish(idx, saes):
        for i, s in zip(idx, saes, strict=True):
            export_saelens(s, folders[i], key=keys[i])
        return saes

    with lock(out):  # one writer per output folder for the whole run
        saes, resumed = train_in_packs(cfgs, hidden.float(), tc, resume, finish)
    x = hidden[:EVAL_SAMPLES].float()
    print(f"{'sae':<28} {'arch':<9} {'L0':>7} {'FVU':>8} {'dead':>5}")
    for s in saes:
        l0, fvu, dead = summary(s, x)
        print(f"{s.cfg.label:<28} {s.architecture:<9} {l0:7.2f} {fvu:8.4f} {dead:5d}")
    print(f"(L0, FVU and dead on the first {len(x)} samples: dead = latents that never fire on them, the window of "
          f"`toymodels benchmark score`'s dead_frac with its default --n-eval {EVAL_SAMPLES})")
    note = f"; {resumed} finished pack(s) resumed from an earlier run" if resumed else ""
    print(f"saved {len(saes)} SAE(s) under {out}/ (SAELens format: cfg.json + sae_weights.safetensors){note}")


def summary(sae, x_ND, batch: int = 4096) -> tuple[float, float, int]:
    """(mean L0, fraction of variance unexplained, latents that never fire) of `sae` on x_ND, in batches."""
    fired_L, active, sq_err = None, 0, 0.0
    for i in range(0, len(x_ND), batch):
        xb = x_ND[i:i + batch]
        acts = sae.encode(xb)
        on = acts != 0
        fired_L = on.any(0) if fired_L is None else fired_L | on.any(0)
        active += int(on.sum())
        sq_err += float((sae.decode(acts) - xb).pow(2).sum())
    total = float((x_ND - x_ND.mean(0)).pow(2).sum().clamp_min(1e-12))
    return active / len(x_ND), sq_err / total, int((~fired_L).sum())
