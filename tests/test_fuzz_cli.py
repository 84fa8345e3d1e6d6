"""Property-based fuzzing of the ``bayesgen sample|evaluate|compare`` arguments (issue 22), at
the parse and validation level (nothing is loaded or trained): every argument list either
parses or ends with exit status 2 and one line ``bayesgen: error: …`` — never a traceback,
never a write outside a temporary folder."""

from __future__ import annotations

from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bayesgen.cli import COMMANDS, main
from bayesgen.cli.options import UsageError, parse
from fuzzing import NUMBERS, PATHS, STRINGS, assert_one_line, examples, guard

RAW = st.one_of(NUMBERS, STRINGS, PATHS, st.text(max_size=30),
                st.sampled_from(["tiny", "digits", "bsi,vdm", "bsi,", ",", "..", "x" * 101]))


def arguments(command: str) -> st.SearchStrategy[list[str]]:
    """``option=value`` lists for ``command``: its own options with any text, unknown options,
    arguments without ``=``, Hydra-style overrides (compare passes those on)."""
    names = [o.name for o in COMMANDS[command].options]
    arg = st.one_of(
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(names), RAW),
        st.builds(lambda k, v: f"{k}={v}", st.text(max_size=10), RAW),
        st.text(max_size=15),
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
            ["trainer.max_steps", "+x.y", "~optim", "method._target_", "name"]), RAW),
    )
    return st.lists(arg, max_size=5)


def run_main(args: list[str], capsys) -> None:
    """``bayesgen ARGS`` with the command's work replaced by a stub: parse and validate only."""
    capsys.readouterr()
    with guard() as tmp, mock.patch("bayesgen.compare.compare", return_value=tmp), \
            mock.patch.object(COMMANDS["sample"], "run", lambda opts: 0), \
            mock.patch.object(COMMANDS["evaluate"], "run", lambda opts: 0):
        rc = main(args)
    err = capsys.readouterr().err.strip()
    if rc != 0:
        assert rc == 2, (args, rc, err)
        assert err.startswith("bayesgen: error:") or err.startswith("usage:"), err
        if err.startswith("bayesgen: error:"):
            assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize("command", ["sample", "evaluate"])
@examples(fast=40, long=800)
@given(data=st.data())
def test_fuzz_parse(command, data):
    args = data.draw(arguments(command))
    with guard() as tmp:
        args = [a.replace("ckpt=.", f"ckpt={tmp}") for a in args]
        try:
            parse(COMMANDS[command], args, f"bayesgen {command}")
        except UsageError as e:
            assert_one_line(e)


@pytest.mark.parametrize("command", ["sample", "evaluate", "compare"])
@examples(fast=25, long=600)
@given(data=st.data())
def test_fuzz_main(command, data, capsys):
    head = data.draw(st.sampled_from([[], ["ckpt=."], ["preset=tiny"], ["preset=digits"]]))
    run_main([command, *head, *data.draw(arguments(command))], capsys)


@pytest.mark.parametrize("args", [
    ["compare", "preset=../../etc/x"], ["compare", "preset=tiny", "name=../x"],
    ["compare", "preset=tiny", "name=/abs"], ["compare", "preset=.hidden"],
    ["compare", "preset=tiny", "name=a\nb"],
])
def test_found_compare_names_are_refused(args, capsys):
    with guard(), mock.patch("bayesgen.compare.compare") as train:
        assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bayesgen: error:") and "is not a name" in err, err
    assert len(err.splitlines()) == 1
    train.assert_not_called()


@pytest.mark.parametrize("args", [
    ["{ß\r\x03¡\n;=1"],                   # found: the unknown key was echoed with its newline
    ["ckpt=a\nb"], ["n=1\u2028"], ["out\x85=x"],
])
def test_found_typed_text_stays_on_one_line(args):
    with pytest.raises(UsageError) as e:
        parse(COMMANDS["sample"], args, "bayesgen sample")
    assert_one_line(e.value)
