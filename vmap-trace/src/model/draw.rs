//! Random variability of CPU costs and cache-line transfers in integer arithmetic.
//!
//! Every cost the model draws is `mean * (1 - cv + cv * E)` with `E` a standard exponential
//! variate (mean 1, standard deviation `cv * mean`). A simulated second of a busy node-sharded
//! run draws over a hundred million of them, so they are made from one random `u64` each, with a
//! table and integer multiplications, in 32-bit fixed point ("Q32": `x` stands for
//! `x / 2^32`):
//!
//! - `E = -ln(U)` for `U` uniform in (0, 1). Writing `U = 2^-(k+1) * (1 + f)` with `k` the
//!   leading zeros of the random word and `f` the bits below its leading one,
//!   `-ln(U) = (k + 1) ln 2 - ln(1 + f)`: the leading zeros give the integer part exactly (they
//!   are geometric with ratio 1/2, as the variate requires), and `ln(1 + f)` on `[0, 1)` comes
//!   from a 1024-interval table with linear interpolation. The interpolation error is below
//!   `1.3e-7` (the chord of a concave function lies below it by at most `h^2 / 8` for a step
//!   `h = 2^-10`), far below a picosecond for any cost of the model.
//! - A [`Jitter`] turns `E` into a factor `1 - cv + cv * E` (times a CPU's SMT slowdown) with
//!   one multiplication, and applying the factor to a mean in picoseconds is a second one.
//!
//! The floating-point path this replaces (a ziggurat in `f64`, three multiplications and a
//! saturating conversion per draw) was about a fifth of a simulation's instructions.
//!
//! The random words come from [`SimRng`], SplitMix64: one 64-bit state, an addition and two
//! multiply-xorshift rounds per word (about 8 instructions inline). ChaCha8 cost about 22 per
//! word through its block buffer and refill; a simulation needs no cryptographic strength, and
//! SplitMix64 passes BigCrush (Steele, Lea and Flood, OOPSLA 2014) with a period of 2^64,
//! billions of times the words of the longest run (60 simulated seconds).

use rand::{RngCore, SeedableRng};

use crate::model::env::Ps;

/// Fractional bits of the fixed-point numbers here.
pub const Q: u32 = 32;
/// 1.0 in Q32.
pub const ONE: u64 = 1 << Q;
/// Intervals of the `ln(1 + f)` table, as a power of two.
const TABLE_BITS: u32 = 10;
const TABLE_LEN: usize = (1 << TABLE_BITS) + 1;
/// Bits of `f` below the table index that interpolate between two entries.
const FRAC_BITS: u32 = 22;

/// `x` (a non-negative real) in Q32, rounded.
pub fn to_q32(x: f64) -> u64 {
    debug_assert!(x >= 0.0 && x.is_finite());
    (x * ONE as f64).round() as u64
}

/// `ln(1 + i / 1024)` in Q32 for `i = 0..=1024`.
#[derive(Debug)]
pub struct ExpTable {
    ln1p: [u32; TABLE_LEN],
}

impl ExpTable {
    pub fn new() -> Self {
        let mut ln1p = [0u32; TABLE_LEN];
        for (i, v) in ln1p.iter_mut().enumerate() {
            let f = i as f64 / (1u64 << TABLE_BITS) as f64;
            // ln 2 * 2^32 < 2^32: every entry fits.
            *v = to_q32(f.ln_1p()) as u32;
        }
        ExpTable { ln1p }
    }

    /// A standard exponential variate in Q32 from the uniform random word `u`.
    #[inline(always)]
    pub fn exp_q32(&self, u: u64) -> u64 {
        // `u == 0` (probability 2^-64) reads as the smallest nonzero word.
        let u = u.max(1);
        let k = u.leading_zeros();
        // The bits below the leading one, left-aligned: f = mantissa / 2^64.
        let mantissa = (u << k) << 1;
        let i = (mantissa >> (64 - TABLE_BITS)) as usize;
        let frac = (mantissa >> (64 - TABLE_BITS - FRAC_BITS)) & ((1 << FRAC_BITS) - 1);
        let lo = u64::from(self.ln1p[i & (TABLE_LEN - 2)]);
        let hi = u64::from(self.ln1p[(i & (TABLE_LEN - 2)) + 1]);
        let ln1p = lo + (((hi - lo) * frac) >> FRAC_BITS);
        // The last entry is ln 2 itself, so the difference is never negative.
        let ln2 = u64::from(self.ln1p[TABLE_LEN - 1]);
        u64::from(k + 1) * ln2 - ln1p
    }

    /// Draw a standard exponential variate in Q32.
    #[inline(always)]
    pub fn draw(&self, rng: &mut SimRng) -> u64 {
        self.exp_q32(rng.next_u64())
    }
}

impl Default for ExpTable {
    fn default() -> Self {
        ExpTable::new()
    }
}

/// The factor `scale * (1 - cv + cv * E)` in Q32, as `base + slope * E`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jitter {
    base: u64,
    slope: u64,
}

impl Jitter {
    /// `cv` in `[0, 1]`, `scale >= 0`.
    pub fn new(scale: f64, cv: f64) -> Self {
        Jitter {
            base: to_q32(scale * (1.0 - cv)),
            slope: to_q32(scale * cv),
        }
    }

    /// The factor for the exponential variate `e` (Q32), in Q32.
    #[inline(always)]
    pub fn factor(&self, e: u64) -> u64 {
        self.base + mul_q32(self.slope, e)
    }

    /// The factor without variability (`E = 1`), in Q32.
    pub fn mean_factor(&self) -> u64 {
        self.base + self.slope
    }
}

/// `a * b / 2^32`, rounded to the nearest integer, without overflow.
#[inline(always)]
pub fn mul_q32(a: u64, b: u64) -> u64 {
    ((u128::from(a) * u128::from(b) + (1 << (Q - 1))) >> Q) as u64
}

/// A time drawn as `base + slope * E`: a transfer of known mean, with its variability (and a
/// hand-off's number of transfers) folded into the two constants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeDraw {
    /// Picoseconds.
    pub base: Ps,
    /// Picoseconds per unit of `E`.
    pub slope: Ps,
}

impl TimeDraw {
    /// A time of mean `mean` (ps) times `n`, with coefficient of variation `cv`.
    pub fn new(mean: Ps, n: f64, cv: f64) -> Self {
        let mean = mean as f64 * n;
        TimeDraw {
            base: (mean * (1.0 - cv)) as Ps,
            slope: (mean * cv).round() as Ps,
        }
    }

    #[inline(always)]
    pub fn sample(&self, table: &ExpTable, rng: &mut SimRng) -> Ps {
        if self.slope == 0 {
            return self.base;
        }
        self.base + mul_q32(self.slope, table.draw(rng))
    }
}

/// The simulation's random generator: SplitMix64 (see the module comment).
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl RngCore for SimRng {
    #[inline(always)]
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[inline(always)]
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

impl SeedableRng for SimRng {
    type Seed = [u8; 8];

    fn from_seed(seed: [u8; 8]) -> Self {
        SimRng {
            state: u64::from_le_bytes(seed),
        }
    }

    /// The seed is the initial state: SplitMix64 mixes every output, so nearby seeds give
    /// unrelated streams.
    fn seed_from_u64(seed: u64) -> Self {
        SimRng { state: seed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_variates_are_exponential() {
        let table = ExpTable::new();
        let mut rng = SimRng::seed_from_u64(5);
        let n = 2_000_000;
        let (mut sum, mut sum2) = (0.0, 0.0);
        let mut below = [0u32; 4];
        let quantiles = [0.1f64, 0.5, 1.0, 3.0];
        for _ in 0..n {
            let e = table.draw(&mut rng) as f64 / ONE as f64;
            sum += e;
            sum2 += e * e;
            for (b, q) in below.iter_mut().zip(quantiles) {
                *b += u32::from(e < q);
            }
        }
        let mean = sum / n as f64;
        let var = sum2 / n as f64 - mean * mean;
        assert!((mean - 1.0).abs() < 0.003, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        for (b, q) in below.iter().zip(quantiles) {
            let p = f64::from(*b) / n as f64;
            let exact = 1.0 - (-q).exp();
            assert!((p - exact).abs() < 0.002, "P(E < {q}) = {p}, exact {exact}");
        }
    }

    #[test]
    fn table_inverts_the_uniform_word_exactly_enough() {
        let table = ExpTable::new();
        for u in [
            1u64,
            2,
            3,
            1 << 20,
            12_345_678_901,
            1 << 62,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let exact = -((u as f64) / 2f64.powi(64)).ln();
            let got = table.exp_q32(u) as f64 / ONE as f64;
            assert!((got - exact).abs() < 3e-7, "u {u}: {got} vs {exact}");
        }
    }

    #[test]
    fn jitter_keeps_the_mean() {
        let j = Jitter::new(1.4, 0.5);
        assert_eq!(j.mean_factor(), to_q32(1.4));
        assert_eq!(j.factor(0), to_q32(0.7));
        assert_eq!(Jitter::new(1.0, 0.0).factor(5 * ONE), ONE);
        let d = TimeDraw::new(50_000, 2.5, 0.5);
        assert_eq!(d.base + d.slope, 125_000);
    }
}
