"""Registry work run in a separate process by the concurrency and crash tests.

    python worker.py moves URL HOME NAME COUNT GO_FILE TAG...   # COUNT CAS moves of champion
    python worker.py rollback URL HOME NAME GO_FILE              # one rollback, prints outcome
    python worker.py forkserver URL HOME ARTIFACT...             # per stdin line N, fork a child that
                                                                 # registers ARTIFACT[N:]; report it

Each prints one JSON line as its result.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _wait(go_file: str) -> None:
    while not Path(go_file).exists():
        time.sleep(0.005)


def moves(url: str, home: str, name: str, count: str, go_file: str, *tags: str) -> None:
    from pruneguard.registry import Conflict, open_registry

    reg = open_registry(url, home=Path(home))
    done = conflicts = 0
    print(json.dumps({"ready": True}), flush=True)
    _wait(go_file)
    while done < int(count):
        current = reg.aliases(name).get("champion")
        target = tags[(tags.index(current) + 1) % len(tags)] if current in tags else tags[0]
        try:
            reg.set_alias(name, "champion", target, actor=f"worker:{name}", expected=current)
            done += 1
        except Conflict:
            conflicts += 1
    print(json.dumps({"moves": done, "conflicts": conflicts}), flush=True)


def rollback(url: str, home: str, name: str, go_file: str) -> None:
    from pruneguard.registry import Conflict, open_registry

    reg = open_registry(url, home=Path(home))
    reg.get(reg.resolve(name, "champion"))  # warm up: imports and connections before the race
    print(json.dumps({"ready": True}), flush=True)
    _wait(go_file)
    try:
        event = reg.rollback(name, actor="worker", reason="race")
        print(json.dumps({"won": event.to_version}), flush=True)
    except Conflict as exc:
        print(json.dumps({"conflict": str(exc)}), flush=True)


def forkserver(url: str, home: str, *artifacts: str) -> None:
    """Import everything once, then per line on stdin fork a child that registers the
    artifacts; print its pid (so the test can SIGKILL it), then how it ended."""
    import os
    import signal

    # Import everything before forking, so the kills land inside registrations.
    import bentoml._internal.models
    import bentoml.models  # noqa: F401

    from pruneguard.registry import open_registry

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                reg = open_registry(url, home=Path(home))
                for artifact in artifacts[int(line) :]:
                    reg.register(artifact, actor="crash-test")
                time.sleep(3600)  # ran out of work: wait for the kill
                code = 0
            finally:
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        print(json.dumps({"killed": killed, "status": status}), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    {"moves": moves, "rollback": rollback, "forkserver": forkserver}[sys.argv[1]](*sys.argv[2:])
