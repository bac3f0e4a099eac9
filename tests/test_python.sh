#!/bin/sh
# The Python package (python/codi_lens) against the C API: tests/test_python.py with a python3 that has
# numpy (python3, else Debian's /usr/bin/python3 with python3-numpy). Needs build/libcodi_lens.so
# (`make python`) and build/codi. Without numpy every check is reported skipped.
for py in python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null 2>&1 && "$py" -c "import numpy" >/dev/null 2>&1; then
    exec "$py" tests/test_python.py
  fi
done
n=$(grep -c 'result(' tests/test_python.py)
echo "# no python3 with numpy (Debian: apt-get install python3-numpy): the Python checks are skipped"
echo "0 passed, 0 failed, $((n - 1)) skipped"
