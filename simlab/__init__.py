"""simlab: a research workbench for Siamese Image Modeling (SiM, Tao et al. 2022).

``import simlab`` stays light: no Jupyter, papermill, ipywidgets or matplotlib
(the GPU servers it runs on may have none of them).
"""

__version__ = "0.1.0"

__all__ = ["load_encoder", "__version__"]


def __getattr__(name):
    if name == "load_encoder":  # imported on first use: it pulls in timm
        from .checkpoint import load_encoder
        return load_encoder
    raise AttributeError(f"module 'simlab' has no attribute {name!r}")
