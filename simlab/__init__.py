"""simlab: a research workbench for Siamese Image Modeling (SiM, Tao et al. 2022).

``import simlab`` stays light: no Jupyter, papermill, ipywidgets or matplotlib
(the GPU servers it runs on may have none of them).
"""

__version__ = "0.1.0"
