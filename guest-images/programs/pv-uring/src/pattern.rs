//! The data layout pv-suite shares with the host test: backend files made
//! of 4 KiB blocks of little-endian u64 words.
//!
//! - The host fills blocks `0..read_blocks` of backend 0 with
//!   [`host_word`]`(seed, b, j)` before the boot.
//! - The guest writes blocks `write_block..write_block + write_blocks` with
//!   [`guest_word`]`(seed, b, j)`, then FSYNCs; the host checks them.

/// Bytes per block.
pub const BLOCK: usize = 4096;
/// u64 words per block.
pub const WORDS: usize = BLOCK / 8;

/// Word `j` of host-written block `b`: `0x48 << 56 | (seed & 0xffff) << 40
/// | (b & 0xff_ffff) << 16 | j` (0x48: 'H').
pub fn host_word(seed: u32, b: u64, j: u64) -> u64 {
    word(0x48, seed, b, j)
}

/// Word `j` of guest-written block `b`: as [`host_word`] with tag 0x47 ('G').
pub fn guest_word(seed: u32, b: u64, j: u64) -> u64 {
    word(0x47, seed, b, j)
}

fn word(tag: u64, seed: u32, b: u64, j: u64) -> u64 {
    (tag << 56) | ((seed as u64 & 0xffff) << 40) | ((b & 0xff_ffff) << 16) | (j & 0xffff)
}

/// Fills `buf` (a whole number of blocks) as file blocks from `first`.
pub fn fill(buf: &mut [u8], first: u64, word: impl Fn(u64, u64) -> u64) {
    for (k, chunk) in buf.chunks_exact_mut(8).enumerate() {
        let b = first + (k / WORDS) as u64;
        let j = (k % WORDS) as u64;
        chunk.copy_from_slice(&word(b, j).to_le_bytes());
    }
}

/// The first byte offset where `buf` differs from the pattern, if any.
pub fn check(buf: &[u8], first: u64, word: impl Fn(u64, u64) -> u64) -> Option<usize> {
    for (k, chunk) in buf.chunks_exact(8).enumerate() {
        let b = first + (k / WORDS) as u64;
        let j = (k % WORDS) as u64;
        if chunk != word(b, j).to_le_bytes() {
            return Some(k * 8);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(host_word(0x1234, 3, 5), 0x4812_3400_0003_0005);
        assert_eq!(host_word(0x1_1234, 0x100_0003, 5), 0x4812_3400_0003_0005);
        assert_eq!(guest_word(1, 256, 511), 0x4700_0100_0100_01ff);
    }

    #[test]
    fn fill_and_check() {
        let mut b = vec![0u8; 2 * BLOCK];
        fill(&mut b, 10, |b, j| host_word(7, b, j));
        assert_eq!(check(&b, 10, |b, j| host_word(7, b, j)), None);
        assert_eq!(&b[BLOCK..BLOCK + 8], &host_word(7, 11, 0).to_le_bytes());
        assert_eq!(check(&b, 11, |b, j| host_word(7, b, j)), Some(0));
        b[BLOCK + 17] ^= 1;
        assert_eq!(check(&b, 10, |b, j| host_word(7, b, j)), Some(BLOCK + 16));
    }
}
