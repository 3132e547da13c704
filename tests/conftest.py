import os
import random
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture
def offline_hub_python():
    """Run Python ``code`` (after ``import torch, timm, zoo``) in a subprocess as a user's script does, with
    the Hub client offline (``HF_HUB_OFFLINE=1``) and its cache at ``hub_cache``; a failure raises."""

    def run(code: str, hub_cache: Path) -> None:
        env = dict(os.environ, HF_HUB_CACHE=str(hub_cache), HF_HUB_OFFLINE="1")
        subprocess.run([sys.executable, "-c", "import torch, timm, zoo\n" + code], env=env, check=True, timeout=300)

    return run
