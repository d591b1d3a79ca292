import os, pytest, torch

# Triton picks compile-or-interpret when a kernel is decorated, i.e. when resvmamba.triton_scan is first imported
# (the model chapters import it too). Without a GPU, Triton kernels run in its interpreter: set the switch before
# any test module is collected.
if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")

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
