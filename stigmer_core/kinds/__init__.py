"""Kind declarations and the registry that turns them into runtimes."""

from stigmer_core.kinds.declaration import CustomOperation, IndexSpec, KindDeclaration
from stigmer_core.kinds.runtime import KindRuntime, Registry

__all__ = ["CustomOperation", "IndexSpec", "KindDeclaration", "KindRuntime", "Registry"]
