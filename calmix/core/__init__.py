"""Cross-cutting foundations every stage uses: atomic files and hashes (io), integrity checks and
the verifier (integrity, verify; rule verify), code digests that make reruns follow code (codehash)
and the third-party versions that make them follow upgrades (versions), job logs (logs), device choice (devices) and the statistics helpers (stats).
"""
