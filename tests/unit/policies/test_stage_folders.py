"""The policies' folder listing is their run order: each policy lives in the folder of its stage.

The chain sorts policies by ``Stage``; the folders are named ``stage<value>_<name>``. A policy
moved to another stage without moving its module (or a new stage without a folder) fails here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import portcullis.policies
from portcullis.pipeline.base import PolicyBase, Stage


def _folder(stage: Stage) -> str:
    return f"stage{stage.value}_{stage.name.lower()}"


def test_there_is_one_folder_per_stage_and_nothing_else() -> None:
    found = {m.name for m in pkgutil.iter_modules(portcullis.policies.__path__) if m.ispkg}
    assert found == {_folder(s) for s in Stage}
    loose = [m.name for m in pkgutil.iter_modules(portcullis.policies.__path__) if not m.ispkg]
    assert loose == []


def test_every_policy_lives_in_the_folder_of_its_stage() -> None:
    policies = []
    for info in pkgutil.walk_packages(portcullis.policies.__path__, "portcullis.policies."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, PolicyBase) and cls is not PolicyBase and cls.__module__ == module.__name__:
                policies.append(cls)
                assert module.__name__.split(".")[2] == _folder(cls.stage), cls
    assert len(policies) >= 7  # ip rules, cors, credentials, scopes, rate limit, body, security headers
