"""``python -m st_contrast.cli``: what ``accelerate launch -m`` and ``torchrun -m`` start."""

from __future__ import annotations

import sys

from st_contrast.cli.main import main

sys.exit(main())
