"""``bayesgen compare``: train several methods alike and write a report (bayesgen.compare)."""

from __future__ import annotations

from bayesgen.cli.options import BOOL, POSITIVE_INT, Command, Option, UsageError, parse, text
from bayesgen.names import name_problem


def run(args: list[str]) -> int:
    from bayesgen.presets import load_preset

    options = [a for a in args if "=" in a and "." not in a.split("=", 1)[0]
               and not a.startswith(("+", "~"))]
    overrides = [a for a in args if a not in options]
    opts = parse(COMMANDS[0], options, "bayesgen compare")
    if opts["steps"] and opts["seconds"]:
        raise UsageError("give steps= or seconds=, not both")
    spec = load_preset(opts["preset"], opts["config"])
    if opts["steps"]:
        spec["budget"] = {"steps": opts["steps"]}
    if opts["seconds"]:
        spec["budget"] = {"seconds": opts["seconds"]}
    if opts["name"]:
        if problem := name_problem(opts["name"], "name="):
            raise UsageError(problem)
        spec["name"] = opts["name"]
    methods = opts["methods"].split(",") if opts["methods"] else None
    from bayesgen.compare import compare

    compare(spec, opts["out"], methods, overrides, opts["samples"], opts["report_only"])
    return 0


COMMANDS = [Command(
    "compare", "train several methods alike -> report.md/.html (preset=digits|mnist|tiny)", run,
    passthrough=True, usage_args="preset=NAME|config=FILE.yaml [options] [overrides]",
    description="Train several methods on the same data, network, optimizer, batch, EMA and "
    "budget, one after the other, then write <out>/<name>/report.md and report.html (test "
    "bits/dim, classifier FD, confident share, training and sampling speed; baselines; "
    "validation curves; sample grids; the commands). Re-running skips finished runs and resumes "
    "interrupted ones. Hydra overrides (key.sub=value, +key=value) apply to every run, e.g. "
    "trainer.val_check_interval=500.",
    options=[
        Option("preset", text("NAME", "tiny"), help="a preset in bayesgen/conf/compare/ "
               "(digits, mnist, tiny)"),
        Option("config", text("FILE.yaml"), help="a preset file of your own"),
        Option("methods", text("A,B", "bsi"), help="only these methods of the preset"),
        Option("steps", POSITIVE_INT, help="replace the preset's budget: steps per method"),
        Option("seconds", POSITIVE_INT, help="replace the budget: wall clock per method"),
        Option("samples", POSITIVE_INT, help="samples for the quality score and samples/s"),
        Option("name", text("NAME"), help="report folder name (default: the preset's)"),
        Option("out", text("DIR"), "compare", "the report goes to <out>/<name>/"),
        Option("report_only", BOOL, False, "rewrite the report from finished runs, train "
               "nothing"),
    ])]
