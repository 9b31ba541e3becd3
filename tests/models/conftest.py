"""Fixtures shared by the tests of models/."""

from __future__ import annotations

import pytest
import torch

from models import cpu_split


@pytest.fixture
def two_threads():
    """Two torch threads in the caller (the test processes run with one), a fresh
    ``models.cpu_split`` policy and no timings, all restored after the test."""
    threads, policy = torch.get_num_threads(), cpu_split._policy
    cpu_split.forget_timings()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)
    cpu_split.set_policy(policy)
    cpu_split.forget_timings()
