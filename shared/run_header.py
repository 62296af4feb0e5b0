"""The header that files a vendor call under its run, in the vendor sandbox's records."""

from __future__ import annotations

# Every vendor client sends it (the real vendors ignore it); the sandbox reads it. The website
# client sends it only to its configured origin, never to a company's own site.
RUN_ID_HEADER = "X-Chimera-Run-Id"
