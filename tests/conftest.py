import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

# Without a GPU the Triton kernels are tested in the interpreter, which is chosen when triton
# is imported: set it before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Each pytest-xdist worker gets one core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded_rngs():
    """Every test starts from the same random state, whichever xdist worker runs it and after what."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def zoo_command():
    """Run the ``zoo`` command in a subprocess as a user does: ``run(*args, env=..., preexec_fn=...)``
    returns the completed process (text stdout and stderr, exit status)."""

    def run(*args, **kwargs) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "zoo.cli", *(str(a) for a in args)]
        return subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)

    return run
