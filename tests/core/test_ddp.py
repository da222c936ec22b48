"""DDP searches the autograd graph for unused parameters only where some exist (declared by a
contributed module, or detected in an ssseg model); a real 2-process run with an unused parameter
is in tests/test_distributed.py."""

from __future__ import annotations

import torch

from ssseg.engine.ddp import needs_unused_search, unused_parameters, wrap
from ssseg.engine.run import build_run


def test_a_model_that_uses_every_parameter_needs_no_search(tiny):
    student = build_run(tiny({"plugins": {"fixmatch": {}}})).run.student
    assert unused_parameters(student) == [] and not needs_unused_search(student)


def test_an_unused_parameter_of_a_model_is_detected_without_changing_it(tiny):
    student = build_run(tiny({"plugins": {"fixmatch": {}}})).run.student
    student.net.spare = torch.nn.Linear(2, 2)  # never called by the forward
    before = {k: v.clone() for k, v in student.state_dict().items()}
    rng = torch.get_rng_state()
    assert unused_parameters(student) == ["net.spare.weight", "net.spare.bias"]
    assert needs_unused_search(student) and student.training
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())
    assert all(p.grad is None for p in student.parameters()) and torch.equal(rng, torch.get_rng_state())


def test_a_module_s_declaration_decides_and_one_process_is_never_wrapped():
    head = torch.nn.Conv2d(3, 1, 1)
    assert not needs_unused_search(head)
    head.ddp_find_unused_parameters = True
    assert needs_unused_search(head)
    assert wrap(head, torch.device("cpu"), 1) is head
