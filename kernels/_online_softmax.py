"""The online-softmax update that the fused attention kernels share (Milakov & Gimelshein 2018; FlashAttention,
Dao et al. 2022, Algorithm 1), in base 2: scores arrive pre-multiplied by ``log2(e)``."""

from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

if triton is not None:

    @triton.jit
    def online_softmax_step(s, v, m_i, l_i, acc, PRECISION: tl.constexpr):
        """Fold one block of scores ``s`` (rows x keys, ``-inf`` where masked) and its values ``v`` into the
        running row maximum ``m_i``, normalizer ``l_i`` and unnormalized output ``acc``; returns the three."""
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        return m_new, l_i, acc
