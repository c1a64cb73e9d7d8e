//! Translating guest pointers to (buffer index, host address) through a
//! ring's table of registered extents.

use crate::abi::Extent;
use crate::error::{Error, Result};

/// Where a guest range lives for READ_FIXED/WRITE_FIXED: the buffer index
/// and the host address to put in the SQE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedBuf {
    pub buf_index: u16,
    pub host_addr: u64,
}

/// One piece of a range split at extent boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedPiece {
    pub buf: FixedBuf,
    /// Guest address of the piece.
    pub user_addr: u64,
    pub len: u64,
}

fn contains(e: &Extent, addr: u64, len: u64) -> bool {
    e.user_addr != 0
        && e.host_addr != 0
        && addr >= e.user_addr
        && addr
            .checked_add(len)
            .zip(e.user_addr.checked_add(e.len))
            .is_some_and(|(end, eend)| end <= eend)
}

/// `(addr, len)` inside one extent: its index and the host address of
/// `addr`. The lowest matching index wins (clones into the same table may
/// map the same memory twice). `len` 0 is treated as 1 byte.
pub fn translate(table: &[Extent], addr: u64, len: u64) -> Result<FixedBuf> {
    let l = len.max(1);
    table
        .iter()
        .enumerate()
        .find(|(_, e)| contains(e, addr, l))
        .and_then(|(i, e)| {
            Some(FixedBuf {
                buf_index: u16::try_from(i).ok()?,
                host_addr: e.host_addr + (addr - e.user_addr),
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
                host_addr: e.host_addr + (cur - e.user_addr),
            },
            user_addr: cur,
            len: piece_end - cur,
        });
        cur = piece_end;
    }
    Ok(out)
}

/// Fills unknown user addresses (0) of `table` from `known` extents with the
/// same host address and length (e.g. after cloning from a table id).
/// Returns how many were filled.
pub fn adopt_user_addrs(table: &mut [Extent], known: &[Extent]) -> usize {
    let mut n = 0;
    for e in table
        .iter_mut()
        .filter(|e| e.user_addr == 0 && e.host_addr != 0)
    {
        if let Some(k) = known
            .iter()
            .find(|k| k.user_addr != 0 && k.host_addr == e.host_addr && k.len == e.len)
        {
            e.user_addr = k.user_addr;
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

    fn ext(user: u64, len: u64, host: u64) -> Extent {
        Extent {
            user_addr: user,
            len,
            host_addr: host,
        }
    }

    fn table() -> Vec<Extent> {
        vec![
            ext(0x10000, 0x2000, 0x7f00_0000_0000),
            ext(0x12000, 0x1000, 0x7f00_1234_5000),
            ext(0, 0x1000, 0x7f00_9000_0000), // unknown user address
            ext(0x40000, 0x1000, 0),          // empty slot (hole)
            ext(0x50000, 0x10000, 0x7e00_0000_0000),
        ]
    }

    #[test]
    fn translates_inside_one_extent() {
        let t = table();
        assert_eq!(
            translate(&t, 0x10000, 0x2000).unwrap(),
            FixedBuf {
                buf_index: 0,
                host_addr: 0x7f00_0000_0000
            }
        );
        assert_eq!(
            translate(&t, 0x10ff0, 0x10).unwrap(),
            FixedBuf {
                buf_index: 0,
                host_addr: 0x7f00_0000_0ff0
            }
        );
        assert_eq!(translate(&t, 0x12800, 0x800).unwrap().buf_index, 1);
        assert_eq!(
            translate(&t, 0x5fff0, 0x10).unwrap(),
            FixedBuf {
                buf_index: 4,
                host_addr: 0x7e00_0000_fff0
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
        assert_eq!(p[0].buf.host_addr, 0x7f00_0000_1000);
        assert_eq!(p[1].buf.buf_index, 1);
        assert_eq!(p[1].user_addr, 0x12000);
        assert_eq!(p[1].len, 0x800);
        assert_eq!(p[1].buf.host_addr, 0x7f00_1234_5000);
        assert!(split(&t, 0x12000, 0x1001).is_err());
        assert!(split(&t, 0x10000, 0).unwrap().is_empty());
    }

    #[test]
    fn adopts_known_user_addresses() {
        let mut t = table();
        let known = [ext(0x90000, 0x1000, 0x7f00_9000_0000)];
        assert_eq!(adopt_user_addrs(&mut t, &known), 1);
        assert_eq!(translate(&t, 0x90010, 8).unwrap().buf_index, 2);
        assert_eq!(adopt_user_addrs(&mut t, &known), 0);
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
