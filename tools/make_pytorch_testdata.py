"""Writes the tiny real torch.save files used by the src/weights/pytorch/tests.rs tests.

Run from the crate root: python3 tools/make_pytorch_testdata.py
"""
import collections
import os
import pickle
import zipfile

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "pytorch")
os.makedirs(OUT, exist_ok=True)


def path(name):
    return os.path.join(OUT, name)


def mixed():
    sd = collections.OrderedDict()
    sd["w_f32"] = torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5 - 1.0
    sd["w_f16"] = torch.tensor([1.5, -2.0, 0.25], dtype=torch.float16)
    sd["w_bf16"] = torch.tensor([[1.0, -1.5], [3.0, 0.125]], dtype=torch.bfloat16)
    sd["scalar"] = torch.tensor(3.25)
    base = torch.arange(10, dtype=torch.float32)
    sd["view_a"] = base[2:6]  # shares storage with view_b, offset 2
    sd["view_b"] = base[5:9].reshape(2, 2)  # offset 5
    sd["empty"] = torch.zeros(0, 3)
    return sd


torch.save(mixed(), path("mixed.bin"))
# Protocol 4 pickles use FRAME, SHORT_BINUNICODE, MEMOIZE and STACK_GLOBAL.
torch.save(mixed(), path("mixed_proto4.bin"), pickle_protocol=4)

# A module state dict carries a `_metadata` attribute, written with BUILD.
m = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.LayerNorm(3))
with torch.no_grad():
    m[0].weight.copy_(torch.tensor([[1, 2], [3, 4], [5, 6]]) * 0.25)
    m[0].bias.copy_(torch.tensor([-1.0, 0.0, 1.0]))
    m[1].weight.copy_(torch.tensor([2.0, 4.0, 8.0]))
    m[1].bias.copy_(torch.tensor([0.5, 0.75, 1.0]))
torch.save(m.half().state_dict(), path("module_f16.bin"))

# Non-contiguous: a transposed view must be refused.
torch.save({"t": torch.arange(6, dtype=torch.float32).reshape(2, 3).t()}, path("transposed.bin"))

# Same archive as mixed.bin, but every entry deflated.
with zipfile.ZipFile(path("mixed.bin")) as src, zipfile.ZipFile(path("deflated.bin"), "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        dst.writestr(info.filename, src.read(info.filename))

# Pre-1.6 (non-zip) format.
torch.save({"x": torch.zeros(1)}, path("legacy.bin"), _use_new_zipfile_serialization=False)


# A real torch.save archive whose data.pkl is swapped for a pickle that would run a shell
# command if unpickled by Python: the reader must refuse it without executing anything.
class RunsShell:
    def __reduce__(self):
        return (os.system, ("echo this-must-never-run",))


with zipfile.ZipFile(path("mixed.bin")) as src, zipfile.ZipFile(path("evil.bin"), "w", zipfile.ZIP_STORED) as dst:
    for info in src.infolist():
        data = src.read(info.filename)
        if info.filename.endswith("/data.pkl"):
            data = pickle.dumps(collections.OrderedDict(w=RunsShell()), protocol=2)
        dst.writestr(info.filename, data)
