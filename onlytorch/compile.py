"""The compiler's entry points under their first name: ``onlytorch.compile.compile_file`` and the
result types. The compiler itself is the package ``onlytorch.compiler``."""

from .compiler import BackwardInfo, CompileContext, Compiled, ModuleInfo, PhaseInfo, compile_file, compile_text

__all__ = ["BackwardInfo", "CompileContext", "Compiled", "ModuleInfo", "PhaseInfo", "compile_file", "compile_text"]
