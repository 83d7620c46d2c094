"""torch.nn reference models the functional architectures are checked against (test helper)."""

import torch


def torch_lstm_reference(sizes, flat_row: torch.Tensor) -> torch.nn.ModuleDict:
    """``torch.nn.LSTM(batch_first=True)`` + ``nn.Linear`` holding one flat weight vector
    (parameters in ``model.parameters()`` order)."""
    lstm = torch.nn.LSTM(sizes.input_size, sizes.hidden_size, sizes.num_layers, batch_first=True)
    linear = torch.nn.Linear(sizes.hidden_size, sizes.output_size)
    module = torch.nn.ModuleDict({"lstm": lstm, "linear": linear})
    torch.nn.utils.vector_to_parameters(flat_row, module.parameters())
    return module
