#!/usr/bin/env python3
"""Mutation testing: applies each mutation of tests/mutations.txt to a copy of the repository
(in a temporary directory), builds and runs the test programs it names, and reports whether the
tests caught it (a program failed, crashed or timed out) or missed it; then a score.
    python3 tests/mutate.py                 every mutation
    python3 tests/mutate.py rope bpe        those whose description contains a word given
A mutation that is not found exactly once, or that does not compile, is reported and left out of
the score. The unmutated programs must pass first. Needs make and the compilers `make test` uses.

tests/mutations.txt: blocks separated by blank lines:
    == description
    file: codi_lens.h
    run: test_model_san test_hardening_fco     (targets under build/; test_cli.sh runs that script)
    needs: amx_tile                             (optional: a /proc/cpuinfo flag; without it the kernel path
                                                 never runs here, so the mutation is skipped, not missed)
    - original line(s), exactly as in the file (several '-' lines: consecutive lines)
    + replacement line(s) (none: the lines are deleted)
    @@                                          (optional: another hunk of the same mutation follows)
"""
import os, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600


def parse(path):
    muts, cur = [], None
    for line in open(path, encoding="utf-8").read().split("\n"):
        if line.startswith("#"):
            continue
        if line.startswith("== "):
            cur = {"desc": line[3:].strip(), "file": None, "run": [], "needs": [], "hunks": [[[], []]]}
            muts.append(cur)
        elif cur is None or not line.strip():
            continue
        elif line.startswith("file: "):
            cur["file"] = line[6:].strip()
        elif line.startswith("run: "):
            cur["run"] = line[5:].split()
        elif line.startswith("needs: "):
            cur["needs"] = line[7:].split()
        elif line == "@@":
            cur["hunks"].append([[], []])
        elif line.startswith("- ") or line == "-":
            cur["hunks"][-1][0].append(line[2:])
        elif line.startswith("+ ") or line == "+":
            cur["hunks"][-1][1].append(line[2:])
        else:
            sys.exit("mutations.txt: cannot read line: " + line)
    return muts


def run_programs(tmp, programs, log):
    """'pass', 'fail' or 'build' (did not compile)."""
    targets = ["build/" + p for p in programs if not p.endswith(".sh")]
    if any(p == "test_cli.sh" for p in programs):
        targets += ["build/codi", "build/codi_san", "build/check_trace_san", "build/quickstart"]
    b = subprocess.run(["make", "-s"] + targets, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    if b.returncode != 0:
        return "build"
    for p in programs:
        cmd = ["sh", "tests/" + p] if p.endswith(".sh") else ["./build/" + p]
        try:
            r = subprocess.run(cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return "fail"
        log.flush()
        if r.returncode != 0:
            return "fail"
        if p.endswith(".sh"):       # scripts report failures in their summary line
            with open(log.name, encoding="utf-8", errors="replace") as f:
                tail = [l for l in f.read().split("\n") if " passed, " in l]
            if not tail or " 0 failed" not in tail[-1]:
                return "fail"
    return "pass"


def cpu_flags():
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def main():
    muts = parse(os.path.join(ROOT, "tests/mutations.txt"))
    words = sys.argv[1:]
    if words:
        muts = [m for m in muts if any(w.lower() in m["desc"].lower() for w in words)]
    tmp = tempfile.mkdtemp(prefix="codi_mutate_")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           stdout=subprocess.PIPE).stdout.decode().split("\0")
    for f in files:
        if f and os.path.isfile(os.path.join(ROOT, f)):
            os.makedirs(os.path.join(tmp, os.path.dirname(f)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), os.path.join(tmp, f))
    log_path = os.path.join(tmp, "mutate.log")
    print("copy of the repository in %s (log: %s)" % (tmp, log_path), flush=True)
    programs = sorted({p for m in muts for p in m["run"]})
    with open(log_path, "w") as log:
        base = run_programs(tmp, programs, log)
    if base != "pass":
        sys.exit("the unmutated programs do not pass (%s): see %s" % (base, log_path))
    results = []
    flags = cpu_flags()
    for i, m in enumerate(muts, 1):
        path = os.path.join(tmp, m["file"])
        original = open(os.path.join(ROOT, m["file"]), encoding="utf-8").read()
        text, why = original, None
        for old, new in m["hunks"]:
            o, n = "\n".join(old), "\n".join(new)
            k = text.count(o) if o else 0
            if k != 1:
                why = "not applied: found %d times: %s" % (k, (old or ["(empty)"])[0].strip()[:60])
                break
            text = text.replace(o, n)
        lacking = [f for f in m["needs"] if f not in flags]
        if lacking and not why:
            why = "this CPU lacks " + " ".join(lacking)
        t0 = time.time()
        if why:
            status = "skipped"
        else:
            open(path, "w", encoding="utf-8").write(text)
            with open(log_path, "a") as log:
                log.write("\n==== %s\n" % m["desc"]); log.flush()
                r = run_programs(tmp, m["run"], log)
            status = {"fail": "caught", "pass": "MISSED", "build": "skipped"}[r]
            why = "does not compile" if r == "build" else None
            open(path, "w", encoding="utf-8").write(original)
        results.append((m, status, why))
        print("%2d. %-7s %-70s %s%5.0fs" % (i, status, m["desc"][:70], " ".join(m["run"]) + " ", time.time() - t0)
              + ("  (%s)" % why if why else ""), flush=True)
    caught = sum(1 for _, s, _ in results if s == "caught")
    missed = sum(1 for _, s, _ in results if s == "MISSED")
    print("mutation score: %d caught, %d missed, %d skipped: %.0f%%" % (caught, missed, len(results) - caught - missed,
                                                                        100.0 * caught / max(1, caught + missed)))
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
