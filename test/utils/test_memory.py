import os
import subprocess
import sys

import pytest

from torch_geometric_binary.utils.memory import ENV_MALLOC

# Allocates a 256 MB tensor, frees it, and prints glibc's mallinfo2 before
# the free (bytes in mapped blocks) and after it (bytes in the heap).
SCRIPT = '''
import ctypes, torch
from torch_geometric_binary.utils.memory import reuse_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',
        'fsmblks', 'uordblks', 'fordblks', 'keepcost')]
libc = ctypes.CDLL('libc.so.6')
libc.mallinfo2.restype = Info
applied = reuse_freed_memory()
x = torch.empty(64 * 2**20)
mapped = libc.mallinfo2().hblkhd
del x
print(int(applied), mapped, libc.mallinfo2().arena)
'''


def mallinfo(env):
    out = subprocess.run([sys.executable, '-c', SCRIPT], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f'no glibc mallinfo2: {out.stderr.strip()[-200:]}')
    applied, mapped, heap = map(int, out.stdout.split())
    return bool(applied), mapped, heap


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='glibc mallopt')
def test_large_blocks_come_from_the_heap_and_stay():
    env = {k: v for k, v in os.environ.items() if k != ENV_MALLOC}
    applied, mapped, heap = mallinfo(env)
    assert applied
    # The 256 MB block from the heap, kept there after the free.
    assert mapped < 2**27 and heap >= 2**28, (mapped, heap)
    applied, mapped, heap = mallinfo({**env, ENV_MALLOC: 'system'})
    # glibc's default: mapped for itself, unmapped when freed.
    assert not applied
    assert mapped >= 2**28 and heap < 2**28, (mapped, heap)
