//! Naming guest data for READ_FIXED/WRITE_FIXED: a guest pointer becomes
//! (buffer index, byte offset in that buffer) through the ring's table of
//! registered extents, whose `user_addr` the driver reports. No host
//! address is involved (docs/pv-uring.md, ABI v2).

use crate::error::{Error, Result};
use uring_abi::vuring::VuringExtent as Extent;

/// Where a guest range lives for READ_FIXED/WRITE_FIXED: the SQE's
/// `buf_index` and its `addr` (the byte offset inside that buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedBuf {
    /// The registered buffer (the extent's index in the ring's table).
    pub buf_index: u16,
    /// Byte offset inside that buffer.
    pub offset: u64,
}

/// One piece of a range split at extent boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedPiece {
    /// Where the piece is in the table.
    pub buf: FixedBuf,
    /// Guest address of the piece.
    pub user_addr: u64,
    /// Its length.
    pub len: u64,
}

/// Whether extent `e` (known and not empty) holds `[addr, addr + len)`.
fn contains(e: &Extent, addr: u64, len: u64) -> bool {
    e.user_addr != 0
        && e.len != 0
        && addr >= e.user_addr
        && addr
            .checked_add(len)
            .zip(e.user_addr.checked_add(e.len))
            .is_some_and(|(end, eend)| end <= eend)
}

/// `(addr, len)` inside one extent: its index and the offset of `addr` in
/// it. The lowest matching index wins (a clone into the same table may
/// name the same memory twice). `len` 0 is treated as 1 byte.
pub fn translate(table: &[Extent], addr: u64, len: u64) -> Result<FixedBuf> {
    let l = len.max(1);
    table
        .iter()
        .enumerate()
        .find(|(_, e)| contains(e, addr, l))
        .and_then(|(i, e)| {
            Some(FixedBuf {
                buf_index: u16::try_from(i).ok()?,
                offset: addr - e.user_addr,
            })
        })
        .ok_or(Error::NotRegistered { addr, len })
}

/// Splits `(addr, len)` into pieces, each inside one extent (REGISTER may
/// split one iovec into several guest-physically contiguous buffers).
pub fn split(table: &[Extent], addr: u64, len: u64) -> Result<Vec<FixedPiece>> {
    let end = addr
        .checked_add(len)
        .ok_or(Error::NotRegistered { addr, len })?;
    let mut out = Vec::new();
    let mut cur = addr;
    while cur < end {
        let (i, e) = table
            .iter()
            .enumerate()
            .find(|(_, e)| contains(e, cur, 1))
            .ok_or(Error::NotRegistered { addr, len })?;
        let piece_end = end.min(e.user_addr + e.len);
        out.push(FixedPiece {
            buf: FixedBuf {
                buf_index: u16::try_from(i).map_err(|_| Error::NotRegistered { addr, len })?,
                offset: cur - e.user_addr,
            },
            user_addr: cur,
            len: piece_end - cur,
        });
        cur = piece_end;
    }
    Ok(out)
}

/// After a clone of `nr` entries from `src[src_off..]` to
/// `table[dst_off..]`: fills the destination entries whose user address
/// the driver did not know (0) from the source entry they copy, when the
/// lengths agree. `nr` 0 means the whole source from 0 to 0 (as CLONE).
/// Returns how many were filled.
pub fn adopt_cloned(
    table: &mut [Extent],
    src: &[Extent],
    src_off: u32,
    dst_off: u32,
    nr: u32,
) -> usize {
    let (src_off, dst_off, nr) = if nr == 0 {
        (0, 0, src.len())
    } else {
        (src_off as usize, dst_off as usize, nr as usize)
    };
    let mut n = 0;
    for k in 0..nr {
        let (Some(d), Some(s)) = (table.get_mut(dst_off + k), src.get(src_off + k)) else {
            continue;
        };
        if d.user_addr == 0 && d.len != 0 && s.user_addr != 0 && s.len == d.len {
            d.user_addr = s.user_addr;
            n += 1;
        }
    }
    n
}

/// Fills unknown user addresses of `table` from `old` at the same index
/// (entries a DST_REPLACE clone kept), when the lengths agree.
pub fn adopt_kept(table: &mut [Extent], old: &[Extent]) -> usize {
    let mut n = 0;
    for (d, o) in table.iter_mut().zip(old) {
        if d.user_addr == 0 && d.len != 0 && o.user_addr != 0 && o.len == d.len {
            d.user_addr = o.user_addr;
            n += 1;
        }
    }
    n
}

/// Upper bound of the extents REGISTER can make of `iovs`: one per 4 KiB
/// page (guest-physical contiguity is unknown to user space), at least one
/// per iovec.
pub fn max_extents_for(iovs: &[libc::iovec]) -> usize {
    iovs.iter()
        .map(|v| {
            let a = v.iov_base as usize;
            let first = a / 4096;
            let last = (a + v.iov_len.max(1) - 1) / 4096;
            last - first + 1
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(user: u64, len: u64) -> Extent {
        Extent {
            user_addr: user,
            len,
        }
    }

    fn table() -> Vec<Extent> {
        vec![
            ext(0x10000, 0x2000),
            ext(0x12000, 0x1000),
            ext(0, 0x1000),  // unknown user address
            ext(0x40000, 0), // empty entry (hole)
            ext(0x50000, 0x10000),
        ]
    }

    #[test]
    fn translates_to_index_and_offset() {
        let t = table();
        assert_eq!(
            translate(&t, 0x10000, 0x2000).unwrap(),
            FixedBuf {
                buf_index: 0,
                offset: 0
            }
        );
        assert_eq!(
            translate(&t, 0x10ff0, 0x10).unwrap(),
            FixedBuf {
                buf_index: 0,
                offset: 0xff0
            }
        );
        assert_eq!(translate(&t, 0x12800, 0x800).unwrap().buf_index, 1);
        assert_eq!(
            translate(&t, 0x5fff0, 0x10).unwrap(),
            FixedBuf {
                buf_index: 4,
                offset: 0xfff0
            }
        );
    }

    #[test]
    fn refuses_ranges_across_or_outside_extents() {
        let t = table();
        // Straddles extents 0 and 1 (contiguous in guest VA, not one buffer).
        assert!(matches!(
            translate(&t, 0x11f00, 0x200),
            Err(Error::NotRegistered {
                addr: 0x11f00,
                len: 0x200
            })
        ));
        assert!(translate(&t, 0xfff0, 0x20).is_err());
        assert!(translate(&t, 0x13000, 1).is_err());
        assert!(translate(&t, 0x40000, 1).is_err(), "hole");
        assert!(translate(&t, 0, 1).is_err(), "unknown user address");
        assert!(translate(&t, u64::MAX - 4, 16).is_err(), "wrap");
        assert!(translate(&[], 0x10000, 1).is_err());
    }

    #[test]
    fn splits_at_extent_boundaries() {
        let t = table();
        let p = split(&t, 0x11000, 0x1800).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].buf.buf_index, 0);
        assert_eq!(p[0].len, 0x1000);
        assert_eq!(p[0].buf.offset, 0x1000);
        assert_eq!(p[1].buf.buf_index, 1);
        assert_eq!(p[1].user_addr, 0x12000);
        assert_eq!(p[1].len, 0x800);
        assert_eq!(p[1].buf.offset, 0);
        assert!(split(&t, 0x12000, 0x1001).is_err());
        assert!(split(&t, 0x10000, 0).unwrap().is_empty());
    }

    #[test]
    fn adopts_by_position() {
        let src = [ext(0x90000, 0x1000), ext(0xa0000, 0x2000)];
        // A clone of src[1] to index 2: only that entry is filled.
        let mut t = vec![ext(0x10000, 0x1000), ext(0, 0), ext(0, 0x2000)];
        assert_eq!(adopt_cloned(&mut t, &src, 1, 2, 1), 1);
        assert_eq!(t[2], ext(0xa0000, 0x2000));
        assert_eq!(t[1], ext(0, 0), "a hole stays a hole");
        // A length that differs is not adopted.
        let mut t = vec![ext(0, 0x3000)];
        assert_eq!(adopt_cloned(&mut t, &src, 0, 0, 0), 0);
        // nr 0: the whole source.
        let mut t = vec![ext(0, 0x1000), ext(0, 0x2000)];
        assert_eq!(adopt_cloned(&mut t, &src, 0, 0, 0), 2);
        assert_eq!(translate(&t, 0xa0010, 8).unwrap().buf_index, 1);
        let mut t = vec![ext(0, 0x1000)];
        assert_eq!(adopt_kept(&mut t, &src), 1);
        assert_eq!(adopt_kept(&mut t, &src), 0);
    }

    #[test]
    fn extent_capacity() {
        let v = |a: usize, l: usize| libc::iovec {
            iov_base: a as *mut libc::c_void,
            iov_len: l,
        };
        assert_eq!(max_extents_for(&[v(0x1000, 0x1000)]), 1);
        assert_eq!(max_extents_for(&[v(0x1800, 0x1000)]), 2);
        assert_eq!(max_extents_for(&[v(0x1000, 0x10000), v(0x0, 1)]), 17);
    }
}
