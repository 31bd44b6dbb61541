"""Triton kernels and their launchers. Knows tensors, strides and affine matrices; nothing about groups or training."""

import os


def _patch_interpreter_index() -> None:
    """Let ``range(n)`` over a runtime scalar work in the Triton interpreter under NumPy >= 2.3.

    The interpreter (triton 3.6) holds scalars as 1-element arrays and converts them with
    ``int(array)``, which NumPy 2.3 removed for arrays with ndim > 0; every kernel loop
    over a runtime bound then fails under ``TRITON_INTERPRET=1``. Only the interpreter is
    touched; compiled kernels never see this.
    """
    try:
        from triton.runtime import interpreter
    except Exception:  # pragma: no cover - triton without the interpreter
        return
    orig = getattr(interpreter, "_patch_lang_tensor", None)
    if orig is None or getattr(orig, "_canon_patched", False):
        return

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._canon_patched = True
    interpreter._patch_lang_tensor = patched


if os.environ.get("TRITON_INTERPRET") == "1":
    _patch_interpreter_index()
