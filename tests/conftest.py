import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch

# Tiny models are overhead-bound: one thread is as fast, deterministic, and does not fight
# other processes for the cores.
torch.set_num_threads(1)
