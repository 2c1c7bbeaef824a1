"""NumPy's PCG64 in compiled code: the meadow's numba kernels make the random draws themselves,
bit for bit as ``Generator.bit_generator.random_raw`` would, so the draws can run inside the
loops that use them (and on every thread: each range of rows starts from a copy of the
generator advanced to its first draw, ``kernels.pcg64_streams``)."""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from numba.extending import intrinsic

PCG_MUL_HI = np.uint64(0x2360ED051FC65DA4)
PCG_MUL_LO = np.uint64(0x4385DF649FCCF645)
"""PCG64's 128-bit LCG multiplier (NumPy's ``PCG64``, XSL-RR output), in 64-bit halves."""


def _mulhi_typed(typingctx: Any, a: Any, b: Any) -> Any:  # pragma: no cover - compiled
    """The high 64 bits of the 128-bit product of two uint64: numba has no 128-bit integer,
    LLVM does (one multiply instruction, not four of 32-bit halves)."""
    sig = nb.types.uint64(nb.types.uint64, nb.types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        narrow = args[0].type  # LLVM's i64; its class makes the i128 (and its constants)
        wide = type(narrow)(128)
        product = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        return builder.trunc(builder.lshr(product, wide(64)), narrow)

    return sig, codegen


_mulhi: Any = intrinsic(_mulhi_typed)  # called as _mulhi(a, b) in compiled code


@nb.njit(cache=True, nogil=True)
def pcg_fill(
    hi: Any, lo: Any, inc_hi: Any, inc_lo: Any, out: Any, count: Any
) -> Any:  # pragma: no cover - compiled
    """``count`` PCG64 draws into ``out`` as NumPy's ``random_raw`` makes them, from the state
    (hi, lo): each step is state * multiplier + increment (mod 2**128), and its output
    ``rotr64(hi ^ lo, hi >> 58)`` of the new state. Returns the new state."""
    for i in range(count):
        new_lo = lo * PCG_MUL_LO + inc_lo
        carry = np.uint64(1) if new_lo < inc_lo else np.uint64(0)
        hi = hi * PCG_MUL_LO + lo * PCG_MUL_HI + _mulhi(lo, PCG_MUL_LO) + inc_hi + carry
        lo = new_lo
        x = hi ^ lo
        r = hi >> np.uint64(58)
        out[i] = (x >> r) | (x << ((np.uint64(64) - r) & np.uint64(63)))
    return hi, lo
