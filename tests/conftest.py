import os

import pytest
import torch

# Triton picks compile-or-interpret when a kernel is decorated, i.e. when resvmamba.triton_scan is first
# imported (the model chapters import it too). Without a GPU, Triton kernels run in its interpreter: set the
# switch before any test module is collected.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow (minutes each)")


def pytest_collection_modifyitems(config, items):
    "Tests marked `slow` run only with --runslow, tests marked `cuda` only where a GPU is present."
    run_slow, has_cuda = config.getoption("--runslow"), torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow"))
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU"))


@pytest.fixture(scope="session")
def mini_food(tmp_path_factory):
    """`mini_food(n_classes, per_class)`: the root of a generated mini CNFOOD of 32-px dishes.

    Each size is generated once per session and shared by every test that asks for it, so tests only read it;
    a test that damages a dataset copies it first. Each test file asks for the size its counts are written
    for."""
    from resvmamba.data import make_mini_food  # imported late: the Triton switch above must be set first

    made = {}

    def make(n_classes, per_class):
        if (n_classes, per_class) not in made:
            dest = tmp_path_factory.mktemp(f"mini_food_{n_classes}x{per_class}") / "mini"
            made[n_classes, per_class] = make_mini_food(
                dest, n_classes=n_classes, per_class=per_class, size=32
            )
        return made[n_classes, per_class]

    return make
