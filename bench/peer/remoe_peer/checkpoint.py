"""A remoe checkpoint (train/checkpoint.h) into the peer: step_<n>/ with model.safetensors
(remoe's parameter names, which the peer's modules carry), optimizer.safetensors ("<param>.m",
"<param>.v": AdamW's moments), state.json (step, λ, the data sampler's state, the resolved
config) and COMPLETE. A run directory means its newest complete checkpoint."""
import json
import os
import re

import torch
from safetensors.torch import load_file

from . import config as config_mod


def resolve(path):
    if os.path.isfile(os.path.join(path, "COMPLETE")):
        return path
    ckdir = os.path.join(path, "checkpoints")
    steps = []
    if os.path.isdir(ckdir):
        for name in os.listdir(ckdir):
            m = re.fullmatch(r"step_(\d{8})", name)
            if m and os.path.isfile(os.path.join(ckdir, name, "COMPLETE")):
                steps.append((int(m.group(1)), name))
    if not steps:
        raise FileNotFoundError(f"{path} is neither a checkpoint (no COMPLETE file) nor a run "
                                "directory with a complete one under checkpoints/")
    return os.path.join(ckdir, max(steps)[1])


class Checkpoint:
    def __init__(self, path):
        self.dir = resolve(path)
        state_path = os.path.join(self.dir, "state.json")
        with open(state_path, encoding="utf-8") as f:
            self.state = json.load(f)
        if not isinstance(self.state.get("config"), str):
            raise ValueError(f"{state_path} has no \"config\" string (the run's resolved config)")
        self.config = config_mod.parse(self.state["config"], f"{state_path} \"config\"")
        self.step = int(self.state["step"])
        self.lam = float(self.state.get("lambda", 0.0))
        self.data_rng = self.state.get("data_rng")

    def load_model(self, model):
        """Copies the weights into `model` (every name present with its shape, nothing extra)."""
        tensors = load_file(os.path.join(self.dir, "model.safetensors"))
        own = dict(model.named_parameters())
        missing = sorted(set(own) - set(tensors))
        extra = sorted(set(tensors) - set(own))
        if missing or extra:
            raise ValueError(f"{self.dir}/model.safetensors does not fit the peer's model: "
                             f"missing {missing}, unknown {extra}")
        with torch.no_grad():
            for name, p in own.items():
                t = tensors[name]
                if tuple(t.shape) != tuple(p.shape):
                    raise ValueError(f"{self.dir}/model.safetensors: {name} is {tuple(t.shape)}, "
                                     f"the peer's is {tuple(p.shape)}")
                p.copy_(t.to(p.dtype))

    def moments(self):
        """{param name: (m, v)} from optimizer.safetensors."""
        tensors = load_file(os.path.join(self.dir, "optimizer.safetensors"))
        names = {k[:-2] for k in tensors if k.endswith((".m", ".v"))}
        return {n: (tensors[n + ".m"], tensors[n + ".v"]) for n in names}
