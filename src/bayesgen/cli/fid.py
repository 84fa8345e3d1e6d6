"""``bayesgen fid``: Inception statistics of a data set, folders of generated images, the FID."""

from __future__ import annotations

from bayesgen.cli.data import require_exists
from bayesgen.cli.options import DEVICE, INT, PATH, POSITIVE_INT, Command, Option, text
from bayesgen.cli.sample import CKPT

WEIGHTS = Option("weights", text("FILE.pth"), help="the offline Inception weights "
                 "(torch-fidelity's weights-inception-2015-12-05-6726825d.pth); default: "
                 "$BAYESGEN_INCEPTION_WEIGHTS")
BATCH = Option("batch_size", POSITIVE_INT, 64, "images per Inception batch")
DEV = Option("device", DEVICE, help="device (default: cuda when there is one)")


def run_ref(opts: dict) -> int:
    from bayesgen.metrics import fid
    from bayesgen.training.build import resolve_device

    require_exists(opts["data"], "data")
    fid.fid_ref(opts["data"], opts["dest"], feature_extractor_weights_path=opts["weights"],
                batch_size=opts["batch_size"], device=resolve_device(opts["device"]))
    print(f"wrote {opts['dest']}")
    return 0


def run_calc(opts: dict) -> int:
    from bayesgen.metrics import fid
    from bayesgen.training.build import resolve_device
    from bayesgen.training.outputs import write_json

    require_exists(opts["images"], "images")
    require_exists(opts["ref"], "ref")
    value = fid.fid_calc(opts["images"], opts["ref"],
                         feature_extractor_weights_path=opts["weights"],
                         num_images=opts["num"], batch_size=opts["batch_size"],
                         device=resolve_device(opts["device"]))
    print(f"FID: {value:.4f}")
    if opts["out"]:
        write_json({"fid": value, "images": opts["images"], "ref": opts["ref"]}, opts["out"])
        print(f"wrote {opts['out']}")
    return 0


def run_gen(opts: dict) -> int:
    import torch
    from rich.progress import track

    from bayesgen.cli.sample import sampler_kwargs
    from bayesgen.metrics.fid import save_image_folder
    from bayesgen.training.build import load_checkpoint, resolve_device
    from bayesgen.training.outputs import sample_labels

    cfg, task, _ = load_checkpoint(opts["ckpt"])
    task.to(resolve_device(opts["device"]))
    kwargs = sampler_kwargs(cfg, task.method, opts)
    n, bs = opts["n"], opts["batch_size"]
    for start in track(range(0, n, bs), description="generating"):
        m = min(bs, n - start)
        gen = torch.Generator(device=task.device).manual_seed(opts["seed"] + start)
        x = task.method.sample(m, generator=gen, **kwargs, **sample_labels(task, m))
        save_image_folder(x.float().cpu().clamp(-1, 1), opts["dest"], start_index=start)
    print(f"wrote {n} images to {opts['dest']}")
    return 0


REF = Command("ref", "Inception statistics (mu, sigma; float64) of a data set", run_ref,
              options=[Option("data", PATH, help="ZIP or FOLDER of images", required=True),
                       Option("dest", PATH, help="the statistics to write (REF.npz)",
                              required=True),
                       WEIGHTS, BATCH, DEV])
GEN = Command("gen", "n generated PNGs, 1000 per subfolder", run_gen, options=[
    CKPT, Option("dest", PATH, help="folder to write", required=True),
    Option("n", POSITIVE_INT, 50_000, "images to generate"),
    Option("batch_size", POSITIVE_INT, 500, "images per sampling batch"),
    Option("seed", INT, 0, "random seed (batch i uses seed + its first index)"),
    Option("k", POSITIVE_INT, help="sampling steps (BSI, VDM); default: the run's"),
    Option("n_steps", POSITIVE_INT, help="sampling steps (BFN); default: the run's"),
    DEV])
CALC = Command("calc", "the FID of images against reference statistics, printed (out=: JSON)",
               run_calc, options=[
                   Option("images", PATH, help="FOLDER or ZIP of images", required=True),
                   Option("ref", PATH, help="reference statistics (REF.npz)", required=True),
                   WEIGHTS, Option("num", POSITIVE_INT, help="use N images (default: all)"),
                   BATCH, DEV, Option("out", text("FILE.json"), help="also write the FID "
                                      "to this JSON file")])
COMMANDS = [Command("fid", "FID: reference statistics, sample folders, the FID",
                    subcommands={"ref": REF, "gen": GEN, "calc": CALC})]
