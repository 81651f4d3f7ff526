"""Data: dataset readers -> WebDataset shards (+ manifest, index) -> per-rank streaming batches.

Names are imported lazily (PEP 562) so that `python -m adpm_dist.data.prepare` neither imports
torch nor triggers runpy's "found in sys.modules" warning.

The library function behind the CLI is `adpm_dist.data.prepare.prepare`, exported here as
`prepare_dataset`: the name `adpm_dist.data.prepare` is the submodule (Python sets a package
attribute to each submodule it imports, so a function of the same name would be overwritten).
"""

import importlib

_EXPORTS = {
    "make_digits_lt": "digits_lt",
    "IndexRow": "manifest",
    "Manifest": "manifest",
    "load_manifest": "manifest",
    "verify_shards": "manifest",
    "prepare_dataset": "prepare",
    "Record": "records",
    "Source": "records",
    "READERS": "sources",
    "read_imagefolder": "sources",
    "eval_batches": "stream",
    "train_batches": "stream",
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "build_transform": "transforms",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    return module.prepare if name == "prepare_dataset" else getattr(module, name)


def __dir__():
    return __all__
