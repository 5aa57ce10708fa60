//! Design actions in one machine word.
//!
//! Every event of a simulation stores an action in an actor's steps and takes it out again,
//! usually a few instructions later. As enums of 24 bytes they were written field by field and
//! read back whole: the processor cannot forward several small stores to one wide load, and
//! that stall (about a dozen cycles) was the largest single cost in the event loop. Packed into
//! a `u64`, an action is built in a register, stored and loaded as one word, and decoded again
//! in registers. Each design's action type says how ([`Pack`]); a field's width is checked in
//! debug builds.

/// Bits a packed action may use: the engine keeps two bits of the word for itself.
pub const PACKED_BITS: u32 = 62;

/// A design action that packs into [`PACKED_BITS`] bits.
pub trait Pack: Copy {
    fn pack(self) -> u64;
    fn unpack(word: u64) -> Self;
}

/// `value`, at most `width` bits wide, placed at bit `at`.
#[inline(always)]
pub fn put(value: u64, at: u32, width: u32) -> u64 {
    debug_assert!(
        width >= 64 || value < 1 << width,
        "{value} does not fit in {width} bits"
    );
    debug_assert!(at + width <= PACKED_BITS);
    value << at
}

/// The `width`-bit field at bit `at` of `word`.
#[inline(always)]
pub fn get(word: u64, at: u32, width: u32) -> u64 {
    (word >> at) & ((1 << width) - 1)
}

/// A `u32` field of `word` (see [`get`]).
#[inline(always)]
pub fn get32(word: u64, at: u32, width: u32) -> u32 {
    get(word, at, width) as u32
}
