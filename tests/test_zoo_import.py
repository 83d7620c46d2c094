"""Importing the published zoo layout of the paper: small fake published zoos are made with the
LSTM plugin (random weights and inputs, their outputs computed and stored in float16), imported,
and compared with the source; tampered or broken files are refused by row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wspace_core import plugins
from wspace_core.architecture import Sizes
from wspace.cli import cli
from wspace_core.registry import WspaceError
from wspace_core.task import SPLITS
from wspace.zoo import Zoo, import_paper
from wspace.zoo.paper_import import infer_sizes

STEPS = [0, 10, 100]
RUNS, N = 3, 5
FL_TOKENS = 16  # sequence tokens (BOS included) of the fake formal-languages zoo: T = 15


def _lstm(sizes: Sizes):
    return plugins.architectures().get("lstm")(sizes)


@torch.no_grad()
def _outputs(arch, weights: np.ndarray, xs: torch.Tensor) -> torch.Tensor:
    params = arch.layout.unflatten(torch.from_numpy(weights))
    return arch.forward(params, xs)[0]  # (R, N, T, O)


def published_accept_overwrite(sequences: torch.Tensor, eos: int = 5) -> torch.Tensor:
    """What the published ``accept_sequence`` leaves in the rollouts it judged: EOS written over
    position 0 of every rollout without an EOS (its "first EOS" index is 0 then)."""
    out = sequences.clone()
    out[..., 0] = torch.where((sequences == eos).any(-1), sequences[..., 0], torch.tensor(eos))
    return out


def make_formal_languages(src: Path, seed: int = 0) -> dict:
    """A fake published formal-languages zoo in the published layout: 3 runs (a train, a
    validation and an OOD language of the 216-language split) x 3 snapshots, LSTM hidden 8 x 2
    layers; half the rollouts end with EOS, the others hold none and carry the published
    EOS-over-BOS overwrite (their logits follow the BOS the network was fed)."""
    family = plugins.task_families().get("formal_languages")(sequence_tokens=FL_TOKENS)
    splits = family.splits()
    languages = [splits["train"][0], splits["validation"][0], splits["ood"][0]]
    arch = _lstm(Sizes(6, 8, 6, 2))
    g = torch.Generator().manual_seed(seed)
    R, T = RUNS * len(STEPS), FL_TOKENS - 1
    weights = torch.cat([arch.layout.flatten(arch.init(1, generator=g)) * 3 for _ in range(R)]).numpy()
    sequences = torch.randint(0, 4, (R, N, FL_TOKENS), generator=g)
    ends = torch.randint(2, FL_TOKENS, (R, N), generator=g)
    with_eos = torch.arange(N) % 2 == 0  # (N,) rollouts 0, 2, 4 stop
    stop = with_eos[:, None] & (torch.arange(FL_TOKENS) >= ends[..., None])  # (R, N, FL_TOKENS)
    sequences[stop] = 5  # EOS from a random position on
    sequences[..., 0] = 4  # BOS
    logits = torch.log_softmax(_outputs(arch, weights, torch.nn.functional.one_hot(sequences[..., :T], 6).float()), -1)
    fed = sequences
    sequences = published_accept_overwrite(sequences)
    src.mkdir(parents=True)
    files = {
        "parameters.npy": weights.astype(np.float32),
        "sequences.npy": sequences.numpy().astype(np.int16),
        "logits.npy": logits.numpy().astype(np.float16),
        "tasks.npy": np.array([[0, *languages[r]] for r in range(RUNS) for _ in STEPS], dtype=np.int64),
        "num_step_correct.npy": np.array([[r, s, 100 * r + s % 7] for r in range(RUNS) for s in STEPS]),
    }
    for name, array in files.items():
        np.save(src / name, array)
    return {**files, "languages": languages, "family": family, "fed": fed.numpy().astype(np.int16)}


def make_tiled_mnist(src: Path) -> dict:
    arch = _lstm(Sizes(16, 4, 10, 1))
    g = torch.Generator().manual_seed(1)
    R, T = RUNS * len(STEPS), 50
    weights = torch.cat([arch.layout.flatten(arch.init(1, generator=g)) for _ in range(R)]).numpy()
    sequences = torch.randn((R, N, T, 16), generator=g).half()
    logits = _outputs(arch, weights, sequences.float())
    angles = np.array([10.0, 30.0, 330.0])  # train, validation, OOD
    decays = np.array([0.0, 0.01, 0.1])
    acc = np.array([[0.1 * r + s / 1000, 2.0 - r * 0.1, 2.5 - s / 100, decays[r]]
                    for r in range(RUNS) for s in STEPS])
    src.mkdir(parents=True)
    files = {
        "parameters.npy": weights.astype(np.float32), "sequences.npy": sequences.numpy(),
        "logits.npy": logits.numpy().astype(np.float16),
        "tasks.npy": np.repeat(angles, len(STEPS))[:, None],
        "num_step.npy": np.array([[r, s] for r in range(RUNS) for s in STEPS]),
        "accuracy_losses.npy": acc,
    }
    for name, array in files.items():
        np.save(src / name, array)
    return files


def test_formal_languages_import_round_trips(tmp_path):
    src = make_formal_languages(tmp_path / "published")
    zoo = import_paper(tmp_path / "published", tmp_path / "zoo", "formal_languages", chunk_size=2)
    S, T = len(STEPS), FL_TOKENS - 1
    assert (zoo.num_models, zoo.rows_per_model, zoo.snapshot_steps) == (RUNS, S, STEPS)
    np.testing.assert_array_equal(zoo.weights, src["parameters.npy"])
    # the stored rollouts with the published EOS-over-BOS overwrite undone: what the networks read
    assert (src["sequences.npy"][:, 1::2, 0] == 5).all() and (src["sequences.npy"][:, ::2, 0] == 4).all()
    np.testing.assert_array_equal(zoo.rollout_inputs, src["fed"][..., :T])
    assert (zoo.rollout_inputs[..., 0] == 4).all()
    assert zoo.manifest["build"]["restored_bos_rollouts"] == RUNS * len(STEPS) * (N // 2)
    np.testing.assert_array_equal(zoo.rollout_outputs, src["logits.npy"])
    md = zoo.metadata
    np.testing.assert_array_equal(md["model"], np.repeat(np.arange(RUNS), S))
    np.testing.assert_array_equal(md["step"], np.tile(STEPS, RUNS))
    # published split over the zoo's 3 languages: int(3 * 0.7) = 2 train, int(3 * 0.15) = 0
    # validation, 1 OOD: the highest letter-count entropy (the OOD language of the 216 split)
    np.testing.assert_array_equal(md["split"], np.repeat([0, 0, 2], S))
    np.testing.assert_array_equal(np.stack([md["mb"], md["mc"], md["md"]], 1),
                                  np.repeat(np.array(src["languages"]), S, axis=0))
    np.testing.assert_allclose(md["performance"], src["num_step_correct.npy"][:, 2] / 1000)
    assert np.isnan(md["performance_strict"]).all()  # the published files do not hold it
    arch = zoo.architecture()
    assert (arch.sizes.hidden_size, arch.sizes.num_layers) == (8, 2)
    family = zoo.task_family()
    assert family.sequence_length == T and family.name == "formal_languages"
    assert Zoo.open(tmp_path / "zoo", expect_arch="lstm").fingerprint == zoo.fingerprint
    # the stored rollouts are what the stored weights compute
    params = arch.layout.unflatten(torch.from_numpy(np.array(zoo.weights)))
    xs = family.network_inputs(torch.from_numpy(np.array(zoo.rollout_inputs)))
    again = torch.log_softmax(arch.forward(params, xs)[0], -1)
    torch.testing.assert_close(again, torch.from_numpy(np.array(zoo.rollout_outputs)).float(),
                               atol=1e-2, rtol=1e-2)


def test_tampered_logits_refused_naming_the_rows(tmp_path):
    src = make_formal_languages(tmp_path / "published")
    logits = src["logits.npy"].copy()
    logits[4, 2, 3] += np.float16(0.5)  # row 4: run 1, step 10
    logits[7] = logits[6]  # row 7: another snapshot's outputs
    np.save(tmp_path / "published" / "logits.npy", logits)
    with pytest.raises(WspaceError, match=r"logits\.npy does not match .* rows 4 \(run 1 step 10\), "
                                          r"7 \(run 2 step 10\).*re-download"):
        import_paper(tmp_path / "published", tmp_path / "zoo", "formal_languages")
    assert not (tmp_path / "zoo").exists()  # refused before anything was written
    # the cheaper check still catches a damaged row in its first rollouts
    with pytest.raises(WspaceError, match="rows 4 "):
        import_paper(tmp_path / "published", tmp_path / "zoo", "formal_languages", check="sample")


def test_broken_published_files_refused(tmp_path):
    src = make_formal_languages(tmp_path / "published")
    weights = src["parameters.npy"].copy()
    weights[5, 3] = np.nan
    weights[8, 0] = np.inf
    np.save(tmp_path / "published" / "parameters.npy", weights)
    with pytest.raises(WspaceError, match=r"NaN or infinite weights at rows 5 \(run 1 step 100\), 8 \(run 2"):
        import_paper(tmp_path / "published", tmp_path / "zoo", "formal_languages")
    np.save(tmp_path / "published" / "parameters.npy", src["parameters.npy"][:-1])
    with pytest.raises(WspaceError, match="disagree on the number of rows.*parameters.npy: 8"):
        import_paper(tmp_path / "published", tmp_path / "zoo", "formal_languages")
    np.save(tmp_path / "published" / "parameters.npy", src["parameters.npy"][:, :-1])
    with pytest.raises(WspaceError, match="no lstm with 6 inputs and 6 outputs has 1141 parameters"):
        import_paper(tmp_path / "published", tmp_path / "zoo", "formal_languages")
    np.save(tmp_path / "published" / "parameters.npy", src["parameters.npy"])
    tasks = src["tasks.npy"].copy()
    tasks[1, 1] += 1
    np.save(tmp_path / "published" / "tasks.npy", tasks)
    with pytest.raises(WspaceError, match="task \\(mb\\) changes within run 0 at row 1"):
        import_paper(tmp_path / "published", tmp_path / "zoo", "formal_languages")
    np.save(tmp_path / "published" / "tasks.npy", np.array([[1, 2]] * 9, dtype=object), allow_pickle=True)
    with pytest.raises(WspaceError, match="pickled"):
        import_paper(tmp_path / "published", tmp_path / "zoo", "formal_languages")
    with pytest.raises(WspaceError, match="published zoos for formal_languages, tiled_mnist"):
        import_paper(tmp_path / "published", tmp_path / "zoo", "copy_task")


def test_infer_sizes():
    lstm = plugins.architectures().get("lstm")
    assert infer_sizes(lstm, 13766, 6, 6) == Sizes(6, 32, 6, 2)  # the paper's formal-languages LSTM
    assert infer_sizes(lstm, 1142, 6, 6, hidden_size=8) == Sizes(6, 8, 6, 2)
    with pytest.raises(WspaceError, match="no lstm .* at hidden size 9"):
        infer_sizes(lstm, 1142, 6, 6, hidden_size=9)


def test_import_resumes_and_cli(tmp_path):
    make_formal_languages(tmp_path / "published")
    runner = CliRunner()
    args = ["zoo", "import-paper", str(tmp_path / "published"), str(tmp_path / "zoo"),
            "--task", "formal_languages", "--chunk-size", "1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "imported 3 networks (9 rows)" in result.output
    result = runner.invoke(cli, args)
    assert result.exit_code == 1 and "already holds a complete zoo" in result.output
    info = json.loads(runner.invoke(cli, ["zoo", "info", str(tmp_path / "zoo"), "--json"]).output)
    assert info["splits"] == {"train": 2, "validation": 0, "ood": 1}
    assert info["source"]["restored_bos_rollouts"] == 9 * (N // 2)
    text = runner.invoke(cli, ["zoo", "info", str(tmp_path / "zoo")]).output
    assert f"restored BOS  {9 * (N // 2)} rollouts" in text
    assert info["sizes"]["params_per_network"] == 1142


def test_tiled_mnist_import(tmp_path):
    src = make_tiled_mnist(tmp_path / "published")
    zoo = import_paper(tmp_path / "published", tmp_path / "zoo", "tiled_mnist")
    S = len(STEPS)
    np.testing.assert_array_equal(zoo.weights, src["parameters.npy"])
    np.testing.assert_array_equal(zoo.rollout_inputs, src["sequences.npy"])
    want = torch.log_softmax(torch.from_numpy(src["logits.npy"]).float(), -1).half().numpy()
    np.testing.assert_array_equal(zoo.rollout_outputs, want)
    md, acc = zoo.metadata, src["accuracy_losses.npy"]
    np.testing.assert_array_equal(md["angle"], src["tasks.npy"][:, 0])
    np.testing.assert_array_equal(md["weight_decay"], acc[:, 3])
    np.testing.assert_allclose(md["performance"], acc[:, 0])
    np.testing.assert_allclose(md["gap"], acc[:, 2] - acc[:, 1])
    # published split over the 3 angles: 2 train, 0 validation, 1 OOD (the largest angle)
    np.testing.assert_array_equal(md["split"], np.repeat([0, 0, 2], S))
    assert zoo.architecture().sizes == Sizes(16, 4, 10, 1)
    assert zoo.manifest["build"]["restored_bos_rollouts"] == 0


def test_task_family_is_read_from_the_files(tmp_path):
    make_formal_languages(tmp_path / "fl")
    make_tiled_mnist(tmp_path / "mnist")
    runner = CliRunner()
    for name, task in (("fl", "formal_languages"), ("mnist", "tiled_mnist")):
        result = runner.invoke(cli, ["zoo", "import-paper", str(tmp_path / name), str(tmp_path / f"{name}_zoo")])
        assert result.exit_code == 0, result.output
        assert Zoo.open(tmp_path / f"{name}_zoo").manifest["task"]["name"] == task
    (tmp_path / "neither").mkdir()
    np.save(tmp_path / "neither" / "parameters.npy", np.zeros((1, 2), np.float32))
    result = runner.invoke(cli, ["zoo", "import-paper", str(tmp_path / "neither"), str(tmp_path / "z")])
    assert result.exit_code == 1 and "num_step_correct.npy" in result.output and "--task" in result.output


def test_a_first_token_other_than_bos_or_the_published_overwrite_is_refused(tmp_path):
    src = make_formal_languages(tmp_path / "published")
    sequences = src["sequences.npy"].copy()
    sequences[4, 0, 0] = 5  # EOS over BOS in a rollout that holds another EOS: not the published overwrite
    np.save(tmp_path / "published" / "sequences.npy", sequences)
    with pytest.raises(WspaceError, match=r"rows \[4\] start with a token .* damaged"):
        import_paper(tmp_path / "published", tmp_path / "zoo")
    sequences[4, 0, 0] = 2  # a letter
    np.save(tmp_path / "published" / "sequences.npy", sequences)
    with pytest.raises(WspaceError, match=r"rows \[4\]"):
        import_paper(tmp_path / "published", tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


# ---- published files that would crash the import or give a zoo of wrong values (issue #11) -------

def _import_cli(tmp_path: Path, task: str = "formal_languages"):
    return CliRunner().invoke(cli, ["zoo", "import-paper", str(tmp_path / "published"), str(tmp_path / "zoo"),
                                    "--task", task])


def _refused(result, *patterns: str) -> str:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no IndexError, no RuntimeError
    message = result.output[result.output.index("Error: "):].strip()
    for pattern in patterns:
        assert pattern in message, message
    return message


@pytest.mark.parametrize("token", [99, -1])
def test_out_of_range_tokens_refused_on_import(tmp_path, token):
    src = make_formal_languages(tmp_path / "published")
    sequences = src["sequences.npy"].copy()
    sequences[4, 1, 3] = token
    np.save(tmp_path / "published" / "sequences.npy", sequences)
    _refused(_import_cli(tmp_path), "sequences.npy holds token ids outside 0..5 (the formal_languages family's "
                                    "6 symbols) at rows 4 (run 1 step 10)", "re-download")
    with pytest.raises(WspaceError, match="token ids outside"):  # whatever --check says
        import_paper(tmp_path / "published", tmp_path / "zoo", "formal_languages", check="none")
    assert not (tmp_path / "zoo").exists()


def test_published_zoo_without_rows_refused(tmp_path):
    src = make_formal_languages(tmp_path / "published")
    for name, array in src.items():
        if name.endswith(".npy"):
            np.save(tmp_path / "published" / name, array[:0])
    _refused(_import_cli(tmp_path), "the published files hold no rows (0 networks)", "re-download")
    assert not (tmp_path / "zoo").exists()


@pytest.mark.parametrize("correct, shown", [(-5, "-0.005"), (1200, "1.2")])
def test_performance_out_of_range_refused_on_import(tmp_path, correct, shown):
    src = make_formal_languages(tmp_path / "published")
    counts = src["num_step_correct.npy"].copy()
    counts[2, 2] = correct
    np.save(tmp_path / "published" / "num_step_correct.npy", counts)
    _refused(_import_cli(tmp_path), f"the published metric 'performance' is {shown} (it lies in [0, 1]) at rows "
                                    f"2 (run 0 step 100)")
    assert not (tmp_path / "zoo").exists()


def test_negative_accuracy_or_loss_refused_on_tiled_mnist_import(tmp_path):
    src = make_tiled_mnist(tmp_path / "published")
    for column, value, name in ((0, -0.1, "performance"), (1, -2.0, "train_loss"), (3, -0.01, "weight_decay")):
        acc = src["accuracy_losses.npy"].copy()
        acc[5, column] = value
        np.save(tmp_path / "published" / "accuracy_losses.npy", acc)
        _refused(_import_cli(tmp_path, "tiled_mnist"), f"'{name}' is {value:g}", "at rows 5 (run 1 step 100)")
    assert not (tmp_path / "zoo").exists()


def test_negative_size_in_a_header_is_named_not_counted(tmp_path):
    make_formal_languages(tmp_path / "published")
    file = tmp_path / "published" / "parameters.npy"
    with open(file, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (-9, 1142)})
    message = _refused(_import_cli(tmp_path), "parameters.npy has a negative size in its header shape (-9, 1142)")
    assert "needs -" not in message


def test_a_plugin_family_reads_its_own_published_zoo(tmp_path, register_plugin, plugin_namespace):
    """The importer names no family: a registered family that declares its marker files and a
    reader is told from its files and imported, like the bundled ones."""
    import attrs

    from wspace_core.hookspecs import hookimpl

    tiled_mnist = plugins.task_families().get("tiled_mnist")

    class RenamedMnist(tiled_mnist):  # the tiled-MNIST layout with num_step.npy named run_steps.npy
        name = "renamed_mnist"
        published_markers = ("run_steps.npy",)

        @classmethod
        def read_published(cls, load):
            def renamed(names):
                arrays = load(["run_steps.npy" if n == "num_step.npy" else n for n in names])
                return {("num_step.npy" if n == "run_steps.npy" else n): a for n, a in arrays.items()}
            data = super().read_published(renamed)
            return attrs.evolve(data, files=tuple("run_steps.npy" if f == "num_step.npy" else f
                                                  for f in data.files))

    @hookimpl
    def register_task_families(register):
        register("renamed_mnist", RenamedMnist)

    plugin_namespace.register_task_families = register_task_families
    register_plugin(plugin_namespace, "renamed_mnist_plugin")
    src = make_tiled_mnist(tmp_path / "published")
    (tmp_path / "published" / "num_step.npy").rename(tmp_path / "published" / "run_steps.npy")
    zoo = import_paper(tmp_path / "published", tmp_path / "zoo")
    assert zoo.manifest["task"]["name"] == "renamed_mnist"
    assert "run_steps.npy" in zoo.manifest["build"]["source_sha256"]
    np.testing.assert_array_equal(zoo.weights, src["parameters.npy"])
    np.testing.assert_array_equal(zoo.metadata["angle"], src["tasks.npy"][:, 0])
    # a folder that holds no family's markers: the error lists every registered family's
    (tmp_path / "neither").mkdir()
    with pytest.raises(WspaceError, match=r"renamed_mnist: run_steps\.npy.*give --task formal_languages or "
                                          r"renamed_mnist or tiled_mnist"):
        import_paper(tmp_path / "neither", tmp_path / "z")


def test_cli_task_names_a_registered_family_that_reads_published_files(tmp_path):
    """--task is checked against the registry (a plugin family that reads published files is
    accepted the same way), with the families named and nothing written."""
    (tmp_path / "published").mkdir()
    result = CliRunner().invoke(cli, ["zoo", "import-paper", str(tmp_path / "published"), str(tmp_path / "zoo"),
                                      "--task", "nope"])
    assert result.exit_code != 0
    assert "the paper published zoos for formal_languages, tiled_mnist; got task 'nope'" in result.output
    assert not (tmp_path / "zoo").exists()
