import os

import torch

# Without a GPU the Triton kernels are tested in the interpreter, which is chosen when triton
# is imported: set it before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
