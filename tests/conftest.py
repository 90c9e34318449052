"""Shared fixtures: the tiny model stack is built once per session (random weights, same classes)."""

import os
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the network
# A user's recorded default encoder must not change what the tests see (nor one test's another's).
os.environ["TPOS_LIVE_CONFIG"] = tempfile.mkdtemp(prefix="tpos-live-test-config-")


@pytest.fixture(autouse=True)
def own_settings_folder(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TPOS_LIVE_CONFIG", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(scope="session")
def tiny_stack():
    from tpos_live.diffusion.random_stacks import build_tiny_stack

    torch.manual_seed(0)
    return build_tiny_stack(seed=0)
