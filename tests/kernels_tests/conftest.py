import os

# The interpreted kernel tests need TRITON_INTERPRET=1 before triton is imported, so they
# run in their own process (see test_interpreter.py) and are skipped in this one.
collect_ignore = [] if os.environ.get("TRITON_INTERPRET") == "1" else ["interpreted"]
