"""The published implementation's emulation-pretraining step, built by calling its own code.

What ``training_script.main`` sets up (its argument defaults, ``training_configs.encoder_configs``
for the encoder, ``conditional_args``, ``RNNFunctionalizable`` under ``torch.func.functional_call``
and ``torch.vmap``, ``define_encoder``, ``EmulatorLSTM``, ``CombinedEncoderEmulator``, AdamW over
encoder + emulator) and what its training loop does per step (the next batch of its
``DataLoader`` over ``ParametersFormalLanguageDataset``, ``training_iteration``, mean, backward,
its two ``clip_grad_norm_`` calls, ``optimizer.step``, ``loss.item()``), on a wspace zoo written
out in the published dataset format (``parameters.npy``, ``sequences.npy``, ``logits.npy``,
``tasks.npy``, ``num_step_correct.npy``). Nothing of it is copied here; see ``reference.py``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import reference

#: wspace encoder -> the published ``training_configs.encoder_configs`` entry of the paper's runs
PUBLISHED_CONFIGS = {"layerwise_statistics": "layerwise_statistics", "flattened_weights": "flat",
                     "parameter_transformer": "parameter_transformer", "dwsnet": "nf",
                     "noninteractive_probing": "noninteractive_1", "interactive_probing": "interactive_1"}
#: wspace objective -> the published ``--criterion``
PUBLISHED_CRITERIA = {"reverse_kl": "kl_reverse", "total_variation": "total_variation", "cross_entropy": "ce"}
#: the published dataset name for formal-language zoos of 2 x 32 LSTMs (sets its token count and length)
PUBLISHED_DATASET = "formal_languages_tokens_4_length_42_2x32"


def write_published_dataset(zoo, out: Path, min_rows: int) -> Path:
    """``zoo``'s rows in the published dataset format, tiled to at least ``min_rows`` rows (the
    published loader splits by task: its training split must hold a whole batch).

    Its ``sequences`` are BOS + 41 sampled tokens; a wspace zoo stores the 41 tokens fed to the
    network, so the last sampled token is taken as the most likely one of the last output (the
    published step reads it only for its cross-entropy criterion)."""
    meta = zoo.metadata
    for column in ("mb", "mc", "md"):
        if column not in meta:
            raise reference.ReferenceError(f"the published step needs a formal-languages zoo (task columns mb, mc, "
                                           f"md); {zoo.path} has columns {', '.join(meta)}")
    inputs = np.asarray(zoo.rollout_inputs)  # (R, N, T) int16
    outputs = np.asarray(zoo.rollout_outputs)  # (R, N, T, O) float16 log-probabilities
    last = outputs[:, :, -1].astype(np.float32).argmax(-1)[..., None]  # (R, N, 1)
    arrays = {
        "parameters": np.asarray(zoo.weights, dtype=np.float32),  # (R, P), torch.nn.LSTM + nn.Linear order
        "sequences": np.concatenate([inputs, last.astype(inputs.dtype)], axis=-1).astype(np.int16),
        "logits": outputs.astype(np.float16),
        "tasks": np.stack([np.zeros_like(meta["mb"]), meta["mb"], meta["mc"], meta["md"]], 1).astype(np.int64),
        "num_step_correct": np.stack([meta["model"], meta["step"],
                                      np.round(1000 * meta.get("performance", np.zeros_like(meta["mb"])))], 1),
    }
    repeat = max(1, math.ceil(min_rows / len(arrays["parameters"])))
    out.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        np.save(out / f"{name}.npy", np.concatenate([array] * repeat))
    return out


def published_args(ts, encoder: str, criterion: str, sequences_per_network: int, device: torch.device):
    """The published script's arguments: its defaults, the encoder's config entry on top (as its
    ``__main__`` applies it), then ``conditional_args``."""
    argv = sys.argv
    try:
        sys.argv = ["training_script.py", "--dataset", PUBLISHED_DATASET]
        args = ts.parse_args()
    finally:
        sys.argv = argv
    for key, value in ts.encoder_configs[PUBLISHED_CONFIGS[encoder]].items():
        setattr(args, key, value)
    args.criterion = criterion
    args.sequence_batch_size = sequences_per_network
    args.cuda = int(device.type == "cuda")
    return ts.conditional_args(args)


def _check_counterparts(encoder: str, objective: str) -> None:
    if encoder not in PUBLISHED_CONFIGS:
        raise reference.ReferenceError(f"the published code has no counterpart of encoder {encoder!r}; "
                                       f"it has: {', '.join(PUBLISHED_CONFIGS)}")
    if objective not in PUBLISHED_CRITERIA:
        raise reference.ReferenceError(f"the published code has no counterpart of objective {objective!r}")


def _training_split(datasets, dataset_dir: Path, args, batch_size: int):
    """Its ``ParametersFormalLanguageDataset`` training split, as its script makes it."""
    train = datasets.ParametersFormalLanguageDataset(
        str(dataset_dir), sequences_per_rnn=args.sequence_batch_size, eval_ratio=0.15, ood_ratio=0.15,
        mode="train", task_criterion=lambda x: datasets.task_entropy_criterion(x))
    if len(train) < batch_size:
        raise reference.ReferenceError(f"the published training split holds {len(train)} rows, fewer than a batch "
                                       f"of {batch_size}; write more rows (min_rows)")
    return train


def _functional_rnn(rnn_models, utilities, args):
    """(model, parameter shapes in its order, vmapped call with hidden state): its
    ``RNNFunctionalizable`` under ``torch.func.functional_call`` and ``torch.vmap``."""
    sizes = dict(hidden_size=args.rnn_hidden_size, input_size=args.probing_input_dim,
                 output_size=args.probing_output_dim, num_layers=args.rnn_num_layers, input_batch=True)
    reference_model = rnn_models.RNNFast(**sizes)
    model = rnn_models.RNNFunctionalizable(**sizes)
    shapes = {k: p.shape for k, p in model.named_parameters()}
    names = utilities.convert_parameter_names([k for k, _ in reference_model.named_parameters()])
    shapes = [(k, shapes[k]) for k in names]

    def with_hidden(parameters, x, hidden):
        return torch.func.functional_call(model, parameters, args=(x, hidden))

    return model, shapes, torch.vmap(with_hidden, in_dims=(0, 0, (0, 0)), out_dims=(0, (0, 0)))


def _encoder_and_emulator(ts, args, model, shapes, vfunc, device: torch.device):
    """Its ``define_encoder`` and ``EmulatorLSTM`` (forget gates opened where its config says)."""
    obs_dim, out_dim = shapes[0][1][-1], shapes[-1][1][0]
    encoder_module = ts.define_encoder(args, probing_input_dim=obs_dim, probing_output_dim=out_dim,
                                       v_actor_func_with_hidden=vfunc, model=model, device=device,
                                       vfunc_params_shapes=shapes).to(device)
    emulator = ts.EmulatorLSTM(rnn_embedding_size=args.rnn_embedding_size, obs_dim=obs_dim,
                               probing_output_dim=out_dim, hidden_size=args.emulator_hidden_size,
                               num_layers=args.emulator_num_layers,
                               only_condition_bos=args.emulator_only_condition_bos)
    if args.emulator_open_gate_init:
        emulator.open_forget_gates()
    return encoder_module, emulator.to(device)


def _loop_step(ts, args, train, state, encoder_module, emulator, optimizer) -> Callable[[], None]:
    """The body of its training loop (logging and evaluation aside)."""
    batches = iter(())

    def step() -> None:
        nonlocal batches
        ts.args = args  # its CombinedEncoderEmulator reads the module-level ``args`` (permutation augmentation)
        batch = next(batches, None)
        if batch is None:  # a new epoch, as its ``while True`` loop makes a new DataLoader
            # drop_last: every timed step sees a whole batch (its loader would end an epoch short)
            batches = iter(torch.utils.data.DataLoader(train, batch_size=args.rnn_batch_size, shuffle=True,
                                                       drop_last=True))
            batch = next(batches)
        losses = ts.training_iteration(batch, state=state)
        loss = losses.mean()
        optimizer.zero_grad()
        loss.backward()
        if args.gradient_clipping > 0.:
            torch.nn.utils.clip_grad_norm_(emulator.parameters(), args.gradient_clipping)
            torch.nn.utils.clip_grad_norm_(encoder_module.parameters(), args.gradient_clipping)
        optimizer.step()
        loss.item()  # its meter.update({"training loss": loss.item()})

    return step


def make_published_step(encoder: str, dataset_dir: Path, objective: str, batch_size: int,
                        sequences_per_network: int, device: torch.device, seed: int,
                        emulator: tuple[int, int] = (256, 2)) -> tuple[Callable[[], None], int, dict]:
    """(step, encoder parameter count, the published arguments used) for one encoder;
    ``emulator``: (hidden size, layers), the published default is (256, 2)."""
    _check_counterparts(encoder, objective)
    ts = reference.module("training_script")
    rnn_models = reference.module("modules_rnn_models")
    datasets = reference.module("dataset_classes")
    utilities = reference.module("utilities")
    args = published_args(ts, encoder, PUBLISHED_CRITERIA[objective], sequences_per_network, device)
    args.rnn_batch_size = batch_size
    args.emulator_hidden_size, args.emulator_num_layers = emulator
    ts.args = args  # CombinedEncoderEmulator reads the script's module-level ``args``
    torch.manual_seed(seed)
    np.random.seed(seed)
    train = _training_split(datasets, dataset_dir, args, batch_size)
    model, shapes, vfunc = _functional_rnn(rnn_models, utilities, args)
    encoder_module, emulator_module = _encoder_and_emulator(ts, args, model, shapes, vfunc, device)
    optimizer = torch.optim.AdamW(list(encoder_module.parameters()) + list(emulator_module.parameters()),
                                  lr=args.learning_rate, weight_decay=args.weight_decay)
    state = utilities.ModelState(rnn_weight_encoder=encoder_module, emulator=emulator_module, combined_model=None,
                                 device=device, rnn_params_shapes=shapes, vfunc=vfunc, rnn_model=model, args=args)
    state.combined_model = ts.CombinedEncoderEmulator(encoder_module, emulator_module, args=args, state=state)
    used = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str))}
    step = _loop_step(ts, args, train, state, encoder_module, emulator_module, optimizer)
    return step, sum(p.numel() for p in encoder_module.parameters()), used
