"""The Python binding's costs on codi-nano, measured in one run (figures for the README):
a Python hook's overhead per call, and a whole question from Python against `build/codi run`.

    make python build/codi && python3 tools/bench_python.py [--repeat 20]
"""
import argparse
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import codi_lens as cl  # noqa: E402

MODEL = "models/codi-nano/codi_nano.bin"
Q = "Zoe is 3 years old. Sam is 9 years older than Zoe. Max is twice as old as Sam. How old is Max?"


def cpu_seconds():
    """CPU time (user + system) of this process and of its finished children: unlike wall time it does
    not count the time other programs of a shared machine take the cores."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def best_times(fns, repeat):
    """The least CPU time of `repeat` runs of each function, taken in interleaved rounds."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = cpu_seconds()
            fn()
            best[k] = min(best[k], cpu_seconds() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30, help="runs per figure (the least CPU time is reported)")
    ap.add_argument("--codi", default="build/codi", help="the CLI to compare with")
    a = ap.parse_args()
    m = cl.Model(MODEL)
    calls = [0]

    def noop(info, x):
        calls[0] += 1

    states = {}
    for name, hook in (("plain", None), ("every", {}), ("filtered", {"at": "resid", "layer": 2})):
        states[name] = m.state(256)
        if hook is not None:
            states[name].add_hook(noop, **hook)
    n = {}
    for name, st in states.items():
        calls[0] = 0
        ans = m.run(Q, max_answer=32, state=st)
        n[name] = calls[0]
    cmd_cli = [a.codi, "run", "--model", MODEL, "--question", Q, "--max-answer", "32"]
    cmd_py = [sys.executable, "-c", "import sys; sys.path.insert(0, 'python'); import codi_lens as cl; "
              "cl.Model(%r).run(%r, max_answer=32)" % (MODEL, Q)]
    fns = {name: (lambda st=st: m.run(Q, max_answer=32, state=st)) for name, st in states.items()}
    fns["load_run"] = lambda: cl.Model(MODEL).run(Q, max_answer=32)
    fns["cli"] = lambda: subprocess.run(cmd_cli, check=True, capture_output=True)
    fns["py"] = lambda: subprocess.run(cmd_py, check=True, capture_output=True)
    t = best_times(fns, a.repeat)
    base = t["plain"]
    print("kernel %s, %d-token answer, CPU time (user + system, the least of %d interleaved runs)" % (cl.kernel_name(), len(ans.ids), a.repeat))
    print("a question, model loaded, no hook:  python %8.2f ms" % (base * 1e3))
    print("a no-op Python hook at every point: python %8.2f ms: %d calls, %.2f us per call" %
          (t["every"] * 1e3, n["every"], (t["every"] - base) / n["every"] * 1e6))
    print("the same hook at resid, layer 2:    python %8.2f ms: %d calls; the other %d points are skipped in C" %
          (t["filtered"] * 1e3, n["filtered"], n["every"] - n["filtered"]))
    print("a whole question with the load:     python %8.2f ms (in process)" % (t['load_run'] * 1e3))
    print("a whole process (start, load, run): python %8.2f ms, build/codi run %8.2f ms (which also prints the lens table)" %
          (t['py'] * 1e3, t['cli'] * 1e3))


if __name__ == "__main__":
    main()
