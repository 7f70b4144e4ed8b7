"""Cross-cutting foundations every stage uses: atomic files and hashes (io), integrity checks and
the verifier (integrity, verify; rule verify), code digests that make reruns follow code (codehash)
and the third-party versions that make them follow upgrades (versions), the pinned CPU kernels that make bytes the same on every x86-64 machine (kernels), job logs (logs),
device choice (devices) and the statistics helpers (stats).
"""
