"""The agent: PID 1 of every session, reached over the agent protocol.

Standard library only (it runs on the image's python3) and imports nothing
else from Ember, so the directory can be mounted into a session as it is.
See docs/agent-protocol.md.
"""
