"""Property-based fuzzing of the configuration checks (issue 22): for every config group and
every leaf key of the resolved default configuration of each experiment family, generated
overrides either pass `validate_config` or raise its one-line ``ConfigError`` — never another
exception, never a write outside a temporary folder, never an import of a module they name.

``BAYESGEN_FUZZ=long`` (``make test-fuzz``) runs many more examples than ``make test``.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from bayesgen.training.build import ConfigError, compose_config
from bayesgen.training.validate import GROUPS, compose_checked, group_options, validate_config
from fuzzing import (
    HOSTILE_TARGETS,
    KEY_NAMES,
    PREFIXES,
    VALUES,
    assert_one_line,
    examples,
    guard,
)

# each experiment family with a small configuration of it
FAMILIES = {
    "bsi": ["experiment=digits-bsi"],
    "bfn_continuous": ["experiment=mnist-bfn-minimal-continuous"],
    "bfn_discretized": ["method=bfn_discretized", "net.out_channels=2"],
    "bfn_discrete": ["experiment=mnist-bfn-minimal-binarised"],
    "if": ["experiment=if-toy-fast"],
    "vdm": ["method=vdm"],
}


def _leaves(node, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            out += _leaves(v, f"{prefix}.{k}" if prefix else str(k))
        return out or [prefix]
    return [prefix]


LEAVES = {family: sorted(_leaves(OmegaConf.to_container(compose_config(base), resolve=False)))
          for family, base in FAMILIES.items()}
ALL_LEAVES = sorted({k for keys in LEAVES.values() for k in keys})


def run_checks(overrides: list[str]) -> None:
    """Compose and validate as ``bayesgen train`` does before it starts anything. A failure
    names the overrides at once (Hypothesis reports its example only when the test ends)."""
    try:
        with guard():
            try:
                cfg = compose_checked(overrides)
                validate_config(cfg, overrides)
            except ConfigError as e:
                assert_one_line(e)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # re-raised with the input that caused it (SystemExit too)
        print(f"\nFUZZ FAILURE {overrides!r}: {type(e).__name__}: {e}", flush=True)
        raise AssertionError(f"{overrides!r}: {type(e).__name__}: {e}") from e


def leaf_override(family: str) -> st.SearchStrategy[str]:
    """``[+|++|~]key=value`` for a leaf key of ``family``'s configuration (or one of its
    parents, or a key that does not exist under it)."""
    keys = st.one_of(
        st.sampled_from(LEAVES[family]),
        st.sampled_from(LEAVES[family]).map(lambda k: k.rpartition(".")[0] or k),
        st.tuples(st.sampled_from(LEAVES[family]), KEY_NAMES).map(
            lambda t: f"{t[0].rpartition('.')[0] or t[0]}.{t[1]}"),
        KEY_NAMES,
    )
    values = st.one_of(VALUES, keys.map(lambda k: "${" + k + "}"))

    def form(prefix: str, key: str, value: str) -> str:
        if prefix == "~":
            return f"~{key}" if value.startswith("-") else f"~{key}={value}"
        return f"{prefix}{key}={value}"

    return st.builds(form, PREFIXES, keys, values)


def group_override() -> st.SearchStrategy[str]:
    """``group=option``: options that exist, and names and paths that do not."""
    options = st.one_of(*[st.sampled_from(group_options(g)).map(lambda o, g=g: f"{g}={o}")
                          for g in GROUPS],
                        st.builds(lambda g, v: f"{g}={v}", st.sampled_from(GROUPS), VALUES))
    return st.builds(lambda p, o: p + o, st.sampled_from(["", "", "+", "~", "++"]), options)


def cycle(family: str) -> st.SearchStrategy[list[str]]:
    """Two keys that interpolate each other (or one itself)."""
    leaf = st.sampled_from(LEAVES[family])
    return st.builds(lambda a, b: [f"{a}=${{{b}}}", f"{b}=${{{a}}}"], leaf, leaf)


@pytest.mark.parametrize("family", FAMILIES)
@examples(fast=5, long=250)
@given(data=st.data())
def test_fuzz_leaf_overrides(family, data):
    extra = data.draw(st.one_of(
        st.lists(leaf_override(family), min_size=1, max_size=3),
        cycle(family),
        st.lists(st.one_of(leaf_override(family), group_override()), min_size=1, max_size=3),
    ))
    run_checks([*FAMILIES[family], *extra])


@examples(fast=5, long=150)
@given(st.sampled_from(list(FAMILIES)), st.sampled_from(sorted({
    k.rpartition(".")[0] for k in ALL_LEAVES if "." in k} | {"method", "net", "data"})),
    st.sampled_from(HOSTILE_TARGETS))
def test_fuzz_targets(family, node, target):
    """A hostile ``_target_`` in any node is refused before it is imported or called."""
    overrides = [*FAMILIES[family], f"++{node}._target_={target}"]
    with guard():
        try:
            cfg = compose_checked(overrides)
            validate_config(cfg, overrides)
        except ConfigError as e:
            assert_one_line(e)
        else:
            pytest.fail(f"{overrides} accepted")  # none of HOSTILE_TARGETS is bayesgen's


# ---- inputs the fuzzing found (kept as explicit cases) ----------------------------------------
@pytest.mark.parametrize("overrides", [
    ["name=../../escape"], ["name=/abs"], ["name='a\\nb'"], ["name=.hidden"], ["name=" + "a" * 101],
    ["experiment=../../x"], ["data=../digits"], ["method._target_=os.system"],
    ["net._target_=subprocess.run"], ["+augment={_target_:os.system}"],
    ["++trainer.strategy={_target_:os.system}"], ["name=${oc.env:BAYESGEN_FUZZ_UNSET}"],
    ["name=${oc.env:HOME}"], ["seed=${optim.lr}", "optim.lr=${seed}"], ["name=${name}"],
    ["allow_targets=${allow_targets}"], ["allow_targets=[os.system]", "name=${seed}/x"],
])
def test_found_inputs_are_refused(overrides):
    with guard(), pytest.raises(ConfigError) as e:
        validate_config(compose_checked(["experiment=digits-bsi", *overrides]),
                        ["experiment=digits-bsi", *overrides])
    assert_one_line(e.value)


# found by the long profile: the whole command line, family's base included
@pytest.mark.parametrize(("overrides", "needle"), [
    # an experiment's data options (data.soft of binarized MNIST) meet another data set
    (["experiment=mnist-bfn-minimal-binarised", "data=alt_s_curve"], "data.soft for another"),
    (["experiment=if-toy-fast", "++data.0=0"], "data.0: not an option of data set circles"),
    (["experiment=digits-bsi", "+data.foo=1"], "not an option of data set digits"),
    (["experiment=digits-bsi", "data.name=foo"], "invalid data.name=foo: not a data set"),
    # an override with no key: Hydra fails on an assert of its own
    (["method=vdm", "+_partial_=runs", "+=E"], "has no key"),
    (["method=vdm", "~=E"], "has no key"),
    (["method=vdm", "+@x=E"], "has no key"),
    # a list of numbers as group options: Hydra's TypeError ('float' is not iterable)
    (["experiment=mnist-bfn-minimal-continuous", "+data=alt_s_curve", "+trainer=[0.9,0.99]",
      "~experiment=s_curve-if-prr1-fast"], "trainer=0.9 does not exist"),
    (["method=vdm", "trainer=[1,2]"], "trainer=1 does not exist"),
])
def test_found_long_inputs_are_refused(overrides, needle):
    with guard(), pytest.raises(ConfigError, match=needle) as e:
        validate_config(compose_checked(overrides), overrides)
    assert_one_line(e.value)


@example(["optim.lr=1e-3"])
@given(st.just(["seed=3"]))
def test_valid_overrides_still_pass(overrides):
    with guard():
        validate_config(compose_checked(["experiment=digits-bsi", *overrides]), overrides)


def test_allow_targets_trusts_only_the_command_line(monkeypatch):
    """``allow_targets=`` on the command line trusts a class of the user's; the same list in a
    file (``allow_targets`` already in the configuration) does not."""
    from bayesgen.training.validate import check_config_targets

    cfg = compose_checked(["experiment=digits-bsi"])
    cfg.net._target_ = "mypackage.MyNet"
    with pytest.raises(ConfigError, match="allow_targets"):
        check_config_targets(cfg, [])
    check_config_targets(cfg, ["allow_targets=[mypackage.MyNet]"])
    cfg.allow_targets = ["mypackage.MyNet"]
    with pytest.raises(ConfigError, match="cannot trust its own targets"):
        check_config_targets(cfg, [])
    monkeypatch.setenv("BAYESGEN_TRUSTED_TARGETS", "mypackage.MyNet")
    cfg.allow_targets = []
    check_config_targets(cfg, [])
