"""Downstream compile check: each exported ONNX through Sophgo's tpu-mlir to a bmodel, run in its CPU
simulator (cmodel), and compared with ONNX Runtime.

env.py builds the tpu-mlir venv (Python 3.10) and repairs what its wheel breaks on newer Linux; run.py is the
supervisor (pick ONNX files from the matrix results, run model_transform / model_deploy, join a ``compile`` section
into each result); envside.py runs inside the tpu-mlir env's Python (read the ONNX, compare the outputs);
causes.py names known failures and their workarounds.
"""
