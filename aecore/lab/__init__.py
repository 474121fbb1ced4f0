"""What the app's pages compute, without streamlit: each page calls one module here and draws.

Everything returns plain tensors, numpy arrays, dicts or plotly figures, so it is tested directly
and reused by the benchmarks.
"""
