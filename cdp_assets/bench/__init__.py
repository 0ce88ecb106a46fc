"""Benchmarks (`make bench SIZE=...`): the pipeline's stages timed and measured on a sandbox world of a given size.

`harness` builds the world, serves it, and runs each stage of `stages` in a process of its own, so each
stage's peak resident memory is its own; `report` turns the figures into a table, judges the targets and
writes them into docs/benchmarks.md.
"""
