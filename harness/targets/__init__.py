"""Downstream targets: the compiler a team ships to (OpenVINO, RKNN, ncnn) compiles each cell's artifact and runs it
on the cell's own input; every output is compared with the reference runtime. Pipeline: toolkits.py (what each
target is, as data) -> env.py (its pinned env) -> envside.py (compile, run, compare, inside that env) -> check.py
(which cells, the verdict, joined into the cell's result). tpu-mlir has its own check (harness/compile/).
"""
