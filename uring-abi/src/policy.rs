//! The allow-list every guest SQE passes before the VMM writes a host SQE
//! from it (docs/pv-uring.md, "What a guest SQE may say").
//!
//! [`check`] is a pure function of one SQE that the caller has already
//! copied out of shared memory (so the guest cannot change it after the
//! check), the VM's backend count and the ring's buffer table. It returns
//! the host SQE to submit, built field by field: every byte it does not
//! set is zero, whatever the guest wrote there. Guest data is named by
//! (buffer index, byte offset), never by address; the host address comes
//! from the table. A refusal carries the errno the guest's CQE gets.

use crate::uring::{
    Sqe, IORING_FSYNC_DATASYNC, IORING_NOP_INJECT_RESULT, IORING_OP_FSYNC, IORING_OP_NOP,
    IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED, IOSQE_FIXED_FILE, IOSQE_IO_DRAIN,
    IOSQE_IO_HARDLINK, IOSQE_IO_LINK, SQE_LEN,
};
use crate::wire::SENTINEL_FILE;

/// Opcodes a guest SQE may have.
pub const ALLOWED_OPCODES: [u8; 4] = [
    IORING_OP_NOP,
    IORING_OP_FSYNC,
    IORING_OP_READ_FIXED,
    IORING_OP_WRITE_FIXED,
];
/// SQE flags a guest SQE may set besides the required [`REQUIRED_FLAGS`].
pub const ALLOWED_FLAGS: u8 = IOSQE_IO_LINK | IOSQE_IO_HARDLINK | IOSQE_IO_DRAIN;
/// SQE flags every guest SQE must set (`fd` is a backend index).
pub const REQUIRED_FLAGS: u8 = IOSQE_FIXED_FILE;

/// `EACCES`: an opcode or SQE flag outside the allow-list (what the host
/// kernel's restrictions would answer).
pub const EACCES: i32 = 13;
/// `EINVAL`: a field that must be zero is not.
pub const EINVAL: i32 = 22;
/// `EBADF`: `fd` is not a backend.
pub const EBADF: i32 = 9;
/// `EFAULT`: `buf_index` names no buffer, or the range leaves it.
pub const EFAULT: i32 = 14;

/// One registered buffer as the VMM knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Host address of its first byte.
    pub host_addr: u64,
    /// Its length.
    pub len: u64,
}

/// What a ring's SQEs may refer to.
pub trait Resources {
    /// Backends (fixed files `0..n`).
    fn nr_backends(&self) -> u32;
    /// Buffer `index` of the ring's table, if it holds one.
    fn buffer(&self, index: u16) -> Option<Buffer>;
}

impl Resources for (u32, &[Option<Buffer>]) {
    fn nr_backends(&self) -> u32 {
        self.0
    }
    fn buffer(&self, index: u16) -> Option<Buffer> {
        self.1.get(usize::from(index)).copied().flatten()
    }
}

/// A refused SQE: the errno (positive) its CQE carries as `-errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub i32);

fn require(ok: bool, errno: i32) -> Result<(), Refused> {
    if ok {
        Ok(())
    } else {
        Err(Refused(errno))
    }
}

/// Fields no allowed opcode uses: must be zero in every guest SQE.
fn check_unused(s: &Sqe) -> Result<(), Refused> {
    require(
        s.ioprio == 0
            && s.personality == 0
            && s.file_index == 0
            && s.attr_ptr == 0
            && s.attr_type_mask == 0,
        EINVAL,
    )
}

/// Checks one guest SQE (a copy: `raw` is not read again) and returns the
/// host SQE to submit in its place.
pub fn check(raw: &[u8; SQE_LEN], res: &impl Resources) -> Result<Sqe, Refused> {
    let g = Sqe::from_bytes(raw);
    require(ALLOWED_OPCODES.contains(&g.opcode), EACCES)?;
    require(g.flags & REQUIRED_FLAGS == REQUIRED_FLAGS, EACCES)?;
    require(g.flags & !(REQUIRED_FLAGS | ALLOWED_FLAGS) == 0, EACCES)?;
    check_unused(&g)?;
    let mut host = Sqe {
        opcode: g.opcode,
        flags: g.flags,
        user_data: g.user_data,
        ..Sqe::default()
    };
    match g.opcode {
        IORING_OP_NOP => {
            require(
                g.fd == 0 && g.off == 0 && g.addr == 0 && g.len == 0 && g.op_flags == 0,
                EINVAL,
            )?;
            require(g.buf_index == 0, EINVAL)?;
        }
        IORING_OP_FSYNC => {
            require(g.addr == 0 && g.buf_index == 0, EINVAL)?;
            require(g.op_flags & !IORING_FSYNC_DATASYNC == 0, EINVAL)?;
            host.fd = backend(g.fd, res, false)?;
            host.off = g.off;
            host.len = g.len;
            host.op_flags = g.op_flags;
        }
        _ => {
            // READ_FIXED / WRITE_FIXED: `addr` is the offset in the buffer.
            require(g.op_flags == 0, EINVAL)?;
            host.fd = backend(g.fd, res, g.opcode == IORING_OP_READ_FIXED)?;
            let buf = res.buffer(g.buf_index).ok_or(Refused(EFAULT))?;
            let end = g
                .addr
                .checked_add(u64::from(g.len))
                .ok_or(Refused(EFAULT))?;
            require(end <= buf.len, EFAULT)?;
            host.addr = buf.host_addr.checked_add(g.addr).ok_or(Refused(EFAULT))?;
            host.off = g.off;
            host.len = g.len;
            host.buf_index = g.buf_index;
        }
    }
    Ok(host)
}

/// `fd` as a backend index; `sentinel_ok`: a READ_FIXED may also name the
/// teardown sentinel (a read that waits until the ring is destroyed).
fn backend(fd: i32, res: &impl Resources, sentinel_ok: bool) -> Result<i32, Refused> {
    let idx = u32::try_from(fd).map_err(|_| Refused(EBADF))?;
    require(
        idx < res.nr_backends() || (sentinel_ok && idx == SENTINEL_FILE),
        EBADF,
    )?;
    Ok(fd)
}

/// The host SQE that answers a refused guest SQE: a NOP that completes
/// with `-errno` and the guest's `user_data`, keeping the guest's link
/// flags (a failed link member fails the rest of its chain, as the kernel
/// would have done). Needs `IORING_NOP_INJECT_RESULT` (Linux 6.10+); a
/// host kernel without it answers such a NOP `-EINVAL`.
pub fn refusal(raw: &[u8; SQE_LEN], errno: i32) -> Sqe {
    let g = Sqe::from_bytes(raw);
    Sqe {
        opcode: IORING_OP_NOP,
        flags: REQUIRED_FLAGS | (g.flags & ALLOWED_FLAGS),
        op_flags: IORING_NOP_INJECT_RESULT,
        len: (-errno) as u32,
        user_data: g.user_data,
        ..Sqe::default()
    }
}

/// Whether `host` is a host SQE that [`check`] or [`refusal`] may produce
/// for a ring with `res`: the invariant the fuzz target checks.
pub fn is_allowed_host_sqe(host: &Sqe, res: &impl Resources) -> bool {
    let flags_ok = host.flags & REQUIRED_FLAGS == REQUIRED_FLAGS
        && host.flags & !(REQUIRED_FLAGS | ALLOWED_FLAGS) == 0;
    let unused_zero = host.ioprio == 0
        && host.personality == 0
        && host.file_index == 0
        && host.attr_ptr == 0
        && host.attr_type_mask == 0;
    if !flags_ok || !unused_zero {
        return false;
    }
    match host.opcode {
        IORING_OP_NOP => {
            host.fd == 0
                && host.off == 0
                && host.addr == 0
                && host.buf_index == 0
                && (host.op_flags == 0 && host.len == 0
                    || host.op_flags == IORING_NOP_INJECT_RESULT && (host.len as i32) < 0)
        }
        IORING_OP_FSYNC => {
            host.addr == 0
                && host.buf_index == 0
                && host.op_flags & !IORING_FSYNC_DATASYNC == 0
                && (host.fd as u32) < res.nr_backends()
        }
        IORING_OP_READ_FIXED | IORING_OP_WRITE_FIXED => {
            let fd_ok = (host.fd as u32) < res.nr_backends()
                || host.opcode == IORING_OP_READ_FIXED && host.fd as u32 == SENTINEL_FILE;
            let in_buf = res.buffer(host.buf_index).is_some_and(|b| {
                host.addr >= b.host_addr
                    && (host.addr - b.host_addr)
                        .checked_add(u64::from(host.len))
                        .is_some_and(|end| end <= b.len)
            });
            fd_ok && host.op_flags == 0 && in_buf
        }
        _ => false,
    }
}

/// Fuzzing entry point: `data[0]` picks the backend count, `data[1]` the
/// buffer count (up to 7), then 17 bytes per buffer (a presence byte, host
/// address, length), then the 64-byte SQE. Panics when an emitted host SQE
/// breaks the allow-list or loses the guest's `user_data` or opcode. Used
/// by `fuzz/fuzz_targets/sqe_policy.rs` and a test below.
pub fn fuzz_one(data: &[u8]) {
    const BUF_BYTES: usize = 17;
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let nr_backends = u32::from(byte(0) % 20);
    let nr_bufs = usize::from(byte(1) % 8);
    let mut bufs = [None; 7];
    for (i, b) in bufs.iter_mut().enumerate().take(nr_bufs) {
        let at = 2 + i * BUF_BYTES;
        let word = |off: usize| {
            let mut w = [0u8; 8];
            for (k, x) in w.iter_mut().enumerate() {
                *x = byte(at + off + k);
            }
            u64::from_le_bytes(w)
        };
        if byte(at) & 1 == 1 {
            *b = Some(Buffer {
                host_addr: word(1),
                len: word(9),
            });
        }
    }
    let mut raw = [0u8; SQE_LEN];
    for (k, x) in raw.iter_mut().enumerate() {
        *x = byte(2 + nr_bufs * BUF_BYTES + k);
    }
    let res = (nr_backends, &bufs[..nr_bufs]);
    let guest = Sqe::from_bytes(&raw);
    let host = match check(&raw, &res) {
        Ok(host) => {
            assert_eq!(host.opcode, guest.opcode);
            host
        }
        Err(Refused(errno)) => {
            assert!(errno > 0);
            let r = refusal(&raw, errno);
            assert_eq!(r.len as i32, -errno);
            r
        }
    };
    assert_eq!(host.user_data, guest.user_data);
    assert!(is_allowed_host_sqe(&host, &res), "{guest:?} -> {host:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uring::{sqe, IORING_OP_READ, IOSQE_ASYNC, IOSQE_CQE_SKIP_SUCCESS};

    const BUFS: [Option<Buffer>; 3] = [
        Some(Buffer {
            host_addr: 0x7f00_0000_0000,
            len: 8192,
        }),
        None,
        Some(Buffer {
            host_addr: 0x7f00_1000_0000,
            len: 4096,
        }),
    ];

    fn res() -> (u32, &'static [Option<Buffer>]) {
        (2, &BUFS)
    }

    fn read(buf_index: u16, addr: u64, len: u32) -> Sqe {
        Sqe {
            opcode: IORING_OP_READ_FIXED,
            flags: IOSQE_FIXED_FILE,
            fd: 1,
            off: 4096,
            addr,
            len,
            buf_index,
            user_data: 42,
            ..Sqe::default()
        }
    }

    fn run(s: &Sqe) -> Result<Sqe, Refused> {
        let out = check(&s.to_bytes(), &res());
        if let Ok(h) = &out {
            assert!(is_allowed_host_sqe(h, &res()), "{h:?}");
        }
        out
    }

    #[test]
    fn a_read_gets_the_host_address() {
        let h = run(&read(0, 100, 4000)).unwrap();
        assert_eq!(h.addr, 0x7f00_0000_0000 + 100);
        assert_eq!(
            (h.fd, h.off, h.len, h.user_data, h.buf_index),
            (1, 4096, 4000, 42, 0)
        );
        let h = run(&read(2, 0, 4096)).unwrap();
        assert_eq!(h.addr, 0x7f00_1000_0000);
    }

    #[test]
    fn ranges_and_indices_are_checked() {
        assert_eq!(run(&read(0, 4096, 4097)), Err(Refused(EFAULT)));
        assert_eq!(run(&read(0, u64::MAX, 2)), Err(Refused(EFAULT)));
        assert_eq!(run(&read(1, 0, 1)), Err(Refused(EFAULT)));
        assert_eq!(run(&read(3, 0, 1)), Err(Refused(EFAULT)));
        assert_eq!(run(&read(u16::MAX, 0, 1)), Err(Refused(EFAULT)));
    }

    #[test]
    fn fds_must_be_backends() {
        for fd in [2, -1, 15, 17, i32::MAX] {
            assert_eq!(
                run(&Sqe {
                    fd,
                    ..read(0, 0, 1)
                }),
                Err(Refused(EBADF)),
                "{fd}"
            );
        }
        // The sentinel, for reads only.
        assert!(run(&Sqe {
            fd: 16,
            ..read(0, 0, 1)
        })
        .is_ok());
        let w = Sqe {
            opcode: IORING_OP_WRITE_FIXED,
            fd: 16,
            ..read(0, 0, 1)
        };
        assert_eq!(run(&w), Err(Refused(EBADF)));
    }

    #[test]
    fn opcodes_and_flags_outside_the_list_are_refused() {
        for op in [IORING_OP_READ, 1, 2, 6, 30, 46, 255] {
            let s = Sqe {
                opcode: op,
                ..read(0, 0, 1)
            };
            assert_eq!(run(&s), Err(Refused(EACCES)), "opcode {op}");
        }
        for f in [IOSQE_ASYNC, IOSQE_CQE_SKIP_SUCCESS, 1 << 5, 1 << 7] {
            let s = Sqe {
                flags: IOSQE_FIXED_FILE | f,
                ..read(0, 0, 1)
            };
            assert_eq!(run(&s), Err(Refused(EACCES)), "flag {f:#x}");
        }
        let no_fixed = Sqe {
            flags: 0,
            ..read(0, 0, 1)
        };
        assert_eq!(run(&no_fixed), Err(Refused(EACCES)));
        let linked = Sqe {
            flags: IOSQE_FIXED_FILE | IOSQE_IO_LINK,
            ..read(0, 0, 1)
        };
        assert_eq!(
            run(&linked).unwrap().flags,
            IOSQE_FIXED_FILE | IOSQE_IO_LINK
        );
    }

    #[test]
    fn every_unused_byte_must_be_zero() {
        // The PI attribute pointer of Linux 6.14+, the personality, ioprio
        // (an RT class would be honoured for a root VMM), file_index.
        for at in [
            sqe::ATTR_PTR,
            sqe::ATTR_PTR + 7,
            sqe::ATTR_TYPE_MASK,
            sqe::ATTR_TYPE_MASK + 7,
            sqe::PERSONALITY,
            sqe::IOPRIO,
            sqe::IOPRIO + 1,
            sqe::FILE_INDEX + 3,
            sqe::OP_FLAGS,
        ] {
            let mut raw = read(0, 0, 1).to_bytes();
            raw[at] = 1;
            assert_eq!(check(&raw, &res()), Err(Refused(EINVAL)), "byte {at}");
        }
        let rt = Sqe {
            ioprio: 1 << 13,
            ..read(0, 0, 1)
        };
        assert_eq!(run(&rt), Err(Refused(EINVAL)));
    }

    #[test]
    fn nops_and_fsyncs() {
        let nop = Sqe {
            opcode: IORING_OP_NOP,
            flags: IOSQE_FIXED_FILE,
            user_data: 7,
            ..Sqe::default()
        };
        assert_eq!(run(&nop).unwrap(), nop);
        for bad in [
            Sqe { len: 1, ..nop },
            Sqe { addr: 1, ..nop },
            Sqe { fd: 1, ..nop },
            Sqe {
                buf_index: 1,
                ..nop
            },
            Sqe {
                op_flags: IORING_NOP_INJECT_RESULT,
                ..nop
            },
        ] {
            assert_eq!(run(&bad), Err(Refused(EINVAL)), "{bad:?}");
        }
        let fsync = Sqe {
            opcode: IORING_OP_FSYNC,
            flags: IOSQE_FIXED_FILE,
            fd: 0,
            op_flags: IORING_FSYNC_DATASYNC,
            ..Sqe::default()
        };
        assert_eq!(run(&fsync).unwrap(), fsync);
        assert_eq!(run(&Sqe { addr: 8, ..fsync }), Err(Refused(EINVAL)));
        assert_eq!(
            run(&Sqe {
                op_flags: 2,
                ..fsync
            }),
            Err(Refused(EINVAL))
        );
        assert_eq!(run(&Sqe { fd: 16, ..fsync }), Err(Refused(EBADF)));
    }

    #[test]
    fn refusals_are_error_nops_that_keep_links() {
        let mut raw = read(0, 0, 1).to_bytes();
        raw[sqe::FLAGS] |= IOSQE_IO_LINK | 0x80;
        raw[sqe::ATTR_PTR] = 0xff;
        let r = refusal(&raw, EACCES);
        assert_eq!(r.opcode, IORING_OP_NOP);
        assert_eq!(r.flags, IOSQE_FIXED_FILE | IOSQE_IO_LINK);
        assert_eq!(r.len as i32, -EACCES);
        assert_eq!(r.user_data, 42);
        assert_eq!(r.attr_ptr, 0);
        assert!(is_allowed_host_sqe(&r, &res()));
    }

    #[test]
    fn the_fuzz_entry_point_on_random_inputs() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut data = [0u8; 2 + 7 * 17 + 64];
            for b in data.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Often a plausible SQE: an allowed opcode and flags.
            if x.is_multiple_of(2) {
                let at = 2 + usize::from(data[1] % 8) * 17;
                data[at] = ALLOWED_OPCODES[(x >> 8) as usize % 4];
                data[at + 1] = REQUIRED_FLAGS;
                for b in &mut data[at + 40..at + 64] {
                    *b = 0;
                }
                data[at + 2] = 0;
                data[at + 3] = 0;
            }
            fuzz_one(&data);
        }
    }

    #[test]
    fn every_byte_pattern_gives_an_allowed_sqe_or_a_refusal() {
        // A small deterministic sweep (the fuzz target does the rest).
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            let mut raw = read(0, 0, 1).to_bytes();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                raw[(x % 64) as usize] = (x >> 8) as u8;
            }
            match check(&raw, &res()) {
                Ok(h) => assert!(is_allowed_host_sqe(&h, &res())),
                Err(Refused(e)) => {
                    assert!(is_allowed_host_sqe(&refusal(&raw, e), &res()));
                }
            }
        }
    }
}
