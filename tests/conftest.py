import os

import torch

# Without a GPU the Triton kernels are tested in the interpreter, which is chosen when triton
# is imported: set it before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Each pytest-xdist worker gets one core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
