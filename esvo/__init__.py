"""esvo: distributed evolution strategies as variational optimization.

The public library API is ``esvo.core`` (ask/tell); ``esvo.objectives`` scores parameters;
``esvo.parallel`` evaluates populations serially or on Ray. Importing ``esvo`` imports no Ray.
"""

from esvo.core import Ask, SearchState, Strategy

__version__ = "0.1.0"
__all__ = ["Ask", "SearchState", "Strategy", "__version__"]
