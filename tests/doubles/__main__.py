"""python3 -m tests.doubles PROVIDER [--key KEY]: serve one double on
127.0.0.1 until interrupted; prints {"url","key"} as one JSON line.
Faults and state: POST/DELETE URL/__double__/faults, GET URL/__double__/state."""
import argparse
import json
import signal
import threading

from . import PROVIDERS, start

ap = argparse.ArgumentParser(prog="python3 -m tests.doubles")
ap.add_argument("provider", choices=sorted(PROVIDERS))
ap.add_argument("--key")
args = ap.parse_args()
d = start(args.provider, key=args.key)
print(json.dumps({"url": d.url, "key": d.key}), flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
signal.signal(signal.SIGINT, lambda *_: done.set())
done.wait()
d.stop()
