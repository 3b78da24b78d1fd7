"""The examples in the theory docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

import graddoctor

MODULES = ["graddoctor.theory.meanfield", "graddoctor.theory.batchnorm", "graddoctor.theory._predict"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), extraglobs={"torch": torch, "graddoctor": graddoctor})
    assert result.attempted > 0 and result.failed == 0
