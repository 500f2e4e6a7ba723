"""Property tests of the command line (issue 18, acceptance 4): no input produces a Python traceback,
and every refusal is one line with exit code 2.

What "one line" means, click's usage errors included: ``splitveil.cli.main`` prints every refusal --
splitveil's own (a bad spec, a missing file) and click's (an option value out of range, an unknown
option, a missing argument) -- as exactly one non-empty line on stderr that starts with ``error: ``.
Click's usage header, its "Try ... --help" line and its boxed message are not printed; the line ends
with "(see `splitveil CMD --help`)" instead. Help (``--help``) is output, not a refusal.

The invocations run through ``main`` in this process (a subprocess per example would cost seconds).
Only invocations that are refused quickly or finish quickly are generated, so none trains, serves or
writes: serve and infer name a bundle that does not exist (given last, so that every other option is
checked first); spec files run through ``bench run --dry-run`` and ``train``, with a ``--data-dir``
that holds no dataset, and their data are never lfw-faces (which ships with scikit-image), so a valid
spec ends in "dataset not found"; ``attack`` and ``export`` get a valid spec whose data are missing.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitveil.attacks import ATTACKS, attack_options
from splitveil.cli import main
from splitveil.defenses import DEFENSES, defense_options
from splitveil.models import MODELS

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples on every run: a CI failure reproduces
    suppress_health_check=[HealthCheck.too_slow],
)

# Text as a command line can carry it: no NUL (argv cannot hold one) and no lone surrogates.
ARGV_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)
NUMBERS = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "-1", "1", "65535", "65536", "70000", "nan", "inf", "1e3", "", "0x10"]),
    ARGV_TEXT,
)
# Shapes that are malformed, absurd, or too small for every zoo model (so none is computed).
SHAPES = st.one_of(
    st.lists(st.integers(1, 7), min_size=3, max_size=3).map(lambda s: ",".join(map(str, s))),
    st.lists(st.integers(-(10**6), 10**6), min_size=0, max_size=4).map(lambda s: ",".join(map(str, s))),
    st.sampled_from(["1,100000,100000", "65,28,28", "1,513,28", "28,28", "1,28,28,1", "a,b,c"]),
    ARGV_TEXT,
)


def run_main(*args: str) -> tuple[int, str, str]:
    """``splitveil ARGS`` through ``main`` in this process: exit code, stdout, stderr. Any exception
    but the ``SystemExit`` main ends with escapes and fails the test: it is a user's traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        main(list(args))
    code = exited.value.code
    return (code if isinstance(code, int) else (0 if code is None else 1)), out.getvalue(), err.getvalue()


def assert_succeeds_or_refuses_in_one_line(args: list[str]) -> None:
    code, stdout, stderr = run_main(*args)
    assert "Traceback" not in stdout + stderr, (args, stderr)
    if code != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2, (args, code, stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, stderr)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Paths of every kind a user might pass: missing, a directory, binary, text, fake PEM, a corrupt
    results store, and a spec that is valid but whose data are missing."""
    root = tmp_path_factory.mktemp("cli-properties")
    made = {name: root / name for name in ("missing", "directory", "empty-dir", "binary", "text", "fake.pem")}
    made["directory"].mkdir()
    made["empty-dir"].mkdir()
    made["binary"].write_bytes(b"\x00\xff\xfe\x93NUMPY" + bytes(range(256)))
    made["text"].write_text("a token\n")
    made["fake.pem"].write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    made["corrupt-run"] = root / "corrupt-run"
    made["corrupt-run"].mkdir()
    (made["corrupt-run"] / "results.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 4)
    (made["corrupt-run"] / "spec.resolved.yaml").write_text("model: {name: lenet}\n")
    made["no-data-spec"] = root / "no-data.yaml"
    made["no-data-spec"].write_text(
        yaml.safe_dump({"data": {"name": "cifar10", "data_dir": str(made["empty-dir"])}, "cuts": ["conv11"]})
    )
    made["spec"] = root / "generated.yaml"  # rewritten by each spec example
    made["out"] = root / "out"  # never created: nothing generated runs far enough to write
    return made


def paths(files: dict[str, Path]) -> st.SearchStrategy[str]:
    kinds = ["missing", "directory", "binary", "text", "fake.pem", "corrupt-run", "no-data-spec"]
    under_root = ARGV_TEXT.map(lambda name: str(files["directory"] / name.replace("/", "_").lstrip(".")))
    return st.one_of(st.sampled_from(kinds).map(lambda kind: str(files[kind])), under_root)


def _options(draw, table: dict[str, st.SearchStrategy[str] | None]) -> list[str]:
    """Some of ``table``'s options (None: a flag), each with a drawn value, plus now and then a typo."""
    args: list[str] = []
    chosen = draw(st.lists(st.sampled_from(sorted(table)), max_size=4, unique=True)) if table else []
    for option in chosen:
        value = table[option]
        args += [option] if value is None else [option, draw(value)]
    if draw(st.integers(0, 9)) == 0:
        args += [draw(st.sampled_from(["--prot", "--help", "-x", "--max_batch", "extra"]))]
    return args


@st.composite
def invocations(draw, files: dict[str, Path]) -> list[str]:
    path, spec = paths(files), str(files["no-data-spec"])
    missing, cache = str(files["missing"]), ["--cache-dir", str(files["out"] / "cache")]
    command = draw(st.sampled_from(["serve", "infer", "models", "profile", "bench", "attack", "export", "train"]))
    if command == "serve":
        table = {
            **dict.fromkeys(["--port", "--max-batch", "--threads", "--max-request-samples"], NUMBERS),
            **dict.fromkeys(["--drain-timeout", "--max-wait-ms", "--capture-max-bytes"], NUMBERS),
            **dict.fromkeys(["--tokens-file", "--cert", "--key"], path),
            "--host": ARGV_TEXT,
            "--no-auth": None,
        }
        return ["serve", *_options(draw, table), "--checkpoint", missing]
    if command == "infer":
        table = {
            "--timeout": NUMBERS,
            "--token-file": path,
            "--ca-cert": path,
            "--url": ARGV_TEXT,
            "--codec": st.sampled_from(["float32", "int8", "float64"]) | ARGV_TEXT,
            "--zstd": None,
            "--json": None,
        }
        images = draw(st.lists(path, min_size=1, max_size=2))
        return ["infer", *images, "--url", "http://127.0.0.1:9", *_options(draw, table), "--checkpoint", missing]
    if command == "models":
        return ["models", "--input-shape", draw(SHAPES), *_options(draw, {"--json": None})]
    if command == "profile":
        model = draw(st.sampled_from(["lenet", "he-cnn"]) | ARGV_TEXT)
        return ["profile", model, "--input-shape", draw(SHAPES), *_options(draw, {"--num-classes": NUMBERS})]
    if command == "bench":
        sub = draw(st.sampled_from(["status", "report", "frontier"]))
        return ["bench", sub, draw(path), *_options(draw, {"--markdown": None} if sub == "frontier" else {})]
    if command == "attack":
        table = {
            "--set": st.tuples(ARGV_TEXT, ARGV_TEXT).map("=".join) | st.sampled_from(["steps=5", "stpes=5", "lr=1e-3"]),
            "--targets": NUMBERS,
            "--strength": NUMBERS,
            "--out": path,
        }
        attack = draw(st.sampled_from(ATTACKS.names()) | ARGV_TEXT)
        return ["attack", spec, "--cut", "conv11", "--attack", attack, *_options(draw, table), *cache]
    if command == "export":
        options = _options(draw, {"--strength": NUMBERS})
        return ["export", spec, "--cut", draw(ARGV_TEXT), "--out", draw(path), *options, *cache]
    table = {
        "--epochs": NUMBERS,
        "--seed": NUMBERS,
        "--limit": NUMBERS,
        "--model": st.sampled_from(MODELS.names()) | ARGV_TEXT,
    }
    dataset = draw(st.sampled_from(["fashion-mnist", "cifar10", "mnist-5k"]) | ARGV_TEXT)
    data = ["--dataset", dataset, "--data-dir", str(files["empty-dir"])]
    return ["train", *data, "--out", str(files["out"]), *_options(draw, table), *cache]


def test_no_command_line_produces_a_traceback(files):
    @SETTINGS
    @given(invocations(files))
    def check(args: list[str]) -> None:
        assert_succeeds_or_refuses_in_one_line(args)
        assert not files["out"].exists(), "nothing generated may run far enough to write"

    check()


# Spec files: YAML near a valid spec, with keys and values drawn from what is valid, mistyped or random.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 64),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=8),
    st.sampled_from(["1e-3", "relu22", "conv11", "rmle", "lenet", "he-cnn", "mse", "input", "2024-13-45"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
OPTION_VALUES = st.one_of(SCALARS, st.lists(st.integers(-2, 16), max_size=4))
NAMES = st.text(max_size=8)


def _options_of(names: list[str]) -> st.SearchStrategy[dict]:
    return st.dictionaries(st.sampled_from(sorted(set(names))) | NAMES, OPTION_VALUES, max_size=3)


ATTACK_ENTRIES = st.fixed_dictionaries(
    {"name": st.sampled_from(ATTACKS.names()) | NAMES},
    optional={"options": _options_of([o for name in ATTACKS.names() for o in attack_options(name)])},
)
DEFENSE_ENTRIES = st.fixed_dictionaries(
    {"name": st.sampled_from(DEFENSES.names()) | NAMES},
    optional={
        "strengths": st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32) | SCALARS, max_size=3),
        "options": _options_of([o for name in DEFENSES.names() for o in defense_options(name)]),
        "label": NAMES,
        "retrain": SCALARS,
        "init": st.sampled_from(["pretrained", "scratch"]) | NAMES,
        "epochs": SCALARS,
    },
)
SPEC_MAPPINGS = st.fixed_dictionaries(
    {},
    optional={
        "name": NAMES | SCALARS,
        "seed": SCALARS,
        # Never lfw-faces: it ignores --data-dir, so a valid spec would go on to train.
        "data": st.fixed_dictionaries(
            {"name": st.sampled_from(["fashion-mnist", "cifar10", "mnist-5k", "imagenet"])},
            optional={"limit": SCALARS, "aux_fraction": SCALARS, "val_fraction": SCALARS},
        ),
        "model": st.fixed_dictionaries(
            {"name": st.sampled_from(MODELS.names()) | NAMES},
            optional={"options": _options_of(["widths", "hidden", "dropout", "input_shape", "blocks_per_stage"])},
        )
        | VALUES,
        "train": st.dictionaries(st.sampled_from(["epochs", "lr", "optimizer", "epoch", "batch_size"]), SCALARS)
        | VALUES,
        "cuts": st.lists(st.sampled_from(["conv11", "relu22", "fc1"]) | NAMES, max_size=3) | VALUES,
        "attacks": st.lists(ATTACK_ENTRIES | VALUES, max_size=2) | VALUES,
        "defenses": st.lists(DEFENSE_ENTRIES, max_size=2) | VALUES,
        "audit": st.fixed_dictionaries(
            {},
            optional={
                "targets": SCALARS,
                "mine": st.fixed_dictionaries({}, optional={"options": _options_of(["hidden", "lr", "steps", "seed"])}),
                "evaluator": st.fixed_dictionaries({}, optional={"model": st.sampled_from(["lenet", "alexnet"])}),
                "reid": VALUES,
            },
        ),
        "atacks": VALUES,
        "epochs": VALUES,
    },
)
SPEC_FILES = st.one_of(
    SPEC_MAPPINGS.map(lambda spec: yaml.safe_dump(spec).encode()),
    VALUES.map(lambda value: yaml.safe_dump(value).encode()),  # mostly not a mapping
    st.binary(max_size=64),
    st.text(max_size=64).map(str.encode),
    st.sampled_from([b"", b"# only a comment\n", b"{}\n", b"---\n", b"[" * 3000, b"seed: 2024-13-45\n", b"a: \x00\n"]),
)


def test_no_spec_file_produces_a_traceback(files):
    empty = str(files["empty-dir"])

    @SETTINGS
    @given(SPEC_FILES, st.sampled_from(["dry-run", "train"]))
    def check(content: bytes, command: str) -> None:
        files["spec"].write_bytes(content)
        if command == "dry-run":
            args = ["bench", "run", str(files["spec"]), "--out", str(files["out"]), "--dry-run", "--data-dir", empty]
        else:
            args = ["train", str(files["spec"]), "--out", str(files["out"]), "--data-dir", empty]
        assert_succeeds_or_refuses_in_one_line([*args, "--cache-dir", str(files["out"] / "cache")])
        assert not files["out"].exists(), "nothing may be written for a spec whose data are missing"

    check()
