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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch ops on one thread for a module that runs the live engine on the tiny stack.

    The tiny stack's ops are small (8x8 latents), so each costs mostly its overhead, and on a 2-core
    machine two-thread ops in one stage wait for a core whenever another stage is busy: the engine in
    these tests made 3.0 frames/s of its 12 with two threads per op and 6.3 with one (CPU, 6 s each),
    and frame gaps near 0.3 s made tests that wait 0.3 s for a frame fail by chance. The stages' threads
    take the count set here when they first run an op.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
