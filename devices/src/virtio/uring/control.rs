//! The pv-uring control protocol (docs/pv-uring.md, "Control queue"):
//! parsing and validating `struct pvu_ctrl_req` (plus its extents) into a
//! typed [`Command`], and serializing `struct pvu_ctrl_resp`. Pure: no I/O,
//! no guest memory, fuzzed by `fuzz/fuzz_targets/pv_uring_control.rs`.
//!
//! A [`ParseError`] either maps to a negative errno that the device answers
//! with ([`ParseError::errno`] is `Some`), or means that the chain itself is
//! malformed (too short for its header or its extents) and is completed with
//! used length 0 and no response.

pub use uring_abi::wire::{
    cmd, ARENA_RUN_LEN, EXTENT_LEN, MAX_ARENA_RINGS, MAX_ARENA_RUNS, MAX_EXTENT_LEN,
    PVU_CLONE_DST_REPLACE, PVU_CLONE_SRC_TABLE, PVU_RING_POLLED, REQ_LEN, RESP_LEN,
    RING_LAYOUT_LEN,
};

/// Bytes of one ring id of ARENA_REGISTER_RINGS (le32).
pub const RING_ID_LEN: usize = 4;

/// The device limits a request is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest SQ size (`max_entries`).
    pub max_entries: u32,
    /// Largest buffer table of a ring (`max_buffers`).
    pub max_buffers: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 4096,
            max_buffers: 1024,
        }
    }
}

/// One `struct pvu_extent`: guest-physical memory to register as a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Guest-physical start.
    pub gpa: u64,
    /// Length in bytes (1 ..= 1 GiB, `gpa + len` does not wrap).
    pub len: u64,
}

/// One `struct pvu_arena_run`: arena chunks `chunk..chunk + nr` become the
/// ring's buffers `dst_off..dst_off + nr`. Whether the chunks exist is the
/// executor's check (it knows the arena).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaRun {
    /// First chunk.
    pub chunk: u32,
    /// Chunks (at least 1).
    pub nr: u32,
    /// First buffer index.
    pub dst_off: u32,
}

/// Where CLONE_BUFFERS takes its buffers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneSource {
    /// Another (or the same) guest ring.
    Ring(u32),
    /// An entry of the host buffer table.
    Table(u32),
}

/// A validated control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// CREATE_RING.
    CreateRing {
        /// SQ entries (1 ..= `max_entries`).
        entries: u32,
        /// `PVU_RING_POLLED`: a VMM thread polls the ring's submission slot.
        polled: bool,
    },
    /// DESTROY_RING.
    DestroyRing {
        /// The ring.
        ring: u32,
    },
    /// REGISTER_BUFFERS.
    RegisterBuffers {
        /// The ring.
        ring: u32,
        /// 1 ..= `max_buffers` extents, each checked for length and wrap.
        extents: Vec<Extent>,
    },
    /// UNREGISTER_BUFFERS.
    UnregisterBuffers {
        /// The ring.
        ring: u32,
    },
    /// CLONE_BUFFERS (`struct io_uring_clone_buffers` semantics).
    CloneBuffers {
        /// The destination ring.
        dst: u32,
        /// The source.
        src: CloneSource,
        /// `IORING_REGISTER_DST_REPLACE`.
        replace: bool,
        /// First source buffer.
        src_off: u32,
        /// First destination index.
        dst_off: u32,
        /// Buffers to clone (0: all of the source; then both offsets are 0).
        nr: u32,
    },
    /// PUBLISH_BUFFERS.
    PublishBuffers {
        /// The ring whose buffers are published.
        ring: u32,
    },
    /// UNPUBLISH_BUFFERS.
    UnpublishBuffers {
        /// The table id.
        table: u32,
    },
    /// ARENA_REGISTER.
    ArenaRegister {
        /// The ring (without buffers).
        ring: u32,
        /// 1 ..= [`MAX_ARENA_RUNS`] runs in increasing, disjoint
        /// destination order, ending at most at `max_buffers`.
        runs: Vec<ArenaRun>,
    },
    /// ARENA_REGISTER_RINGS: ARENA_REGISTER of the same runs on every
    /// ring of `rings`, all of them or none.
    ArenaRegisterRings {
        /// 1 ..= [`MAX_ARENA_RINGS`] distinct ring ids (whether they exist
        /// is the executor's check).
        rings: Vec<u32>,
        /// As [`Command::ArenaRegister`]'s.
        runs: Vec<ArenaRun>,
    },
}

impl Command {
    /// The least device-writable space the response of this command needs;
    /// a chain with less is malformed.
    pub fn response_len(&self) -> usize {
        match self {
            Command::CreateRing { .. } => RESP_LEN + RING_LAYOUT_LEN,
            _ => RESP_LEN,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than `struct pvu_ctrl_req` (chain error: no response).
    #[error("request of {0} bytes is shorter than the 32-byte header")]
    Short(usize),
    /// REGISTER_BUFFERS without room for its `nr` extents (chain error).
    #[error("request of {have} bytes cannot hold {nr} extents")]
    ExtentsShort {
        /// Extents announced.
        nr: u32,
        /// Bytes in the request.
        have: usize,
    },
    /// `reserved` is not zero.
    #[error("reserved field is {0:#x}, not 0")]
    Reserved(u32),
    /// An unknown command code.
    #[error("unknown command {0}")]
    UnknownCmd(u32),
    /// Flag bits the command does not define.
    #[error("command {cmd}: unknown flags {flags:#x}")]
    Flags {
        /// The command.
        cmd: u32,
        /// All its flags.
        flags: u32,
    },
    /// CREATE_RING entries out of 1 ..= max_entries.
    #[error("{0} SQ entries out of range")]
    Entries(u32),
    /// REGISTER_BUFFERS extent count out of 1 ..= max_buffers.
    #[error("{0} extents out of range")]
    ExtentCount(u32),
    /// An extent of length 0 or above 1 GiB.
    #[error("extent {index} has length {len:#x}: 1 byte to 1 GiB")]
    ExtentLen {
        /// Its position.
        index: usize,
        /// Its length.
        len: u64,
    },
    /// An extent whose end wraps around the address space.
    #[error("extent {index} wraps around the address space")]
    ExtentWraps {
        /// Its position.
        index: usize,
    },
    /// Two extents of one REGISTER_BUFFERS overlap: each would pin the
    /// same pages again.
    #[error("extents {first} and {second} overlap")]
    ExtentsOverlap {
        /// The one that starts first.
        first: usize,
        /// The one that starts inside it.
        second: usize,
    },
    /// CLONE_BUFFERS with an offset but `nr` 0.
    #[error("clone offsets given with nr 0")]
    OffsetsWithoutCount,
    /// ARENA_REGISTER run count out of 1 ..= 64.
    #[error("{0} arena runs out of range (1 to {MAX_ARENA_RUNS})")]
    ArenaRunCount(u32),
    /// ARENA_REGISTER without room for its runs (chain error).
    #[error("request of {have} bytes cannot hold {nr} arena runs")]
    ArenaRunsShort {
        /// Runs announced.
        nr: u32,
        /// Bytes in the request.
        have: usize,
    },
    /// An arena run that is empty, has reserved bits, starts before the
    /// previous run's end or ends past `max_buffers`.
    #[error(
        "arena run {index} (chunk {chunk}, nr {nr}, dst_off {dst_off}, reserved {reserved:#x}) \
         is empty, out of order, past max_buffers or has reserved bits"
    )]
    ArenaRun {
        /// Its position.
        index: usize,
        /// Its first chunk.
        chunk: u32,
        /// Its length.
        nr: u32,
        /// Its first buffer index.
        dst_off: u32,
        /// Its reserved word.
        reserved: u32,
    },
    /// ARENA_REGISTER_RINGS ring count (`src_id`) out of 1 ..= 256.
    #[error("{0} rings out of range (1 to {MAX_ARENA_RINGS})")]
    ArenaRingCount(u32),
    /// ARENA_REGISTER_RINGS without room for its runs and ring ids (chain
    /// error).
    #[error("request of {have} bytes cannot hold {runs} arena runs and {rings} ring ids")]
    ArenaRingsShort {
        /// Runs announced.
        runs: u32,
        /// Ring ids announced.
        rings: u32,
        /// Bytes in the request.
        have: usize,
    },
    /// ARENA_REGISTER_RINGS naming a ring twice.
    #[error("ring {0} is named twice")]
    ArenaRingTwice(u32),
}

impl ParseError {
    /// The errno the device answers with, or `None` when the chain is
    /// malformed and gets no response.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ParseError::Short(_)
            | ParseError::ExtentsShort { .. }
            | ParseError::ArenaRunsShort { .. }
            | ParseError::ArenaRingsShort { .. } => None,
            ParseError::UnknownCmd(_) => Some(libc::EOPNOTSUPP),
            ParseError::ExtentWraps { .. } => Some(libc::EFAULT),
            _ => Some(libc::EINVAL),
        }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

/// Refuses extents that share a byte: registering them would pin the
/// same guest pages once per extent (1024 extents over one 32 MiB range
/// would pin 32 GiB).
fn check_overlaps(extents: &[Extent]) -> Result<(), ParseError> {
    let mut order: Vec<usize> = (0..extents.len()).collect();
    order.sort_unstable_by_key(|&i| extents[i].gpa);
    for pair in order.windows(2) {
        let (a, b) = (&extents[pair[0]], &extents[pair[1]]);
        // No wrap: parse checked gpa + len for each extent.
        if b.gpa < a.gpa + a.len {
            return Err(ParseError::ExtentsOverlap {
                first: pair[0],
                second: pair[1],
            });
        }
    }
    Ok(())
}

/// Parses and validates one request (`bytes`: the device-readable part of
/// the chain; bytes beyond what the command uses are ignored).
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Command, ParseError> {
    if bytes.len() < REQ_LEN {
        return Err(ParseError::Short(bytes.len()));
    }
    let code = le32(bytes, 0);
    let ring_id = le32(bytes, 4);
    let flags = le32(bytes, 8);
    let nr = le32(bytes, 12);
    let src_id = le32(bytes, 16);
    let src_off = le32(bytes, 20);
    let dst_off = le32(bytes, 24);
    let reserved = le32(bytes, 28);
    if reserved != 0 {
        return Err(ParseError::Reserved(reserved));
    }
    let allowed = match code {
        cmd::CREATE_RING => PVU_RING_POLLED,
        cmd::CLONE_BUFFERS => PVU_CLONE_SRC_TABLE | PVU_CLONE_DST_REPLACE,
        cmd::DESTROY_RING
        | cmd::REGISTER_BUFFERS
        | cmd::UNREGISTER_BUFFERS
        | cmd::PUBLISH_BUFFERS
        | cmd::UNPUBLISH_BUFFERS
        | cmd::ARENA_REGISTER
        | cmd::ARENA_REGISTER_RINGS => 0,
        other => return Err(ParseError::UnknownCmd(other)),
    };
    if flags & !allowed != 0 {
        return Err(ParseError::Flags { cmd: code, flags });
    }
    Ok(match code {
        cmd::CREATE_RING => {
            if nr == 0 || nr > limits.max_entries {
                return Err(ParseError::Entries(nr));
            }
            Command::CreateRing {
                entries: nr,
                polled: flags & PVU_RING_POLLED != 0,
            }
        }
        cmd::DESTROY_RING => Command::DestroyRing { ring: ring_id },
        cmd::REGISTER_BUFFERS => {
            if nr == 0 || nr > limits.max_buffers {
                return Err(ParseError::ExtentCount(nr));
            }
            let need = (nr as usize)
                .checked_mul(EXTENT_LEN)
                .and_then(|n| n.checked_add(REQ_LEN));
            if need.is_none_or(|need| bytes.len() < need) {
                return Err(ParseError::ExtentsShort {
                    nr,
                    have: bytes.len(),
                });
            }
            let mut extents = Vec::with_capacity(nr as usize);
            for index in 0..nr as usize {
                let at = REQ_LEN + index * EXTENT_LEN;
                let (gpa, len) = (le64(bytes, at), le64(bytes, at + 8));
                if len == 0 || len > MAX_EXTENT_LEN {
                    return Err(ParseError::ExtentLen { index, len });
                }
                if gpa.checked_add(len).is_none() {
                    return Err(ParseError::ExtentWraps { index });
                }
                extents.push(Extent { gpa, len });
            }
            check_overlaps(&extents)?;
            Command::RegisterBuffers {
                ring: ring_id,
                extents,
            }
        }
        cmd::UNREGISTER_BUFFERS => Command::UnregisterBuffers { ring: ring_id },
        cmd::CLONE_BUFFERS => {
            if nr == 0 && (src_off != 0 || dst_off != 0) {
                return Err(ParseError::OffsetsWithoutCount);
            }
            Command::CloneBuffers {
                dst: ring_id,
                src: if flags & PVU_CLONE_SRC_TABLE != 0 {
                    CloneSource::Table(src_id)
                } else {
                    CloneSource::Ring(src_id)
                },
                replace: flags & PVU_CLONE_DST_REPLACE != 0,
                src_off,
                dst_off,
                nr,
            }
        }
        cmd::PUBLISH_BUFFERS => Command::PublishBuffers { ring: ring_id },
        cmd::ARENA_REGISTER => Command::ArenaRegister {
            ring: ring_id,
            runs: parse_runs(bytes, nr, limits)?,
        },
        cmd::ARENA_REGISTER_RINGS => {
            let runs = parse_runs(bytes, nr, limits)?;
            Command::ArenaRegisterRings {
                rings: parse_ring_ids(bytes, nr, src_id)?,
                runs,
            }
        }
        _ => Command::UnpublishBuffers { table: src_id },
    })
}

/// ARENA_REGISTER's `nr` runs after the header.
fn parse_runs(bytes: &[u8], nr: u32, limits: &Limits) -> Result<Vec<ArenaRun>, ParseError> {
    if nr == 0 || nr > MAX_ARENA_RUNS {
        return Err(ParseError::ArenaRunCount(nr));
    }
    // nr <= 64: no overflow.
    if bytes.len() < REQ_LEN + nr as usize * ARENA_RUN_LEN {
        return Err(ParseError::ArenaRunsShort {
            nr,
            have: bytes.len(),
        });
    }
    let mut runs = Vec::with_capacity(nr as usize);
    let mut end = 0u32;
    for index in 0..nr as usize {
        let at = REQ_LEN + index * ARENA_RUN_LEN;
        let (chunk, nr, dst_off, reserved) = (
            le32(bytes, at),
            le32(bytes, at + 4),
            le32(bytes, at + 8),
            le32(bytes, at + 12),
        );
        let run_end = dst_off.checked_add(nr);
        match run_end {
            Some(e) if nr > 0 && reserved == 0 && dst_off >= end && e <= limits.max_buffers => {
                end = e;
            }
            _ => {
                return Err(ParseError::ArenaRun {
                    index,
                    chunk,
                    nr,
                    dst_off,
                    reserved,
                })
            }
        }
        runs.push(ArenaRun { chunk, nr, dst_off });
    }
    Ok(runs)
}

/// ARENA_REGISTER_RINGS' `count` ring ids after its `runs` runs (which
/// [`parse_runs`] checked: at most 64).
fn parse_ring_ids(bytes: &[u8], runs: u32, count: u32) -> Result<Vec<u32>, ParseError> {
    if count == 0 || count > MAX_ARENA_RINGS {
        return Err(ParseError::ArenaRingCount(count));
    }
    // runs <= 64, count <= 256: no overflow.
    let at = REQ_LEN + runs as usize * ARENA_RUN_LEN;
    if bytes.len() < at + count as usize * RING_ID_LEN {
        return Err(ParseError::ArenaRingsShort {
            runs,
            rings: count,
            have: bytes.len(),
        });
    }
    let rings: Vec<u32> = (0..count as usize)
        .map(|i| le32(bytes, at + i * RING_ID_LEN))
        .collect();
    let mut sorted = rings.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(ParseError::ArenaRingTwice(w[0]));
    }
    Ok(rings)
}

/// Builds an ARENA_REGISTER_RINGS request (tests and fuzzing).
pub fn encode_arena_register_rings(rings: &[u32], runs: &[ArenaRun]) -> Vec<u8> {
    let mut b = encode_arena_register(0, runs);
    b[0..4].copy_from_slice(&cmd::ARENA_REGISTER_RINGS.to_le_bytes());
    b[16..20].copy_from_slice(&(rings.len() as u32).to_le_bytes());
    for r in rings {
        b.extend_from_slice(&r.to_le_bytes());
    }
    b
}

/// Builds an ARENA_REGISTER request (tests and fuzzing).
pub fn encode_arena_register(ring_id: u32, runs: &[ArenaRun]) -> Vec<u8> {
    let mut b = encode_request(
        cmd::ARENA_REGISTER,
        ring_id,
        0,
        runs.len() as u32,
        0,
        0,
        0,
        &[],
    );
    for r in runs {
        for v in [r.chunk, r.nr, r.dst_off, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    b
}

/// One `struct pvu_ctrl_resp` and the command's output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// 0, or a negative errno.
    pub status: i32,
    /// CREATE: ring id; PUBLISH: table id.
    pub id: u32,
    /// Per command.
    pub value: u64,
    /// The command's output.
    pub output: Vec<u8>,
}

impl Response {
    /// A failure with `errno` (positive, as libc's constants).
    pub fn error(errno: i32) -> Self {
        Self {
            status: -errno,
            ..Self::default()
        }
    }

    /// A success without output.
    pub fn ok() -> Self {
        Self::default()
    }

    /// A success with `value` and no output.
    pub fn value(value: u64) -> Self {
        Self {
            value,
            ..Self::default()
        }
    }

    /// The response as the guest reads it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(RESP_LEN + self.output.len());
        b.extend_from_slice(&self.status.to_le_bytes());
        b.extend_from_slice(&self.id.to_le_bytes());
        b.extend_from_slice(&self.value.to_le_bytes());
        b.extend_from_slice(&self.output);
        b
    }
}

/// Builds a request (tests, fuzzing, and the guest side's documentation).
#[allow(clippy::too_many_arguments)]
pub fn encode_request(
    cmd: u32,
    ring_id: u32,
    flags: u32,
    nr: u32,
    src_id: u32,
    src_off: u32,
    dst_off: u32,
    extents: &[Extent],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(REQ_LEN + extents.len() * EXTENT_LEN);
    for v in [cmd, ring_id, flags, nr, src_id, src_off, dst_off, 0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for e in extents {
        b.extend_from_slice(&e.gpa.to_le_bytes());
        b.extend_from_slice(&e.len.to_le_bytes());
    }
    b
}

/// Fuzzing entry point: the first 4 bytes pick limits, the rest is a
/// request. Checks the invariants of every accepted command; panics on a
/// violation (used by `fuzz/` and a randomized test). Returns whether the
/// request was accepted.
pub fn fuzz_one(data: &[u8]) -> bool {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let limits = Limits {
        max_entries: u32::from(u16::from_le_bytes([byte(0), byte(1)])),
        max_buffers: u32::from(u16::from_le_bytes([byte(2), byte(3) & 0x7])),
    };
    let bytes = data.get(4..).unwrap_or(&[]);
    let result = parse(bytes, &limits);
    let command = match result {
        Ok(c) => c,
        Err(e) => {
            // Every refusal either answers with a real errno or is a chain error.
            if let Some(errno) = e.errno() {
                assert!(errno > 0);
            } else {
                assert!(matches!(
                    e,
                    ParseError::Short(_)
                        | ParseError::ExtentsShort { .. }
                        | ParseError::ArenaRunsShort { .. }
                        | ParseError::ArenaRingsShort { .. }
                ));
            }
            return false;
        }
    };
    assert!(bytes.len() >= REQ_LEN);
    assert_eq!(le32(bytes, 28), 0);
    match &command {
        Command::CreateRing { entries, .. } => {
            assert!(*entries >= 1 && *entries <= limits.max_entries);
        }
        Command::RegisterBuffers { extents, .. } => {
            assert!(!extents.is_empty() && extents.len() <= limits.max_buffers as usize);
            assert!(bytes.len() >= REQ_LEN + extents.len() * EXTENT_LEN);
            for e in extents {
                assert!(e.len >= 1 && e.len <= MAX_EXTENT_LEN);
                assert!(e.gpa.checked_add(e.len).is_some());
            }
            // No two accepted extents share a byte.
            for (i, a) in extents.iter().enumerate() {
                for b in &extents[i + 1..] {
                    assert!(a.gpa + a.len <= b.gpa || b.gpa + b.len <= a.gpa);
                }
            }
        }
        Command::CloneBuffers {
            src_off,
            dst_off,
            nr,
            ..
        } => assert!(*nr != 0 || (*src_off == 0 && *dst_off == 0)),
        Command::ArenaRegisterRings { rings, runs } => {
            assert!(!rings.is_empty() && rings.len() <= MAX_ARENA_RINGS as usize);
            assert!(
                bytes.len() >= REQ_LEN + runs.len() * ARENA_RUN_LEN + rings.len() * RING_ID_LEN
            );
            for (i, r) in rings.iter().enumerate() {
                assert!(!rings[i + 1..].contains(r), "ring {r} twice");
            }
            let mut end = 0u64;
            for r in runs {
                assert!(r.nr >= 1 && u64::from(r.dst_off) >= end);
                end = u64::from(r.dst_off) + u64::from(r.nr);
                assert!(end <= u64::from(limits.max_buffers));
            }
        }
        Command::ArenaRegister { runs, .. } => {
            assert!(!runs.is_empty() && runs.len() <= MAX_ARENA_RUNS as usize);
            let mut end = 0u64;
            for r in runs {
                assert!(r.nr >= 1 && u64::from(r.dst_off) >= end);
                end = u64::from(r.dst_off) + u64::from(r.nr);
                assert!(end <= u64::from(limits.max_buffers));
            }
        }
        _ => {}
    }
    assert!(command.response_len() >= RESP_LEN);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cmd: u32, ring: u32, flags: u32, nr: u32) -> Vec<u8> {
        encode_request(cmd, ring, flags, nr, 0, 0, 0, &[])
    }

    fn p(b: &[u8]) -> Result<Command, ParseError> {
        parse(b, &Limits::default())
    }

    #[test]
    fn arena_register_parses_and_checks_its_runs() {
        let run = |chunk, nr, dst_off| ArenaRun { chunk, nr, dst_off };
        let runs = [run(4, 2, 0), run(0, 1, 5)];
        assert_eq!(
            p(&encode_arena_register(3, &runs)),
            Ok(Command::ArenaRegister {
                ring: 3,
                runs: runs.to_vec()
            })
        );
        for bad in [
            vec![run(0, 0, 0)],
            vec![run(0, 2, 4), run(0, 1, 5)],
            vec![run(0, 1, 1023), run(0, 1, 1024)],
            vec![run(0, 2, u32::MAX)],
        ] {
            let e = p(&encode_arena_register(0, &bad)).unwrap_err();
            assert!(matches!(e, ParseError::ArenaRun { .. }), "{bad:?}: {e}");
            assert_eq!(e.errno(), Some(libc::EINVAL));
        }
        let mut b = encode_arena_register(0, &[run(0, 1, 0)]);
        b[REQ_LEN + 12] = 1;
        assert!(matches!(
            p(&b),
            Err(ParseError::ArenaRun { reserved: 1, .. })
        ));
        for n in [0usize, 65] {
            let many: Vec<ArenaRun> = (0..n as u32).map(|i| run(0, 1, i)).collect();
            assert_eq!(
                p(&encode_arena_register(0, &many)),
                Err(ParseError::ArenaRunCount(n as u32))
            );
        }
        // Too short for its runs: a chain error (no response).
        let b = encode_arena_register(0, &runs);
        let e = p(&b[..b.len() - 1]).unwrap_err();
        assert_eq!(e.errno(), None);
        assert_eq!(
            p(&req(cmd::ARENA_REGISTER, 0, 1, 1)),
            Err(ParseError::Flags {
                cmd: cmd::ARENA_REGISTER,
                flags: 1
            })
        );
    }

    #[test]
    fn arena_register_rings_parses_and_checks_its_rings() {
        let run = |chunk, nr, dst_off| ArenaRun { chunk, nr, dst_off };
        let runs = [run(4, 2, 0), run(0, 1, 5)];
        assert_eq!(
            p(&encode_arena_register_rings(&[7, 0, 3], &runs)),
            Ok(Command::ArenaRegisterRings {
                rings: vec![7, 0, 3],
                runs: runs.to_vec()
            })
        );
        let max: Vec<u32> = (0..MAX_ARENA_RINGS).collect();
        assert!(p(&encode_arena_register_rings(&max, &runs)).is_ok());
        // 0 and 257 rings; a ring twice.
        assert_eq!(
            p(&encode_arena_register_rings(&[], &runs)),
            Err(ParseError::ArenaRingCount(0))
        );
        let many: Vec<u32> = (0..=MAX_ARENA_RINGS).collect();
        let e = p(&encode_arena_register_rings(&many, &runs)).unwrap_err();
        assert_eq!(e, ParseError::ArenaRingCount(257));
        assert_eq!(e.errno(), Some(libc::EINVAL));
        let e = p(&encode_arena_register_rings(&[2, 5, 2], &runs)).unwrap_err();
        assert_eq!(e, ParseError::ArenaRingTwice(2));
        assert_eq!(e.errno(), Some(libc::EINVAL));
        // The runs are checked as ARENA_REGISTER's.
        let e = p(&encode_arena_register_rings(&[1], &[run(0, 0, 0)])).unwrap_err();
        assert!(matches!(e, ParseError::ArenaRun { .. }), "{e}");
        // Too short for its ring ids: a chain error (no response).
        let b = encode_arena_register_rings(&[1, 2], &runs);
        let e = p(&b[..b.len() - 1]).unwrap_err();
        assert!(
            matches!(e, ParseError::ArenaRingsShort { rings: 2, .. }),
            "{e}"
        );
        assert_eq!(e.errno(), None);
        let mut b = encode_arena_register_rings(&[1], &runs);
        b[8] = 1;
        assert!(matches!(p(&b), Err(ParseError::Flags { .. })));
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(
            p(&req(cmd::CREATE_RING, 0, 0, 8)),
            Ok(Command::CreateRing {
                entries: 8,
                polled: false
            })
        );
        assert_eq!(
            p(&req(cmd::CREATE_RING, 0, PVU_RING_POLLED, 4096)),
            Ok(Command::CreateRing {
                entries: 4096,
                polled: true
            })
        );
        assert_eq!(
            p(&req(cmd::DESTROY_RING, 3, 0, 0)),
            Ok(Command::DestroyRing { ring: 3 })
        );
        let ext = [
            Extent {
                gpa: 0x1000,
                len: 0x2000,
            },
            Extent {
                gpa: 0x10_0000,
                len: 1 << 30,
            },
        ];
        let b = encode_request(cmd::REGISTER_BUFFERS, 2, 0, 2, 0, 0, 0, &ext);
        assert_eq!(
            p(&b),
            Ok(Command::RegisterBuffers {
                ring: 2,
                extents: ext.to_vec()
            })
        );
        assert_eq!(
            p(&req(cmd::UNREGISTER_BUFFERS, 5, 0, 0)),
            Ok(Command::UnregisterBuffers { ring: 5 })
        );
        let b = encode_request(cmd::CLONE_BUFFERS, 1, 3, 4, 7, 2, 6, &[]);
        assert_eq!(
            p(&b),
            Ok(Command::CloneBuffers {
                dst: 1,
                src: CloneSource::Table(7),
                replace: true,
                src_off: 2,
                dst_off: 6,
                nr: 4
            })
        );
        let b = encode_request(cmd::CLONE_BUFFERS, 1, 0, 0, 9, 0, 0, &[]);
        assert_eq!(
            p(&b),
            Ok(Command::CloneBuffers {
                dst: 1,
                src: CloneSource::Ring(9),
                replace: false,
                src_off: 0,
                dst_off: 0,
                nr: 0
            })
        );
        assert_eq!(
            p(&req(cmd::PUBLISH_BUFFERS, 4, 0, 0)),
            Ok(Command::PublishBuffers { ring: 4 })
        );
        let b = encode_request(cmd::UNPUBLISH_BUFFERS, 0, 0, 0, 11, 0, 0, &[]);
        assert_eq!(p(&b), Ok(Command::UnpublishBuffers { table: 11 }));
    }

    #[test]
    fn short_requests_are_chain_errors() {
        for n in [0, 1, 16, 31] {
            let e = p(&req(cmd::CREATE_RING, 0, 0, 8)[..n]).unwrap_err();
            assert_eq!(e, ParseError::Short(n));
            assert_eq!(e.errno(), None);
        }
        // Extents announced but not there, or only partly.
        let ext = [Extent { gpa: 0, len: 4096 }];
        let mut b = encode_request(cmd::REGISTER_BUFFERS, 0, 0, 2, 0, 0, 0, &ext);
        assert_eq!(p(&b), Err(ParseError::ExtentsShort { nr: 2, have: 48 }));
        b.truncate(40);
        let e = p(&b).unwrap_err();
        assert!(matches!(e, ParseError::ExtentsShort { nr: 2, .. }));
        assert_eq!(e.errno(), None);
    }

    #[test]
    fn reserved_unknown_and_flags() {
        let mut b = req(cmd::DESTROY_RING, 0, 0, 0);
        b[28] = 1;
        assert_eq!(p(&b), Err(ParseError::Reserved(1)));
        assert_eq!(ParseError::Reserved(1).errno(), Some(libc::EINVAL));
        for code in [0, 10, 0xffff_ffff] {
            let e = p(&req(code, 0, 0, 0)).unwrap_err();
            assert_eq!(e, ParseError::UnknownCmd(code));
            assert_eq!(e.errno(), Some(libc::EOPNOTSUPP));
        }
        for (code, bad) in [
            (cmd::CREATE_RING, 2),
            (cmd::CREATE_RING, 0x8000_0001),
            (cmd::DESTROY_RING, 1),
            (cmd::REGISTER_BUFFERS, 1),
            (cmd::UNREGISTER_BUFFERS, 4),
            (cmd::CLONE_BUFFERS, 4),
            (cmd::PUBLISH_BUFFERS, 1),
            (cmd::UNPUBLISH_BUFFERS, 1),
            (cmd::ARENA_REGISTER_RINGS, 2),
        ] {
            let e = p(&req(code, 0, bad, 1)).unwrap_err();
            assert_eq!(
                e,
                ParseError::Flags {
                    cmd: code,
                    flags: bad
                }
            );
            assert_eq!(e.errno(), Some(libc::EINVAL));
        }
    }

    #[test]
    fn counts_out_of_range() {
        for nr in [0, 4097, u32::MAX] {
            assert_eq!(
                p(&req(cmd::CREATE_RING, 0, 0, nr)),
                Err(ParseError::Entries(nr))
            );
        }
        for nr in [0, 1025, u32::MAX] {
            let e = p(&req(cmd::REGISTER_BUFFERS, 0, 0, nr)).unwrap_err();
            assert_eq!(e, ParseError::ExtentCount(nr));
            assert_eq!(e.errno(), Some(libc::EINVAL));
        }
        // Smaller device limits apply.
        let small = Limits {
            max_entries: 8,
            max_buffers: 1,
        };
        assert!(parse(&req(cmd::CREATE_RING, 0, 0, 9), &small).is_err());
        assert!(parse(&req(cmd::REGISTER_BUFFERS, 0, 0, 2), &small).is_err());
    }

    #[test]
    fn bad_extents() {
        let one = |gpa, len| {
            encode_request(
                cmd::REGISTER_BUFFERS,
                0,
                0,
                2,
                0,
                0,
                0,
                &[Extent { gpa: 0, len: 4096 }, Extent { gpa, len }],
            )
        };
        assert_eq!(
            p(&one(0x1000, 0)),
            Err(ParseError::ExtentLen { index: 1, len: 0 })
        );
        assert_eq!(
            p(&one(0x1000, (1 << 30) + 1)),
            Err(ParseError::ExtentLen {
                index: 1,
                len: (1 << 30) + 1
            })
        );
        let e = p(&one(u64::MAX - 0xfff, 0x1000)).unwrap_err();
        assert_eq!(e, ParseError::ExtentWraps { index: 1 });
        assert_eq!(e.errno(), Some(libc::EFAULT));
        // Ending exactly at the top is not a wrap.
        assert!(p(&one(u64::MAX - 0x1000, 0x1000)).is_ok());
        // Overlaps, in either order; touching is fine.
        assert_eq!(
            p(&one(0xfff, 2)),
            Err(ParseError::ExtentsOverlap {
                first: 0,
                second: 1
            })
        );
        assert_eq!(p(&one(0xfff, 2)).unwrap_err().errno(), Some(libc::EINVAL));
        assert!(p(&one(0x1000, 0x1000)).is_ok());
        let inside_first = encode_request(
            cmd::REGISTER_BUFFERS,
            0,
            0,
            2,
            0,
            0,
            0,
            &[
                Extent {
                    gpa: 0x10_0000,
                    len: 0x20_0000,
                },
                Extent {
                    gpa: 0,
                    len: 0x10_0001,
                },
            ],
        );
        assert!(matches!(
            p(&inside_first),
            Err(ParseError::ExtentsOverlap { .. })
        ));
    }

    #[test]
    fn clone_offsets_need_a_count() {
        for (so, d) in [(1, 0), (0, 1), (5, 5)] {
            let b = encode_request(cmd::CLONE_BUFFERS, 0, 0, 0, 1, so, d, &[]);
            let e = p(&b).unwrap_err();
            assert_eq!(e, ParseError::OffsetsWithoutCount);
            assert_eq!(e.errno(), Some(libc::EINVAL));
        }
    }

    #[test]
    fn extra_bytes_are_ignored() {
        let mut b = req(cmd::DESTROY_RING, 1, 0, 0);
        b.extend_from_slice(&[0xff; 100]);
        assert_eq!(p(&b), Ok(Command::DestroyRing { ring: 1 }));
    }

    #[test]
    fn response_layout() {
        let r = Response::error(libc::ENOENT);
        assert_eq!(r.to_bytes(), {
            let mut v = (-libc::ENOENT).to_le_bytes().to_vec();
            v.extend_from_slice(&[0; 12]);
            v
        });
        let r = Response {
            id: 1,
            ..Response::value(0x1122_3344_5566_7788)
        };
        let b = r.to_bytes();
        assert_eq!(b.len(), 16);
        assert_eq!(&b[0..4], &[0; 4]);
        assert_eq!(&b[4..8], &[1, 0, 0, 0]);
        assert_eq!(
            u64::from_le_bytes(b[8..16].try_into().unwrap()),
            0x1122_3344_5566_7788
        );
        assert_eq!(
            Command::CreateRing {
                entries: 1,
                polled: false
            }
            .response_len(),
            48
        );
        assert_eq!(
            Command::RegisterBuffers {
                ring: 0,
                extents: vec![Extent { gpa: 0, len: 1 }; 3]
            }
            .response_len(),
            16
        );
        assert_eq!(Command::DestroyRing { ring: 0 }.response_len(), 16);
    }

    /// A bounded randomized run of the fuzz target (fixed seed, so it is
    /// reproducible); the coverage-guided version is `fuzz/`.
    #[test]
    fn randomized_requests_keep_the_invariants() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut accepted = [0u32; 10];
        for _ in 0..200_000 {
            let n = (next() % 100) as usize;
            let mut data: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            // Bias toward plausible requests: small commands, counts and
            // flags, zero reserved, limits that let some through.
            if data.len() >= 36 {
                data[0] = 0xff;
                data[1] = 0x0f;
                data[2] = 0xff;
                data[3] = 0x03;
                data[4] = (next() % 10) as u8;
                data[5..8].fill(0);
                if next() % 2 == 0 {
                    data[12..16].fill(0);
                }
                data[16] = (next() % 4) as u8;
                data[17..20].fill(0);
                for b in &mut data[20..32] {
                    if next() % 3 != 0 {
                        *b = 0;
                    }
                }
                if next() % 8 != 0 {
                    data[32..36].fill(0);
                }
                // Extent lengths mostly below 1 GiB.
                for k in 0..4 {
                    let hi = 36 + 16 * k + 11;
                    if hi + 5 <= data.len() && next() % 4 != 0 {
                        data[hi..hi + 5].fill(0);
                    }
                }
                // Arena runs mostly well formed (1 chunk each, ascending,
                // reserved 0), and ARENA_REGISTER_RINGS' count mostly 1..3.
                if matches!(data[4], 8 | 9) && next() % 2 == 0 {
                    for k in 0..usize::from(data[16]) {
                        let at = 36 + 16 * k;
                        if at + 16 <= data.len() {
                            data[at + 4..at + 16].fill(0);
                            data[at + 4] = 1;
                            data[at + 8] = k as u8;
                        }
                    }
                    data[20] = 1 + (next() % 3) as u8;
                    data[21..24].fill(0);
                }
            }
            let ok = fuzz_one(&data);
            if ok {
                accepted[usize::from(data[4] % 10)] += 1;
            }
        }
        for (code, n) in accepted.iter().enumerate().skip(1) {
            assert!(
                *n > 10,
                "command {code} accepted only {n} times: the generator is too weak"
            );
        }
    }
}
