"""The exit statuses of ``manage.py checkshutdown``, the same in its three modes.

Reading the workers' reports, ``--static`` and ``--drill`` all end with one of them.
"""

from __future__ import annotations

#: Nothing hangs (no finding).
OK = 0
#: Something hangs (or a finding).
PROBLEMS = 1
#: Nothing to judge by: no state, an URLconf that does not import, a server that would not run.
CANNOT_CHECK = 2
