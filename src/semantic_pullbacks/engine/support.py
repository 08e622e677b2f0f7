"""Which models the mode can explain: those whose ops run as Python calls it can intercept.

Compiled code (TorchScript modules and functions, ``torch.compile`` in either form) runs its ops where the
torch-function layer never sees them, and ``nn.DataParallel`` runs its replicas in worker threads the
thread-local mode does not reach. Their backward pass would silently be the ordinary gradient, or a mixture of
both, so they are refused before any work is done.
"""

from __future__ import annotations

import types
import weakref
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedModelError

__all__ = ["check_model_supported"]


def check_model_supported(model: Any) -> None:
    """Raise :class:`UnsupportedModelError` for models whose ops the mode cannot see."""
    if not isinstance(model, nn.Module):
        if callable(model):
            script = _script_function_in(model) if isinstance(model, types.FunctionType) else None
            if isinstance(model, torch.jit.ScriptFunction) or script is not None:
                raise UnsupportedModelError(_script_function_message("the model function", script or "itself"))
            return  # plain functions are traced op by op like any Python code
        raise UnsupportedModelError(f"model must be a torch.nn.Module or a callable, got {type(model).__name__}")
    for name, module in model.named_modules():
        problem = _refusal(module)
        if problem is not None:
            where = f"submodule {name!r} ({type(module).__name__})" if name else f"the model ({type(module).__name__})"
            raise UnsupportedModelError(f"{where}: {problem}")


def _refusal(module: nn.Module) -> str | None:
    if isinstance(module, torch.jit.ScriptModule):
        return (
            "is a TorchScript module: its ops run inside the TorchScript interpreter where the pullback mode cannot "
            "see them, so the result would silently be the ordinary gradient. Explain the original Python nn.Module "
            "instead."
        )
    if type(module).__name__ == "OptimizedModule" or hasattr(module, "_orig_mod"):
        return (
            "is torch.compile'd: compiled graphs bypass the pullback mode, so the result would silently be the "
            "ordinary gradient. Pass the uncompiled module (compiled._orig_mod)."
        )
    if getattr(module, "_compiled_call_impl", None) is not None:
        return (
            "was compiled in place (module.compile()): compiled graphs bypass the pullback mode, so the result "
            "would silently be the ordinary gradient. Explain an uncompiled copy (copy.deepcopy before .compile(), "
            "or rebuild the module)."
        )
    if isinstance(module, nn.DataParallel) and len(module.device_ids or ()) > 1:
        return (
            "is nn.DataParallel over several devices: its replicas run in worker threads, which the thread-local "
            "pullback mode does not reach, so they would silently give the ordinary gradient. Explain "
            "model.module on one device, or split the batch yourself (one process per device, e.g. torchrun)."
        )
    script = _script_function_in(type(module).forward)
    script = script or next((v.name for v in vars(module).values() if isinstance(v, torch.jit.ScriptFunction)), None)
    if script is not None:
        return _script_function_message("its forward", script)
    return None


def _script_function_message(where: str, name: str) -> str:
    return (
        f"{where} calls the TorchScript function {name!r} (@torch.jit.script): its ops run inside the TorchScript "
        "interpreter where the pullback mode cannot see them, so its gates would silently keep their ordinary "
        "gradient. Use the plain Python function instead (drop @torch.jit.script)."
    )


#: forward function -> name of a TorchScript function it calls (or None); classes are few, so each is read once.
_SCANNED: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()
_SCAN_DEPTH = 3


def _script_function_in(func: Any, depth: int = _SCAN_DEPTH) -> str | None:
    """The name of a ``torch.jit.ScriptFunction`` that ``func`` (or a Python function it calls) refers to.

    Read from the code, not run: the global names, module attributes (``lib.fused_act``) and closure cells it
    uses, and the functions among them, ``depth`` calls deep. That finds the usual spellings without a pass.
    """
    if not isinstance(func, types.FunctionType):
        return None
    try:
        return _SCANNED[func]
    except KeyError:
        pass
    found = _scan(func, depth, set())
    if depth == _SCAN_DEPTH:
        _SCANNED[func] = found
    return found


def _scan(func: types.FunctionType, depth: int, seen: set[int]) -> str | None:
    if id(func) in seen or _trusted(func):
        return None
    seen.add(id(func))
    names = _code_names(func.__code__)
    referred: list[Any] = [func.__globals__[n] for n in names if n in func.__globals__]
    referred += [vars(m).get(n) for m in referred if isinstance(m, types.ModuleType) for n in names]
    for cell in func.__closure__ or ():
        try:
            referred.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    for obj in referred:
        if isinstance(obj, torch.jit.ScriptFunction):
            return obj.name
    if depth > 1:
        for obj in referred:
            if isinstance(obj, types.FunctionType):
                found = _scan(obj, depth - 1, seen)
                if found is not None:
                    return found
    return None


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # nested functions and lambdas
            names |= _code_names(const)
    return names


def _trusted(func: types.FunctionType) -> bool:
    """Torch's own Python code calls no TorchScript functions in eager forward passes: not worth a scan."""
    module = func.__module__ or ""
    return module == "torch" or module.startswith("torch.")
