"""Turn a training checkpoint of the torch mirror into a shipped minstf weight file.

    python tools/ship_weights.py runs/q2/checkpoint.pt weights/stf-small-q2.safetensors \
        --name stf-small-q2 --description "..."

Parameters are exported from the checkpoint (torch.load with weights_only=True),
the CDF tables are computed by minstf (entropy_models.eb_tables / gc_tables),
and the metadata records lambda, steps, training time and the recipe's commit.
"""
import argparse
import json
import subprocess

from minstf.entropy_models import eb_tables, gc_tables
from minstf.mirror.train import export_params, load_checkpoint
from minstf.weights import save_weights


RECIPE_ARGS = ("config", "batch_size", "patch_size", "crops_per_image", "lr", "lr_drop", "aux_lr", "clip",
               "drop_path", "seed", "minutes")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--name", required=True)
    p.add_argument("--description", default="")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    ck = load_checkpoint(a.checkpoint)
    params, config = export_params(a.checkpoint)
    eb = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("entropy_bottleneck.")}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"name": a.name, "description": a.description,
            "source": f"trained in-house with minstf.mirror.train (commit {commit})",
            "training": json.dumps({"lmbda": ck["lmbda"], "steps": ck["step"],
                                    "seconds": round(float(ck.get("seconds", 0.0))),
                                    "args": {k: v for k, v in ck.get("args", {}).items() if k in RECIPE_ARGS}},
                                   default=str)}
    w = save_weights(a.out, params, {**eb_tables(eb), **gc_tables()}, config, meta, force=a.force)
    print(f"{a.out}: {sum(v.size for v in params.values()):,} parameters, lambda {ck['lmbda']}, "
          f"{ck['step']} steps, fingerprint {w.fingerprint[:12]}")


if __name__ == "__main__":
    main()
