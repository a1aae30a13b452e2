"""The filter chain: one filter per concern, run by the sidecar for every request.

See :mod:`meshward.filters.base` for the contract.
"""
