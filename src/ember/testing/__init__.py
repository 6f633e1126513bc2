"""Tools for testing and benchmarking Ember on one machine (not used by emberd).

`netlab`: a fake internet in a network namespace (DNS, HTTP, HTTPS, a byte
sink) that sessions can reach, so tests and benchmarks never leave the host.
"""
