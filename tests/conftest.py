"""Tests never download: model weights come from the embedded packages or from caches the tests fill themselves.

Set before any test module imports a hub library, and inherited by the CLI processes tests start; the download
tests serve weights from a localhost server and lift the switch for themselves.
"""

import os

os.environ.setdefault("SEMANTIC_PULLBACKS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
