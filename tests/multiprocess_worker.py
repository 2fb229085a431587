"""One process of a multi-process test run: ``python -m tests.multiprocess_worker SPEC_JSON``.

SPEC: {"root", "kinds" (trainers of tests/test_loop.py, trained in order over all
devices, each in ROOT/KIND), "vqvae_workdir" (the prior's VQ-VAE, default
ROOT/vqvae), "num_epochs", "devices" (forced CPU devices of this process),
"overrides" (config fields), and for several processes "num_processes",
"process_id", "port", "timeout_s"}. A process other than 0 records every file
it creates, changes or removes under ROOT (Python's audit events) into
ROOT/../writes_<process_id>.json: the test checks that it is empty.
"""

import json
import os
import sys

SPEC = json.loads(sys.argv[1])
# XLA's cheapest CPU code generation: these tiny programs run for milliseconds and compile for
# seconds (a third less compile time, measured); every process of a comparison uses the same flags.
os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={SPEC.get('devices', 1)} "
                           "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

ROOT = Path(SPEC["root"]).absolute()
WRITES = []


def _under_root(path) -> bool:
  try:
    return Path(os.fsdecode(path)).absolute().is_relative_to(ROOT)
  except (TypeError, ValueError):
    return False  # a file descriptor


def _audit(event, args):
  if event == "open" and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
    paths = [args[0]]
  elif event == "open" and args[2] is not None and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
    paths = [args[0]]
  elif event in ("os.rename", "os.replace"):
    paths = args[:2]
  elif event in ("os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
    paths = args[:1]
  elif event == "os.mkdir":
    paths = [p for p in args[:1] if not os.path.exists(p)]
  else:
    return
  WRITES.extend(f"{event} {os.fsdecode(p)}" for p in paths if _under_root(p))


def main():
  num_processes, process_id = SPEC.get("num_processes", 1), SPEC.get("process_id", 0)
  if process_id:
    sys.addaudithook(_audit)
  from vae_jax import parallel
  if num_processes > 1:
    parallel.initialize_distributed(f"127.0.0.1:{SPEC['port']}", num_processes, process_id,
                                    timeout_s=SPEC.get("timeout_s", 60))
  import jax
  jax.config.update("jax_threefry_partitionable", False)  # the tests' fast-compiling RNG (conftest)
  from tests import test_loop
  vq_workdir = Path(SPEC.get("vqvae_workdir", ROOT / "vqvae"))
  for kind in SPEC["kinds"]:
    cfg, fn = test_loop.tiny(kind, vq_workdir, num_epochs=SPEC["num_epochs"], **SPEC.get("overrides", {}))
    fn(cfg, ROOT / kind)
    print(kind, "done", flush=True)
  if process_id:
    (ROOT.parent / f"writes_{process_id}.json").write_text(json.dumps(WRITES))


if __name__ == "__main__":
  main()
