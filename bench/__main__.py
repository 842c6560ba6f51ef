"""`make bench`: the server benchmark (service vs bare app under gunicorn, driven by wrk), then the in-process one.

.venv/bin/python -m bench
"""

from __future__ import annotations

from bench import in_process, server_cpu

if __name__ == "__main__":
    print("== server: service vs bare Flask app, gunicorn -c gunicorn.conf.py, wrk ==", flush=True)
    server_cpu.main([])
    print("\n== in process: one hook call by chart size ==", flush=True)
    raise SystemExit(in_process.main([]))
