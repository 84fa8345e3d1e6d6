"""Inflationary Flows commands (the reference scripts of dannyfa/Inflationary_Flows), thin over
:mod:`bayesgen.inflationary_tools`:

reference script                                     bayesgen
toy_train.py, train.py                               bayesgen train experiment=<data>-if-prp…
toy_pfODE_int.py net|discrete, pfODE_int.py          bayesgen simulate score=net|discrete
calc_roundtrip_mse.py                                bayesgen roundtrip-mse
run_toy_alphashape_mesh_exps.py                      bayesgen coverage
calc_net_residuals_autocorrelations.py extract|calc  bayesgen residuals extract|calc
(data -> latents)                                    bayesgen encode
"""

from __future__ import annotations

from bayesgen.cli.options import (
    BOOL,
    FLOAT,
    GRID_POINTS,
    INT,
    PATH,
    POSITIVE,
    POSITIVE_INT,
    POSITIVE_LIST,
    Command,
    Option,
    choice,
    text,
)
from bayesgen.cli.sample import CKPT

SPLIT = Option("split", choice("train", "val", "test"), help="the data split (default: test, "
               "train when there is no test split)")
RUN = [Option("device", text("cpu|cuda", "cpu"), help="device (default: cuda when there is one)"),
       Option("dtype", choice("float32", "float64"), help="float64 casts the network"),
       Option("name", text("DATA"), help="data name in the file names (default: the run's)")]
SOLVE = [
    Option("solver", choice("euler", "heun", "adaptive"), help="ODE solver (default: euler for "
           "flat data, heun for images; adaptive: dopri5 with rtol/atol)"),
    Option("steps", GRID_POINTS, help="time grid points (images: default 256)"),
    Option("h", POSITIVE, help="toys: grid linspace(t_start, t_start + steps·h, steps), "
           "default 1e-2"),
    Option("rtol", POSITIVE, help="adaptive solver: relative tolerance (default 1e-5)"),
    Option("atol", POSITIVE, help="adaptive solver: absolute tolerance (default 1e-5)"),
]


def _tool(name: str):
    """The command's function in bayesgen.inflationary_tools, imported when it runs."""
    def run(opts: dict) -> int:
        from bayesgen import inflationary_tools

        return getattr(inflationary_tools, name)(**opts)
    return run


ENCODE = Command(
    "encode", "Inflationary Flows: data -> latents (.npz)", _tool("encode"),
    description="Inflate data to its latents z (the pfODE state at t_max, scaled eigenbasis "
    "coordinates: ≈ N(0, A0²) in the kept dims, ≈ 0 in the compressed ones) and save them as "
    ".npz (z, labels, times, nfe).",
    options=[CKPT, SPLIT, Option("n", POSITIVE_INT, help="examples (default: all)"),
             Option("seed", INT, 0, "random subset when n is given"),
             Option("batch_size", POSITIVE_INT, help="examples per solve (default: all)"),
             Option("out", text("FILE.npz"), help="default RUN/latents_<split>.npz"),
             *RUN, *SOLVE])

SIMULATE = Command(
    "simulate", "IF pfODE trajectories: melt, roundtrip, generation (.npz + JSON)",
    _tool("simulate"), usage_args="[score=net] ckpt=RUN | score=discrete data=NAME [key=value ...]",
    description="Integrate the pfODE for a batch and save the trajectories (toy_pfODE_int.py / "
    "pfODE_int.py): sim=melt (inflation of data), roundtrip (generation from the melt's end), "
    "gen (generation from latents z ~ N(0, diag(A0², eps…))). Writes OUT/{data}_{PRP|PRRto{k}D}"
    "_{net|discrete}_{sim}_results.npz (time-major arrays at every save_every-th time: xs_es/xs, "
    "tilde_xs_es/tilde_xs, dxs_dt_es/dxs_dt, net_outs_es/net_outs, unscaled_scores_es/"
    "unscaled_scores, times, nfe), …_sim_params.json (all parameters, NFE, seconds, roundtrip "
    "errors) and pictures. score=discrete uses no network: the exact denoiser of the n points, "
    "PCA of the same points.",
    options=[
        Option("score", choice("net", "discrete"), help="net (a checkpoint, the default) or "
               "discrete (exact denoiser of data=)"),
        Option("ckpt", PATH, help="run directory or .ckpt (score=net)"),
        Option("sim", choice("melt", "roundtrip", "gen", "all"), help="which simulations "
               "(default all)"),
        SPLIT, Option("n", POSITIVE_INT, help="points (default 2000; images 256)"),
        Option("seed", INT, help="random seed (default 0)"),
        Option("eps", POSITIVE, help="latent variance of compressed dims (default: the "
               "schedule's at t_max)"),
        Option("prev_melt", text("FILE.npz"), help="sim=roundtrip from a saved melt's end "
               "(its points; n= and split= do not apply)"),
        Option("save_every", POSITIVE_INT, help="keep every N-th time (default 10)"),
        Option("pictures", BOOL, help="scatter plots, GIFs, image grids (default true)"),
        Option("out", text("DIR"), help="default RUN/simulations"),
        Option("label", INT, help="class of the generated samples (class-conditional nets; "
               "default one class per sample in turn)"),
        *RUN, *SOLVE,
        Option("data", text("NAME", "circles"), help="score=discrete: the data set"),
        Option("root", PATH, help="score=discrete: data folder"),
        Option("dims_to_keep", POSITIVE_INT, help="score=discrete: kept dims (default all)"),
        Option("rho", POSITIVE, help="score=discrete: default 1"),
        Option("gamma0", POSITIVE, help="score=discrete: default 5e-4"),
        Option("t_max", POSITIVE, help="score=discrete: default 7.01 (images 15.01)"),
        Option("t_start", FLOAT, help="score=discrete: default 0"),
        Option("end_vars", POSITIVE, help="score=discrete: default 1"),
        Option("inflation", choice("orig", "constant_inflation_gap"),
               help="score=discrete: default orig"),
        Option("inflation_gap", FLOAT, help="score=discrete: the constant gap"),
        Option("g_rescaling", POSITIVE, help="score=discrete: default 1"),
    ])

ROUNDTRIP = Command(
    "roundtrip-mse", "IF roundtrip error data -> latents -> data (JSON)", _tool("roundtrip_mse"),
    description="Roundtrip error data -> latents -> data (calc_roundtrip_mse.py) over n "
    "examples drawn at random (seed) from the split, in batches. Images: MSE on the 0–255 scale "
    "of the PNG pixels (quantized; also unquantized). Flat data: relative error ‖x − x'‖/‖x‖ "
    "(mean, median, max) and the MSE. Writes OUT/{data}_{schedule}_roundtrip_mse.json.",
    options=[CKPT, Option("split", choice("train", "val", "test"), "train", "the data split"),
             Option("n", POSITIVE_INT, help="examples (default 2000; images 10000)"),
             Option("batch_size", POSITIVE_INT, 1000, "examples per solve"),
             Option("seed", INT, 42, "random subset"),
             Option("out", text("DIR"), help="default: the run directory"), *RUN, *SOLVE])

COVERAGE = Command(
    "coverage", "IF toy coverage experiment (alpha shapes / meshes)", _tool("coverage"),
    description="Toy coverage experiment (run_toy_alphashape_mesh_exps.py): latent test points "
    "and shells of boundary points at Mahalanobis radii, generated and inflated back; the "
    "fraction of test points inside each shell's alpha shape (2-D) or mesh (3-D) in latent, data "
    "and roundtrip space against the χ² expectation. Writes OUT/{data}_{schedule}_{n_test}"
    "lssamples_coverages.json and OUT/{data}_{schedule}_coverage.npz.",
    options=[CKPT, Option("n_test", POSITIVE_INT, 20000, "latent test points"),
             Option("n_boundary", POSITIVE_INT, 200, "boundary points per shell"),
             Option("radii", POSITIVE_LIST, help="Mahalanobis radii (default 0.5,1,…,3.5)"),
             Option("alpha", POSITIVE, help="alphashape's 1/circumradius (default 0.005 in "
                    "2-D, 0.1 in 3-D)"),
             Option("eps", POSITIVE, help="compressed dims' latent variance (default: the "
                    "schedule's at t_max)"),
             Option("batch_size", POSITIVE_INT, 5000, "points per solve"),
             Option("seed", INT, 0, "random seed"),
             Option("out", text("DIR"), help="default RUN/coverage"), *RUN, *SOLVE])

EXTRACT = Command(
    "extract", "denoiser outputs and residuals at fixed data over time", _tool("residuals_extract"),
    description="Fixed clean data x; at each time t fresh noise x̃ = x + W(√γ(t) ⊙ ε), the "
    "denoiser output D(x̃, t) and residual D(x̃, t) − x in data coordinates. layout=single: "
    "OUT/{data}_{schedule}_net_outputs_residuals.npz (N, T, D); layout=per_time: one "
    "…_time{i}.npz per time.",
    options=[CKPT, SPLIT, Option("n", POSITIVE_INT, help="examples (default 10000; images "
                                 "50000)"),
             Option("n_time_pts", POSITIVE_INT, help="times (default 701; images 256)"),
             Option("h", POSITIVE, help="toys: time step (default 1e-2)"),
             Option("batch_size", POSITIVE_INT, 1000, "examples per network call"),
             Option("seed", INT, 0, "random seed"),
             Option("layout", choice("single", "per_time"), help="default single for flat "
                    "data, per_time for images"),
             Option("out", text("DIR"), help="default RUN/residuals"), *RUN])
CALC = Command(
    "calc", "their cross-correlations against a reference time", _tool("residuals_calc"),
    description="Correlations of every dim at time index `reference` with every dim at each "
    "time: a single file -> …_autocorrelations.npz (T, D, D); a per_time DIR -> "
    "…_autocorrelations_times{ref}_{i}.npz, one per time.",
    options=[Option("res", PATH, help="FILE.npz or DIR written by residuals extract",
                    required=True),
             Option("reference", INT, 0, "reference time index"),
             Option("out", text("DIR"), help="default: next to res")])

COMMANDS = [ENCODE, SIMULATE, ROUNDTRIP, COVERAGE, Command(
    "residuals", "IF residual cross-correlations over time (extract | calc)",
    description="Cross-correlations of the network's outputs and residuals over time "
    "(calc_net_residuals_autocorrelations.py, App. C.1).",
    subcommands={"extract": EXTRACT, "calc": CALC})]
