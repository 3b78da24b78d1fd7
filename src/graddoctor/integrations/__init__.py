"""Integrations with where training runs: torch.distributed, Lightning, Hugging Face, TensorBoard.

Each submodule imports its framework lazily; `import graddoctor` never imports them.
"""
