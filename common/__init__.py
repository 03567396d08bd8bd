"""Code both sides of the federation run: the wire format, update encoding, SecAgg+'s masking
arithmetic and client mod, the task protocol, errors, and model distribution/installation.

client/ and server/ import this package, never each other, so a site installs no ServerApp code.
Unlike privdiff_core it may use Flower; Flower's private internals are reached only through
`privdiff.common.flower_internals`.
"""
