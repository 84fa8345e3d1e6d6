"""Inflationary Flows tools: the equivalents of the reference scripts (dannyfa/Inflationary_Flows),
behind ``bayesgen encode|simulate|roundtrip-mse|coverage|residuals`` (bayesgen.cli.inflationary).

reference script (dannyfa/Inflationary_Flows)        bayesgen
toy_train.py, train.py                               bayesgen train experiment=<data>-if-prp…
toy_pfODE_int.py net|discrete, pfODE_int.py          bayesgen simulate score=net|discrete
calc_roundtrip_mse.py                                bayesgen roundtrip-mse
run_toy_alphashape_mesh_exps.py                      bayesgen coverage
calc_net_residuals_autocorrelations.py extract(toys) bayesgen residuals extract
calc_net_residuals_autocorrelations.py calc(toys)    bayesgen residuals calc
(data -> latents)                                    bayesgen encode

Every solve reports its network evaluations (NFE). Time grids follow the reference: toys
``linspace(t_start, t_start + steps·h, steps)`` (default h = 1e-2, steps = (t_max − t_start)/h,
701 points for t_max = 7.01, Euler); images ``linspace(t_start, t_max, steps)`` (default 256
points, t_start = 1e-2, Heun: 510 calls). ``solver=adaptive`` integrates between the grid's ends
with dopri5 (rtol/atol) and reports states at the grid's points.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bayesgen.training.build import resolve_device as _device
from bayesgen.training.outputs import check_label

SOLVERS = ("euler", "heun", "adaptive")
SIMS = ("melt", "roundtrip", "gen")


def _given(options: dict) -> dict:
    """The options given (None means: not given, the tool's default)."""
    return {k: v for k, v in options.items() if v is not None}


# ---- loading ----------------------------------------------------------------------------------
class Loaded:
    """A flow with what the commands need around it: data, labels, names, run directory."""

    def __init__(self, flow, info, dm=None, task=None, cfg=None, ckpt: Path | None = None,
                 score: str = "net", data_name: str | None = None):
        self.flow, self.info, self.dm, self.task, self.cfg = flow, info, dm, task, cfg
        self.ckpt, self.score = ckpt, score
        self.data_name = data_name or _data_name(cfg, info)

    @property
    def schedule_name(self) -> str:
        k, d = self.flow.dims_to_keep, self.flow.data_dim
        return "PRP" if k == d else f"PRRto{k}D"

    @property
    def is_image(self) -> bool:
        return self.info.kind == "image"

    @property
    def run_dir(self) -> Path:
        return self.ckpt.parent.parent if self.ckpt is not None else Path(".")

    def model_kwargs(self, labels) -> dict:
        if self.task is None or labels is None:
            return {}
        return self.task.model_kwargs(labels.to(self.task.device), train=False)


def _data_name(cfg, info) -> str:
    name = str(cfg.data.name) if cfg is not None else info.name
    return info.name if name in ("image_zip", "image_folder") else name


def _load_net(opts: dict) -> Loaded:

    from bayesgen.methods.inflationary import InflationaryFlow
    from bayesgen.training.build import build_datamodule, load_checkpoint

    if "ckpt" not in opts:
        raise ValueError("missing required option ckpt=<run dir or .ckpt> (or score=discrete)")
    cfg, task, path = load_checkpoint(opts["ckpt"])
    if not isinstance(task.method, InflationaryFlow):
        raise ValueError(f"{path} holds a {type(task.method).__name__} model, not an "
                         "Inflationary Flow (train one with experiment=<data>-if-prp)")
    task.to(_device(opts.get("device")))
    if opts.get("dtype") == "float64":
        task.double()
    dm = build_datamodule(cfg)
    return Loaded(task.method, dm.info, dm, task, cfg, path, "net", opts.get("name"))


def _load_discrete(opts: dict) -> tuple[Loaded, Any, Any, str]:
    """A flow whose denoiser is the exact one of a batch of data (the reference's
    ``discrete`` mode): PCA of the batch (centred), DiscreteScoreDenoiser on the same points."""
    import torch

    from bayesgen.data import DataModule
    from bayesgen.methods.inflationary import DiscreteScoreDenoiser, InflationaryFlow

    if "data" not in opts:
        raise ValueError("score=discrete needs data=<data set name> (e.g. data=circles)")
    dm = DataModule(opts["data"], root=opts.get("root"), batch_size=1)
    info = dm.info
    split = opts.get("split", "train")
    x, y, split = _take(dm, split, opts.get("n", 2000), opts.get("seed", 0))
    dtype = torch.float64 if opts.get("dtype") == "float64" else torch.float32
    device = _device(opts.get("device"))
    x = x.to(device=device, dtype=dtype)
    t_max = opts.get("t_max", 15.01 if info.kind == "image" else 7.01)
    flow = InflationaryFlow.from_data(
        None, x, dims_to_keep=opts.get("dims_to_keep"), centre=True, preconditioning=None,
        space="IS", rho=opts.get("rho", 1.0), gamma0=opts.get("gamma0", 5e-4), t_max=t_max,
        t_start=opts.get("t_start", 0.0), end_vars=opts.get("end_vars", 1.0),
        inflation=opts.get("inflation", "orig"), inflation_gap=opts.get("inflation_gap"),
        g_rescaling=opts.get("g_rescaling", 1.0))
    flow.model = DiscreteScoreDenoiser(x, flow.schedule)
    flow.to(device)
    return Loaded(flow, info, dm, None, None, None, "discrete",
                  opts.get("name", opts["data"])), x, y, split


def _split_dataset(dm, split: str | None):
    """(dataset, split) — the default is test, or train when the test split is empty."""
    dm.setup("fit")
    sets = {"train": dm.train, "val": dm.val, "test": dm.test}
    if split is None:
        split = "test" if dm.test is not None and len(dm.test) else "train"
    ds = sets[split]
    if ds is None or len(ds) == 0:
        raise ValueError(f"the {split} split of this data set is empty; pass split=train or val")
    return ds, split


def _take(dm, split: str | None, n: int | None, seed: int = 0, shuffle: bool = True):
    """n examples (all when None) of a split, a random subset drawn with ``seed`` (the first n
    when shuffle is false): (x, y, split) with x and y stacked."""
    import torch

    ds, split = _split_dataset(dm, split)
    total = len(ds)
    n = total if n is None else n
    if n > total:
        raise ValueError(f"n={n} exceeds the {total} examples of the split")
    if shuffle:
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    else:
        idx = torch.arange(n)
    items = [ds[int(i)] for i in idx]
    x = torch.stack([it[0] for it in items])
    return x, torch.as_tensor([int(it[1]) for it in items]), split


def _grid(loaded: Loaded, opts: dict):
    """The increasing time grid (float64): see the module docstring."""
    import torch

    flow = loaded.flow
    t0 = flow.t_start
    h = opts.get("h")
    if h is None and not loaded.is_image and "steps" not in opts:
        h = 1e-2
    if h is not None:
        n = opts.get("steps") or max(2, round((flow.t_max - t0) / h))
        return t0 + torch.linspace(0.0, n * h, n, dtype=torch.float64)
    n = opts.get("steps", 256)
    if n < 2:
        raise ValueError("steps must be at least 2 (grid points)")
    return torch.linspace(t0, flow.t_max, n, dtype=torch.float64)


def _grid_record(loaded: Loaded, opts: dict) -> dict:
    g = _grid(loaded, opts)
    return {"start": round(float(g[0]), 10), "end": round(float(g[-1]), 10),
            "points": g.numel()}


def _solver(loaded: Loaded, opts: dict) -> str:
    return opts.get("solver", "heun" if loaded.is_image else "euler")


def _solve_kwargs(loaded: Loaded, opts: dict, like) -> dict:
    from bayesgen.methods.inflationary import ATOL, RTOL

    return {"solver": _solver(loaded, opts), "grid": _grid(loaded, opts).to(like),
            "rtol": opts.get("rtol", RTOL), "atol": opts.get("atol", ATOL)}


def _describe(kwargs: dict) -> str:
    g = kwargs["grid"]
    text = f"{kwargs['solver']} on [{float(g[0]):g}, {float(g[-1]):g}]"
    if kwargs["solver"] == "adaptive":
        return text + f" (rtol {kwargs['rtol']:g}, atol {kwargs['atol']:g})"
    return text + f", {g.numel()} times"


def _batched(fn: Callable, x, batch_size: int | None, *extra) -> tuple[Any, int]:
    """fn over batches of x (and of the tensors in extra); (concatenated output, total NFE read
    from the flow after each call)."""
    import torch

    if batch_size is None or batch_size >= len(x):
        out, nfe = fn(x, *extra)
        return out, nfe
    outs, total = [], 0
    for i in range(0, len(x), batch_size):
        out, nfe = fn(x[i:i + batch_size], *(e[i:i + batch_size] for e in extra))
        outs.append(out)
        total += nfe
    return torch.cat(outs), total


def _dtype_device(loaded: Loaded):
    """dtype and device of the network's parameters."""
    param = next(loaded.flow.parameters())
    return param.dtype, param.device


def _write_json(data: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(v):
    if isinstance(v, Path):
        return str(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def _schedule_params(flow) -> dict:
    s = flow.schedule
    return {"data_dim": flow.data_dim, "dims_to_keep": flow.dims_to_keep, "rho": s.rho,
            "gamma0": s.gamma0, "end_vars": s.end_vars, "t_min": flow.t_min,
            "t_max": flow.t_max, "t_start": flow.t_start,
            "preconditioning": flow.preconditioning, "space": flow.space,
            "g": [float(v) for v in s.g[:8]] + (["…"] if s.g.numel() > 8 else [])}


# ---- encode -----------------------------------------------------------------------------------
def encode(**options: Any) -> int:
    """Inflate data to latents z and save them as .npz (see ``bayesgen encode --help``)."""
    import numpy as np

    opts = _given(options)
    loaded = _load_net(opts)
    flow = loaded.flow
    n = opts.get("n")
    x, y, split = _take(loaded.dm, opts.get("split"), n, opts.get("seed", 0),
                        shuffle=n is not None)
    dtype, device = _dtype_device(loaded)
    x = x.to(device=device, dtype=dtype)
    kw = _solve_kwargs(loaded, opts, x)

    def enc(xb, yb):
        z = flow.encode(xb, **kw, **loaded.model_kwargs(yb))
        return z, flow.last_nfe

    start = time.time()
    z, nfe = _batched(enc, x, opts.get("batch_size"), y)
    seconds = time.time() - start
    out = Path(opts.get("out", loaded.run_dir / f"latents_{split}.npz"))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, z=z.cpu().numpy(), labels=y.numpy(), times=kw["grid"].cpu().numpy(),
             nfe=nfe, schedule=loaded.schedule_name, split=split)
    k = flow.dims_to_keep
    std = z.double().std(0)
    print(f"encoded {len(x)} {split} examples with {_describe(kw)}: {nfe} network evaluations "
          f"({seconds:.1f} s)")
    text = f"latent std: kept dims {float(std[:k].mean()):.4f} (mean over {k})"
    if k < flow.data_dim:
        text += f", compressed dims {float(std[k:].mean()):.3g}"
    print(text)
    print(f"wrote {out}")
    return 0


# ---- simulate ---------------------------------------------------------------------------------
def _diagnostics(flow, x_es, t, **model_kwargs):
    """velocity dx/dt, denoiser output D and unscaled score C⁻¹(D − x̃), all in ES, with one
    network evaluation (pfODE as in InflationaryFlow.velocity)."""
    import torch

    from bayesgen.methods.inflationary import _t_batch

    sched = flow.schedule
    t = _t_batch(t, x_es)
    s, s_dot = sched.s(t)[:, None], sched.s_dot(t)[:, None]
    x_tilde = x_es / s
    with torch.no_grad():
        denoised = flow.denoise_es(x_tilde, t, **model_kwargs)
    rate = sched.gamma_rate(x_es)
    velocity = (s_dot / s + 0.5 * rate) * x_es - 0.5 * s * rate * denoised
    score = (denoised - x_tilde) / sched.gamma(t)
    return velocity, denoised, score


def _record(flow, res, save_every: int, **model_kwargs) -> tuple[dict, int]:
    """The reference's trajectory arrays (time-major) at every ``save_every``-th time of an
    ODE solve (first and last kept), and the NFE of the diagnostics."""
    import torch

    sched = flow.schedule
    n_t = res.times.numel()
    idx = sorted(set(range(0, n_t, save_every)) | {n_t - 1})
    times = res.times[idx]
    keys = ("xs_es", "tilde_xs_es", "dxs_dt_es", "net_outs_es", "unscaled_scores_es")
    out = {k: [] for k in keys}
    for i, t in zip(idx, times, strict=True):
        x_es = res.trajectory[i]
        v, d, sc = _diagnostics(flow, x_es, t, **model_kwargs)
        out["xs_es"].append(x_es)
        out["tilde_xs_es"].append(x_es / sched.s(t))
        out["dxs_dt_es"].append(v)
        out["net_outs_es"].append(d)
        out["unscaled_scores_es"].append(sc)
    arrays = {k: torch.stack(v) for k, v in out.items()}
    shape = (len(idx), arrays["xs_es"].shape[1], *flow.data_shape)

    def rot(a):  # W·a in the data layout (a direction)
        return sched.rotate_to_is(a.flatten(0, 1)).reshape(shape)

    arrays |= {
        "xs": rot(arrays["xs_es"]),
        "tilde_xs": sched.from_es(arrays["tilde_xs_es"].flatten(0, 1)).reshape(shape),
        "dxs_dt": rot(arrays["dxs_dt_es"]),
        "net_outs": sched.from_es(arrays["net_outs_es"].flatten(0, 1)).reshape(shape),
        "unscaled_scores": rot(arrays["unscaled_scores_es"]),
    }
    arrays = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
    arrays["times"] = times.cpu().numpy()
    return arrays, len(idx)


def simulate(**options: Any) -> int:
    """pfODE trajectories of melt, roundtrip and generation (see
    ``bayesgen simulate --help``)."""
    import torch

    opts = _given(options)
    if "prev_melt" in opts:
        ignored = [k for k in ("n", "split") if k in opts]
        if ignored:
            raise ValueError(f"{ignored[0]}= does not apply with prev_melt=: the roundtrip and "
                             f"generation use the points saved in {opts['prev_melt']}; drop "
                             f"{ignored[0]}=")
        if opts.get("sim", "all") != "roundtrip":
            raise ValueError("prev_melt= is the start of a roundtrip from a saved melt; add "
                             "sim=roundtrip (the other simulations do not use it)")
    score = opts.get("score", "net")
    if score == "net":
        bad = [k for k in ("data", "root", "dims_to_keep", "rho", "gamma0", "t_max", "t_start",
                           "end_vars", "inflation", "inflation_gap", "g_rescaling") if k in opts]
        if bad:
            raise ValueError(f"{bad[0]}= applies to score=discrete only (a network's schedule "
                             "comes from its checkpoint)")
        loaded = _load_net(opts)
        if "label" in opts:
            check_label(loaded.task.num_labels, opts["label"])
        n = opts.get("n", 256 if loaded.is_image else 2000)
        x, y, split = _take(loaded.dm, opts.get("split"), n, opts.get("seed", 0))
        dtype, device = _dtype_device(loaded)
        x = x.to(device=device, dtype=dtype)
    else:
        if "ckpt" in opts:
            raise ValueError("score=discrete uses no network; drop ckpt=")
        if "label" in opts:
            raise ValueError("label= needs a class-conditional network (score=net ckpt=RUN)")
        loaded, x, y, split = _load_discrete(opts)
    flow = loaded.flow
    sims = SIMS if opts.get("sim", "all") == "all" else (opts["sim"],)
    out = Path(opts.get("out", loaded.run_dir / "simulations"))
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"{loaded.data_name}_{loaded.schedule_name}_{loaded.score}"
    kw = _solve_kwargs(loaded, opts, x)
    save_every = opts.get("save_every", 10)
    mk = loaded.model_kwargs(y)
    record: dict[str, Any] = {}
    results: dict[str, dict] = {}
    gen = torch.Generator(device=x.device).manual_seed(opts.get("seed", 0))

    def run(sim: str, start, direction: str, model_kwargs: dict, save: bool = True):
        t0 = time.time()
        if direction == "melt":
            res = flow.encode(start, return_trajectory=True, **kw, **model_kwargs)
        else:
            res = flow.decode(start, return_trajectory=True, **kw, **model_kwargs)
        nfe, seconds = flow.last_nfe, time.time() - t0
        arrays, diag = _record(flow, res, save_every, **model_kwargs)
        arrays["nfe"] = nfe
        info = {"nfe": nfe, "diagnostic_nfe": diag, "seconds": round(seconds, 3),
                "saved_times": len(arrays["times"])}
        print(f"{sim}: {nfe} network evaluations ({_describe(kw)}) + {diag} for the saved "
              f"diagnostics, {seconds:.1f} s")
        if save:
            import numpy as np

            path = out / f"{prefix}_{sim}_results.npz"
            np.savez(path, **arrays)
            info["file"] = str(path)
        record[sim] = info
        return res, arrays

    melt_end = None
    if "melt" in sims or ("roundtrip" in sims and "prev_melt" not in opts):
        res, results["melt"] = run("melt", x, "melt", mk, save="melt" in sims)
        melt_end = res.x
    if "roundtrip" in sims:
        if "prev_melt" in opts:
            import numpy as np

            prev = np.load(opts["prev_melt"])
            melt_end = torch.as_tensor(prev["xs_es"][-1]).to(x)
            x = torch.as_tensor(prev["tilde_xs"][0]).to(x)
            if melt_end.shape[0] != x.shape[0]:
                raise ValueError("prev_melt: inconsistent arrays")
            mk = {}
        res, results["roundtrip"] = run("roundtrip", melt_end, "gen", mk)
        record["roundtrip"] |= _roundtrip_errors(x, res.x, loaded.is_image)
        print("roundtrip: relative error mean {relative_error_mean:.3g}, max "
              "{relative_error_max:.3g}".format(**record["roundtrip"]))
    if "gen" in sims:
        from bayesgen.training.outputs import sample_labels

        m = len(x)
        z = flow.sample_latents(m, opts.get("eps"), gen, device=x.device, dtype=x.dtype)
        gen_mk = {}
        if loaded.task is not None and loaded.task.num_labels:
            gen_mk = sample_labels(loaded.task, m, opts.get("label"))
        _, results["gen"] = run("gen", z, "gen", gen_mk)
    params = {
        "command": "simulate", "score": loaded.score, "sims": list(sims),
        "checkpoint": loaded.ckpt, "data_name": loaded.data_name,
        "schedule": loaded.schedule_name, "n": len(x), "split": split,
        "seed": opts.get("seed", 0), "eps": opts.get("eps"), "save_every": save_every,
        "solver": kw["solver"], "grid": _grid_record(loaded, opts),
        "rtol": kw["rtol"], "atol": kw["atol"], "dtype": str(x.dtype),
        "schedule_params": _schedule_params(flow), "options": opts, "results": record,
    }
    path = _write_json(params, out / f"{prefix}_sim_params.json")
    print(f"wrote {path}")
    if opts.get("pictures", True):
        for p in _pictures(loaded, x, results, out, prefix):
            print(f"wrote {p}")
    for sim in sims:
        print(f"wrote {record[sim]['file']}")
    return 0


def _roundtrip_errors(x, x_back, image: bool) -> dict:
    from bayesgen.metrics import relative_roundtrip_error, roundtrip_mse

    rel = relative_roundtrip_error(x, x_back)
    out = {"relative_error_mean": float(rel.mean()), "relative_error_median":
           float(rel.median()), "relative_error_max": float(rel.max()),
           "mse": float((x.double() - x_back.double()).square().mean())}
    if image:
        out["mse_0_255"] = float(roundtrip_mse(x, x_back))
    return out


def _pictures(loaded: Loaded, x, results: dict, out: Path, prefix: str) -> list[Path]:
    """Scatter plots and GIFs (2-D/3-D data) or image grids (images) of the simulations."""
    import torch

    from bayesgen import viz

    paths = []
    dim = loaded.flow.data_dim
    if loaded.is_image:
        def grid(a):
            return viz.image_grid(viz.to_unit_images(torch.as_tensor(a[:64]).clamp(-1, 1)))
        paths.append(viz.save_image(grid(x.cpu()), out / f"{prefix}_data.png"))
        for sim in ("roundtrip", "gen"):
            if sim in results:
                paths.append(viz.save_image(grid(results[sim]["tilde_xs"][-1]),
                                            out / f"{prefix}_{sim}.png"))
        return paths
    if dim not in (2, 3) or len(loaded.info.data_shape) != 1:
        return paths
    data = x.cpu()
    if "melt" in results:
        z = torch.as_tensor(results["melt"]["xs_es"][-1])
        paths.append(viz.save_image(viz.scatter(z, title="latents (eigenbasis, t_max)",
                                                lims=(-4, 4)), out / f"{prefix}_latents.png"))
    for sim in ("roundtrip", "gen"):
        if sim in results:
            pts = torch.as_tensor(results[sim]["tilde_xs"][-1])
            paths.append(viz.save_image(viz.scatter(pts, reference=data, title=sim),
                                        out / f"{prefix}_{sim}.png"))
    for sim in ("melt", "gen"):
        if sim in results:
            frames = viz.pick_frames(torch.as_tensor(results[sim]["xs"]), 30)
            times = viz.pick_frames(torch.as_tensor(results[sim]["times"]), 30)
            pics = [viz.scatter(f, title=f"{sim}: scaled state, t = {float(t):.2f}",
                                lims=(-4, 4)) for f, t in zip(frames, times, strict=True)]
            paths.append(viz.save_animation(pics, out / f"{prefix}_{sim}.gif"))
    return paths


# ---- roundtrip-mse ----------------------------------------------------------------------------
def roundtrip_mse(**options: Any) -> int:
    """Roundtrip error data -> latents -> data (see ``bayesgen roundtrip-mse --help``)."""
    import torch

    from bayesgen.metrics import relative_roundtrip_error, roundtrip_mse

    opts = _given(options)
    loaded = _load_net(opts)
    flow = loaded.flow
    n = opts.get("n", 10_000 if loaded.is_image else 2000)
    split = opts.get("split", "train")
    x, y, split = _take(loaded.dm, split, n, opts.get("seed", 42))
    dtype, device = _dtype_device(loaded)
    kw = _solve_kwargs(loaded, opts, x.to(dtype))
    bs = opts.get("batch_size", 1000)
    nfe, start = 0, time.time()
    x_backs = []
    for i in range(0, len(x), bs):
        xb = x[i:i + bs].to(device=device, dtype=dtype)
        mk = loaded.model_kwargs(y[i:i + bs])
        x_backs.append(flow.roundtrip(xb, **kw, **mk).cpu())
        nfe += flow.last_nfe
    seconds = time.time() - start
    x_back = torch.cat(x_backs)
    x = x.to(x_back.dtype)
    rel = relative_roundtrip_error(x, x_back)
    result = {"relative_error_mean": float(rel.mean()),
              "relative_error_median": float(rel.median()),
              "relative_error_max": float(rel.max()),
              "mse": float((x.double() - x_back.double()).square().mean())}
    if loaded.is_image:
        result["mse_0_255"] = float(roundtrip_mse(x, x_back))
        result["mse_0_255_unquantized"] = float(roundtrip_mse(x, x_back, quantize=False))
    record = {"command": "roundtrip-mse", "checkpoint": loaded.ckpt,
              "data_name": loaded.data_name, "schedule": loaded.schedule_name, "split": split,
              "total_samples": len(x), "batch_size": bs, "seed": opts.get("seed", 42),
              "solver": kw["solver"], "grid": _grid_record(loaded, opts), "rtol": kw["rtol"],
              "atol": kw["atol"], "dtype": str(dtype), "nfe_total": nfe,
              "nfe_per_batch": nfe / math.ceil(len(x) / bs), "seconds": round(seconds, 2),
              "schedule_params": _schedule_params(flow), "result": result}
    out = Path(opts.get("out", loaded.run_dir))
    path = _write_json(record, out / f"{loaded.data_name}_{loaded.schedule_name}"
                                     f"_roundtrip_mse.json")
    main = (f"MSE (0-255) {result['mse_0_255']:.4f}" if loaded.is_image else
            f"relative error {result['relative_error_mean']:.3g} (max "
            f"{result['relative_error_max']:.3g})")
    print(f"roundtrip of {len(x)} {split} examples with {_describe(kw)}: {main}; "
          f"{record['nfe_per_batch']:.0f} network evaluations per batch (both ways), "
          f"{seconds:.1f} s")
    print(f"wrote {path}")
    return 0


# ---- coverage ---------------------------------------------------------------------------------
def coverage(**options: Any) -> int:
    """The toy coverage experiment (see ``bayesgen coverage --help``)."""
    import numpy as np
    import torch

    from bayesgen.metrics import RADII, coverage_experiment

    opts = _given(options)
    loaded = _load_net(opts)
    flow = loaded.flow
    if flow.data_dim not in (2, 3):
        raise ValueError(f"coverage needs 2-D or 3-D data, this model's is {flow.data_dim}-D")
    dtype, device = _dtype_device(loaded)
    kw = _solve_kwargs(loaded, opts, torch.zeros((), dtype=dtype, device=device))
    bs = opts.get("batch_size", 5000)
    nfe = {"decode": 0, "encode": 0}

    def counted(solve, key: str):
        """``solve`` in batches of ``bs``, adding its network evaluations to nfe[key]."""
        def run(v):
            out, k = _batched(lambda b: (solve(b, **kw), flow.last_nfe), v, bs)
            nfe[key] += k
            return out
        return run

    decode, encode = counted(flow.decode, "decode"), counted(flow.encode, "encode")

    std = flow.latent_std(opts.get("eps"), like=torch.zeros(1, dtype=dtype, device=device))
    gen = torch.Generator(device=device).manual_seed(opts.get("seed", 0))
    radii = np.asarray(opts.get("radii", RADII), dtype=np.float64)
    start = time.time()
    cov = coverage_experiment(encode, decode, flow.data_dim, n_test=opts.get("n_test", 20000),
                              n_boundary=opts.get("n_boundary", 200), radii=radii,
                              latent_std=std, alpha=opts.get("alpha"), generator=gen,
                              dtype=dtype, device=device)
    seconds = time.time() - start
    out = Path(opts.get("out", loaded.run_dir / "coverage"))
    prefix = f"{loaded.data_name}_{loaded.schedule_name}"
    json_path = cov.save(out / f"{prefix}_{cov.n_test}lssamples_coverages.json")
    arrays = {"radii": cov.radii, "expected": cov.expected, "latent_std": std.cpu().numpy(),
              "nfe_decode": nfe["decode"], "nfe_encode": nfe["encode"]}
    for space in cov.total_in:
        arrays[f"fraction_{space}"] = cov.fraction(space)
        arrays[f"total_in_{space}"] = cov.total_in[space]
        arrays[f"points_{space}"] = cov.points[space]
    npz = out / f"{prefix}_coverage.npz"
    np.savez(npz, **arrays)
    print(f"{'radius':>7} {'expected':>9} {'latent':>8} {'data':>8} {'roundtrip':>10}")
    for i, r in enumerate(cov.radii):
        print(f"{r:7.2f} {cov.expected[i]:9.4f} {cov.fraction('latent')[i]:8.4f} "
              f"{cov.fraction('data')[i]:8.4f} {cov.fraction('roundtrip')[i]:10.4f}")
    print(f"{_describe(kw)}: {nfe['decode']} network evaluations to generate, "
          f"{nfe['encode']} to inflate back ({seconds:.1f} s)")
    print(f"wrote {json_path}\nwrote {npz}")
    return 0


# ---- residuals --------------------------------------------------------------------------------
def residuals_extract(**options: Any) -> int:
    """Denoiser outputs and residuals over time (see ``bayesgen residuals extract --help``)."""
    import numpy as np
    import torch

    from bayesgen.metrics import extract_outputs

    opts = _given(options)
    loaded = _load_net(opts)
    flow = loaded.flow
    n = opts.get("n", 50_000 if loaded.is_image else 10_000)
    ds, split = _split_dataset(loaded.dm, opts.get("split"))
    n = min(n, len(ds))
    x, _, split = _take(loaded.dm, split, n, opts.get("seed", 0))
    dtype, device = _dtype_device(loaded)
    x = x.to(device=device, dtype=dtype)
    n_t = opts.get("n_time_pts", 256 if loaded.is_image else 701)
    if loaded.is_image and "h" not in opts:
        times = torch.linspace(flow.t_start, flow.t_max, n_t, dtype=torch.float64)
    else:
        times = flow.t_start + torch.linspace(0.0, n_t * opts.get("h", 1e-2), n_t,
                                              dtype=torch.float64)
    times = times.to(device=device, dtype=dtype)
    null_labels = loaded.task is not None and loaded.task.num_labels

    def denoise(xt, t):
        mk = {}
        if null_labels:
            mk = loaded.model_kwargs(torch.full((len(xt),), -1, dtype=torch.long))
        return flow.denoise(xt, t, **mk)

    def noise_std(t):
        return flow.schedule.gamma(t).sqrt()

    gen = torch.Generator(device=device).manual_seed(opts.get("seed", 0))
    layout = opts.get("layout", "per_time" if loaded.is_image else "single")
    bs = opts.get("batch_size", 1000)
    out = Path(opts.get("out", loaded.run_dir / "residuals"))
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"{loaded.data_name}_{loaded.schedule_name}_net_outputs_residuals"
    basis = flow.schedule.W.to(dtype)
    start = time.time()
    if layout == "single":
        ex = extract_outputs(denoise, x, times, noise_std, basis=basis, batch_size=bs,
                             generator=gen)
        path = out / f"{prefix}.npz"
        np.savez(path, **{k: v.numpy() for k, v in ex.items()})
        paths = [path]
    else:
        paths = []
        for i, t in enumerate(times):
            ex = extract_outputs(denoise, x, t[None], noise_std, basis=basis, batch_size=bs,
                                 generator=gen, progress=False)
            path = out / f"{prefix}_time{i}.npz"
            np.savez(path, net_outputs=ex["net_outputs"][:, 0].numpy(),
                     net_residuals=ex["net_residuals"][:, 0].numpy(), time=float(t))
            paths.append(path)
    nfe = math.ceil(n / bs) * n_t
    print(f"extracted {n} examples × {n_t} times: {nfe} network evaluations (batches of "
          f"{min(bs, n)}), {time.time() - start:.1f} s")
    _write_json({"command": "residuals extract", "checkpoint": loaded.ckpt, "n": n,
                 "split": split, "n_time_pts": n_t, "times": [float(times[0]),
                                                               float(times[-1])],
                 "layout": layout, "nfe": nfe, "options": opts,
                 "schedule_params": _schedule_params(flow)}, out / f"{prefix}_params.json")
    print(f"wrote {paths[0]}" + (f" … ({len(paths)} files)" if len(paths) > 1 else ""))
    return 0


def residuals_calc(**options: Any) -> int:
    """Their cross-correlations (see ``bayesgen residuals calc --help``)."""
    import numpy as np
    import torch

    from bayesgen.metrics import autocorrelations, cross_correlations

    opts = _given(options)
    res = Path(opts["res"])
    if not res.exists():
        raise ValueError(f"{res} does not exist; run `bayesgen residuals extract` first")
    ref = opts.get("reference", 0)
    if res.is_file():
        data = np.load(res)
        ex = {k: torch.as_tensor(data[k]) for k in ("net_outputs", "net_residuals")}
        if not 0 <= ref < ex["net_outputs"].shape[1]:
            raise ValueError(f"reference={ref} is not a time index of {res}")
        acs = autocorrelations(ex, reference=ref)
        out = Path(opts.get("out", res.parent))
        out.mkdir(parents=True, exist_ok=True)
        stem = res.stem.replace("_net_outputs_residuals", "")
        path = out / f"{stem}_autocorrelations.npz"
        np.savez(path, **{k: v.numpy() for k, v in acs.items()}, times=data["times"],
                 reference=ref)
        print(f"cross-correlations against time index {ref} over "
              f"{ex['net_outputs'].shape[0]} examples × {ex['net_outputs'].shape[1]} times")
        print(f"wrote {path}")
        return 0
    files = sorted(res.glob("*_net_outputs_residuals_time*.npz"),
                   key=lambda p: int(p.stem.rsplit("_time", 1)[1]))
    if not files:
        raise ValueError(f"{res} holds no *_net_outputs_residuals_time*.npz files")
    by_index = {int(p.stem.rsplit("_time", 1)[1]): p for p in files}
    if ref not in by_index:
        raise ValueError(f"reference={ref}: no file for time index {ref} in {res}")
    base = np.load(by_index[ref])
    out = Path(opts.get("out", res))
    out.mkdir(parents=True, exist_ok=True)
    stem = files[0].stem.rsplit("_net_outputs_residuals", 1)[0]
    for i, p in by_index.items():
        cur = np.load(p)
        result = {}
        for key, name in (("net_outputs", "net_output_acs"),
                          ("net_residuals", "net_residual_acs")):
            v = torch.stack([torch.as_tensor(base[key]), torch.as_tensor(cur[key])], dim=1)
            result[name] = cross_correlations(v, reference=0)[1].numpy()
        np.savez(out / f"{stem}_autocorrelations_times{ref}_{i}.npz", **result,
                 time=cur["time"], reference_time=base["time"])
    print(f"cross-correlations of {len(by_index)} times against time index {ref}")
    print(f"wrote {out}/{stem}_autocorrelations_times{ref}_*.npz")
    return 0
