"""Engine backends, one module each: ``eager`` (reference), ``onnxruntime`` (CPU-compiled),
``tensorrt`` (NVIDIA GPUs). Choose one through :func:`engines.load_engine`; the modules import
their libraries only when used.
"""

__all__: list[str] = []
