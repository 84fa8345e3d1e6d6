"""Shared parts of the property-based fuzz tests (tests/test_fuzz_*.py).

Profiles (``BAYESGEN_FUZZ``): ``fast`` (the default, in ``make test``: few examples, always the
same ones) and ``long`` (``make test-fuzz``: many random ones). `guard` watches an example run
through Python's audit hooks: a write outside the temporary folder, a process started, or an
import of a module named in the input is recorded and fails the test.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

LONG = os.environ.get("BAYESGEN_FUZZ", "fast") == "long"
# no shrinking: on two shared cores it takes minutes per failure; the failing input is printed
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate)
settings.register_profile("fast", derandomize=True, database=None, deadline=None,
                          print_blob=True, suppress_health_check=list(HealthCheck),
                          phases=_PHASES)
settings.register_profile("long", derandomize=False, database=None, deadline=None,
                          print_blob=True, suppress_health_check=list(HealthCheck),
                          phases=_PHASES)
settings.load_profile("long" if LONG else "fast")


def examples(fast: int, long: int) -> settings:
    """Settings with ``fast`` examples in the fast profile and ``long`` in the long one."""
    return settings(max_examples=long if LONG else fast)


# ---- what an example may not do -----------------------------------------------------------------
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.symlink",
                "os.link", "os.truncate", "os.chmod", "shutil.rmtree", "shutil.copyfile",
                "shutil.move"}
_PROCESS_EVENTS = {"os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn",
                   "webbrowser.open", "os.fork", "os.forkpty"}
_watch: list[Guard] = []


class Guard:
    """What one example did that it may not: ``problems`` lists each in one line."""

    def __init__(self, allowed: list[Path], forbidden_modules: set[str]):
        self.allowed = [p.resolve() for p in allowed]
        self.forbidden = forbidden_modules
        self.problems: list[str] = []

    def writes_outside(self, path) -> bool:
        if isinstance(path, int) or path is None:
            return False
        try:
            p = Path(os.fsdecode(path)).resolve()
        except (ValueError, OSError):
            return True
        if ".hypothesis" in p.parts:  # Hypothesis's cache (drawing text fills its tables)
            return False
        return not any(p == a or a in p.parents for a in self.allowed)


def _hook(event: str, args: tuple) -> None:
    if not _watch:
        return
    g = _watch[-1]
    if event == "open":
        path, _mode, flags = args
        if isinstance(flags, int) and flags & _WRITE_FLAGS and g.writes_outside(path):
            g.problems.append(f"wrote {path}")
    elif event in _PATH_EVENTS:  # copies write their second argument only
        for path in args[1:2] if event.startswith("shutil.copy") else args[:2]:
            if isinstance(path, str | bytes | os.PathLike) and g.writes_outside(path):
                g.problems.append(f"{event} {path}")
    elif event in _PROCESS_EVENTS:
        g.problems.append(f"{event} {args[:1]}")
    elif event == "import":
        name = str(args[0])
        if name.split(".")[0] in g.forbidden or name in g.forbidden:
            g.problems.append(f"imported {name}")


sys.addaudithook(_hook)


def _warm_up() -> None:
    """Import what bayesgen's commands import lazily, outside any guard: on their first import
    matplotlib and torch create their cache folders (~/.cache, ~/.config, /tmp/torchinductor_*),
    which are theirs, not the examples'."""
    import lightning.pytorch  # noqa: F401
    import matplotlib.pyplot  # noqa: F401

    from bayesgen.cli import _is_user_error

    _is_user_error(RuntimeError())


_warm_up()

# targets that must never be imported or called (none is imported by bayesgen or its tests)
CANARY_MODULES = ("this", "smtplib", "ftplib", "xmlrpc", "telnetlib", "bayesgen_fuzz_canary",
                  "mailbox", "turtle")
HOSTILE_TARGETS = ("os.system", "subprocess.run", "builtins.eval", "shutil.rmtree",
                   "this.s", "smtplib.SMTP", "ftplib.FTP", "xmlrpc.client.ServerProxy",
                   "bayesgen_fuzz_canary.f", "mailbox.Maildir", "turtle.Turtle",
                   "bayesgen.training.fit.run_training", "torch.load", "pathlib.Path.unlink",
                   "bayesgen", "os", "", "..", "bayesgen.nets.MLP.__init__",
                   "bayesgen.methods.bsi.BSI.__class__")


@contextlib.contextmanager
def guard(data_dir: Path | None = None) -> Iterator[Path]:
    """Run the body in a fresh temporary folder (its working directory and
    ``BAYESGEN_DATA_DIR``); afterwards fail on any write outside it, any process started and any
    import of a `CANARY_MODULES` module."""
    before = {m for m in CANARY_MODULES if m in sys.modules}
    with tempfile.TemporaryDirectory(prefix="bayesgen-fuzz-") as tmp:
        tmp_path = Path(tmp)
        g = Guard([tmp_path, Path("/dev")], set(CANARY_MODULES) - before)
        cwd, env = os.getcwd(), os.environ.get("BAYESGEN_DATA_DIR")
        os.chdir(tmp)
        os.environ["BAYESGEN_DATA_DIR"] = str(data_dir or tmp_path)
        _watch.append(g)
        try:
            yield tmp_path
        finally:
            _watch.remove(g)
            os.chdir(cwd)
            if env is None:
                os.environ.pop("BAYESGEN_DATA_DIR", None)
            else:
                os.environ["BAYESGEN_DATA_DIR"] = env
        assert not g.problems, "; ".join(g.problems[:5])


def assert_one_line(e: BaseException) -> None:
    """A message a user reads: one non-empty line, no traceback."""
    text = str(e)
    assert text.strip(), f"{type(e).__name__} with an empty message"
    assert len(text.strip().splitlines()) == 1, f"{type(e).__name__} over lines: {text!r}"
    assert "Traceback" not in text, text


# ---- values -------------------------------------------------------------------------------------
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0", "-1", "1", "2147483648", "9223372036854775808", "1e308", "-1e308",
                     "1e-320", "nan", "inf", "-inf", "+inf", "NaN", "0.0", "-0.0", "1_000",
                     "0x10", "1e999", "3.5", "-2.5", "0.9999999", "1.0000001"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
PATHS = st.sampled_from(["../x", "../../escape", "/etc/passwd", "/tmp", "a/b", "~", "~/x",
                         ".hidden", "..", ".", "C:\\\\x", "x\\\\y", "runs", "a" * 101,
                         "'a\\x00b'", "'a\\nb'", "'/abs/path'", "'..'", "'a/../b'"])
INTERPOLATIONS = st.sampled_from([
    "${oc.env:BAYESGEN_FUZZ_UNSET}", "${oc.env:HOME}", "'${oc.env:HOME}'", "${oc.env:PATH,x}",
    "${name}", "${seed}", "${nope.nothing}", "${data}", "${optim.lr}", "${oc.decode:'1e400'}",
    "${oc.create:{a:1}}", "${now:%Y}", "${hydra:job.name}", "${bayesgen_short_class:x.y.Z}",
    "${unknown_resolver:1}", "${", "}", "${}", "$${name}", "${oc.select:nope,1}",
    "${oc.decode:'${oc.env:HOME}'}", "${oc.dict.keys:optim}", "${oc.deprecated:seed}",
])
STRINGS = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="ascii"), max_size=12),
    st.text(min_size=1, max_size=8).map(lambda s: "'" + s.replace("\\", "\\\\")
                                        .replace("'", "\\'") + "'"),
    st.sampled_from(["", "''", '""', "null", "None", "true", "false", "True", "yes", "auto",
                     "é", "名前", "\U0001f600", "a b", "a,b", "a=b", "[", "]", "{", "}",
                     "\\", "'", '"', "\t", " ", "-", "--help", "-m"]),
)
STRUCTURES = st.sampled_from([
    "[]", "[1,2]", "[0.9,0.99]", "[1,2,3]", "[a,[b]]", "[nan,inf]", "{}", "{a:1}",
    "{_target_:os.system}", "{_target_:bayesgen.methods.bsi.Discretization,min:-1,max:1,k:4}",
    "{_target_:bayesgen.methods.bsi.Discretization}", "[${name}]", "{x:${oc.env:HOME}}",
    "choice(1,2)", "range(1,3)", "interval(0,1)", "tag(a,1)", "glob(*)", "shuffle(1,2)",
    "extend_list(1)",
])
VALUES = st.one_of(NUMBERS, STRINGS, PATHS, INTERPOLATIONS, STRUCTURES,
                   st.sampled_from(HOSTILE_TARGETS))
KEY_NAMES = st.one_of(
    st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
    st.sampled_from(["_target_", "_partial_", "_recursive_", "_convert_", "hydra", "defaults",
                     "", ".", "a..b", "0", "é", "name.x", "_self_"]),
)
PREFIXES = st.sampled_from(["", "", "", "+", "++", "~"])
