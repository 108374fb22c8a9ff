"""Scripts for `python -c` that record the fresh process' own peak RSS as it exits.

The peak is VmHWM, read by the process itself at exit: a child's ru_maxrss would also
count the memory of the (TensorFlow-laden) process it was forked from.
"""

from __future__ import annotations


def record_peak_at_exit(argv_index: int) -> str:
    """Source that, once run, writes the process' peak RSS in MiB (VmHWM) at exit to the
    file named by `sys.argv[argv_index]`; it imports `atexit` and `sys`."""
    return f"""
import atexit, sys
def peak():
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    with open(sys.argv[{argv_index}], "w") as out:
        out.write(str(int(hwm.split()[1]) / 1024))
atexit.register(peak)
"""


# `python -c PRUNEJOB RECORD ARGS...`: `prunejob ARGS` in this process, its peak in RECORD.
PRUNEJOB = (
    record_peak_at_exit(1)
    + """from prunejob.cli import main
sys.exit(main(sys.argv[2:]))
"""
)
