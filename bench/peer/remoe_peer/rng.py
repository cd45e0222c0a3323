"""remoe's host random numbers (autodiff/random.h): xoshiro256** seeded through splitmix64.

The peer draws its training windows with it, so from the same seed — or the same saved state
(a checkpoint's "data_rng") — it reads exactly the windows remoe reads.
"""

MASK = (1 << 64) - 1


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return x, z ^ (z >> 31)


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & MASK


class Rng:
    def __init__(self, seed=0):
        x = seed & MASK
        self.s = []
        for _ in range(4):
            x, w = _splitmix64(x)
            self.s.append(w)

    @classmethod
    def from_state(cls, state):
        """The generator with remoe's four saved words (a checkpoint's "data_rng")."""
        if len(state) != 4 or not all(isinstance(w, int) and 0 <= w <= MASK for w in state):
            raise ValueError(f"an Rng state is four unsigned 64-bit integers, got {state!r}")
        rng = cls.__new__(cls)
        rng.s = list(state)
        return rng

    def next_u64(self):
        s = self.s
        result = (_rotl((s[1] * 5) & MASK, 7) * 9) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    def below(self, n):
        """A uniform integer in [0, n), as remoe draws it (next_u64 mod n)."""
        if n <= 0:
            raise ValueError(f"Rng.below: n must be positive, got {n}")
        return self.next_u64() % n
