"""Conventional multi-time-point dosimetry: register, fit, integrate, convolve, report."""
