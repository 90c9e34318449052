"""Shared fixtures: the tiny model stack is built once per session (random weights, same classes)."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the network


@pytest.fixture(scope="session")
def tiny_stack():
    from tpos_live.diffusion.loading import build_tiny_stack

    torch.manual_seed(0)
    return build_tiny_stack(seed=0)
