"""Run the agent: `python3 -I -S /.ember/agent/__main__.py --user U --workdir W`."""

import os
import sys

if __package__ in (None, ""):
    # Started as a file inside a session: make the package importable as `agent`.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from agent.server import main  # type: ignore[import-not-found]  # the in-session name
else:
    from .server import main

main()
