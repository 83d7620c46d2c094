"""Emulation pretraining: the emulator, the training loop, data parallelism under torchrun."""
