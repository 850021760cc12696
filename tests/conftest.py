import jax

# The package turns float64 on at import; make sure tests see it even if a test
# module imports jax first.
jax.config.update("jax_enable_x64", True)

import cnntheory  # noqa: E402,F401
