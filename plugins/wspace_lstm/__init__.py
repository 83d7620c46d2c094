"""The LSTM architecture plugin: ``torch.nn.LSTM(batch_first=True)`` + ``torch.nn.Linear``,
evaluated functionally for many networks at once."""

from wspace_core.hookspecs import hookimpl
from wspace_lstm.lstm import LSTM


@hookimpl
def register_architectures(register):
    register("lstm", LSTM)
