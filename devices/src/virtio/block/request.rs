//! Parsing one virtio-blk request from its descriptor chain. Pure: no guest
//! memory, no file; the header bytes come from a closure. Every check on
//! guest-controlled values of a request is made here, in one place, and the
//! device acts only on a [`Request`] this returns.
//!
//! The layout accepted (virtio 1.2, 5.2.6; what Linux sends): the 16-byte
//! header alone in the first, device-readable descriptor; the data in the
//! descriptors between; the status in the last, device-writable descriptor
//! (its last byte). Header and data sharing a descriptor is not supported.

use thiserror::Error;

/// Bytes per virtio-blk sector.
pub const SECTOR_SIZE: u64 = 512;
/// log2 of [`SECTOR_SIZE`].
pub const SECTOR_SHIFT: u32 = 9;
/// Length of the request header (`struct virtio_blk_outhdr`).
pub const HEADER_LEN: u32 = 16;
/// Length of one discard / write-zeroes segment.
pub const SEGMENT_LEN: u64 = 16;
/// Length of the device ID answered to `GET_ID`.
pub const ID_BYTES: usize = 20;

/// Request types.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// See [`VIRTIO_BLK_T_IN`].
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// See [`VIRTIO_BLK_T_IN`].
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// See [`VIRTIO_BLK_T_IN`].
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// See [`VIRTIO_BLK_T_IN`].
pub const VIRTIO_BLK_T_DISCARD: u32 = 11;
/// See [`VIRTIO_BLK_T_IN`].
pub const VIRTIO_BLK_T_WRITE_ZEROES: u32 = 13;

/// Status: success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Status: I/O error (also every malformed request).
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Status: unsupported request.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP`.
pub const FLAG_UNMAP: u32 = 1;

pub use crate::virtio::Desc;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Read sectors into the data segments.
    Read,
    /// Write the data segments to sectors.
    Write,
    /// Make written data durable.
    Flush,
    /// Write the device ID (up to 20 bytes) into the data segments.
    GetId,
    /// Discard the ranges of the segment in the data.
    Discard,
    /// Zero the ranges of the segment in the data.
    WriteZeroes,
}

/// A guest buffer: a range of guest-physical addresses that does not wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical start.
    pub addr: u64,
    /// Length in bytes (never zero).
    pub len: u32,
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub kind: RequestKind,
    /// First sector (Read, Write; zero otherwise).
    pub sector: u64,
    /// Data segments, in order.
    pub data: Vec<Segment>,
    /// Sum of the data segments' lengths.
    pub data_len: u64,
    /// Guest-physical address of the status byte.
    pub status_addr: u64,
}

/// What the parser knows about the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Capacity in sectors.
    pub capacity: u64,
    /// The disk is read-only.
    pub read_only: bool,
    /// Discard is offered.
    pub discard: bool,
    /// Write-zeroes is offered.
    pub write_zeroes: bool,
    /// Most data descriptors in one request (the `seg_max` announced).
    pub max_segments: usize,
}

/// Why a request is refused. Each maps to the status the guest gets.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum RequestError {
    /// Fewer than two descriptors (header and status).
    #[error("chain of {0} descriptors is too short")]
    ChainTooShort(usize),
    /// The last descriptor is not device-writable or is empty.
    #[error("no device-writable status descriptor at the end of the chain")]
    NoStatus,
    /// The header descriptor is device-writable.
    #[error("the header descriptor is device-writable")]
    HeaderWriteOnly,
    /// The header descriptor is shorter than 16 bytes.
    #[error("the header descriptor has {0} bytes, less than 16")]
    HeaderTooShort(u32),
    /// The header could not be read from guest memory.
    #[error("the header at {0:#x} is not in guest RAM")]
    HeaderUnreadable(u64),
    /// A descriptor's range wraps around the address space.
    #[error("descriptor at {addr:#x} of {len} bytes wraps around")]
    AddressOverflow {
        /// The descriptor's guest address.
        addr: u64,
        /// Its length in bytes.
        len: u32,
    },
    /// A data descriptor of length zero.
    #[error("data descriptor {0} is empty")]
    EmptyDescriptor(usize),
    /// A data descriptor with the wrong direction for the request type.
    #[error("data descriptor {0} has the wrong direction")]
    WrongDirection(usize),
    /// A request that needs data has none.
    #[error("request without data")]
    NoData,
    /// More data descriptors than the device announced.
    #[error("{0} data descriptors, more than the device's limit")]
    TooManySegments(usize),
    /// Read or write length that is not a whole number of sectors.
    #[error("data length {0} is not a multiple of 512")]
    NotSectorMultiple(u64),
    /// A discard/write-zeroes payload that is not whole segments.
    #[error("segment data of {0} bytes is not a multiple of 16")]
    BadSegmentLength(u64),
    /// Sectors beyond the end of the disk (or an overflowing range).
    #[error("sectors {sector}+{sectors} are beyond the capacity of {capacity}")]
    OutOfRange {
        /// The request's first sector.
        sector: u64,
        /// Its sector count.
        sectors: u64,
        /// The disk's capacity in sectors.
        capacity: u64,
    },
    /// Device-writable buffers overlap each other or the header/status.
    #[error("device-writable buffers overlap")]
    Overlap,
    /// A modifying request to a read-only disk.
    #[error("write to a read-only disk")]
    ReadOnly,
    /// A request type the device does not offer.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// Reserved flags in a discard/write-zeroes segment, or unmap on discard.
    #[error("unsupported segment flags {0:#x}")]
    UnsupportedFlags(u32),
}

impl RequestError {
    /// The status byte the guest gets for this error.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) | RequestError::UnsupportedFlags(_) => VIRTIO_BLK_S_UNSUPP,
            _ => VIRTIO_BLK_S_IOERR,
        }
    }
}

/// A refused request: the error, and where its status byte goes if the
/// chain has a usable status descriptor (else the request is completed with
/// no bytes written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Why.
    pub error: RequestError,
    /// The status byte's guest address, if there is one.
    pub status_addr: Option<u64>,
}

fn end_of(addr: u64, len: u32) -> Result<u64, RequestError> {
    addr.checked_add(u64::from(len))
        .ok_or(RequestError::AddressOverflow { addr, len })
}

/// Parses a request from its descriptors. `read_header` reads the 16
/// header bytes at a guest address (None: not in guest RAM).
pub fn parse(
    descs: &[Desc],
    read_header: impl FnOnce(u64) -> Option<[u8; 16]>,
    limits: &DeviceLimits,
) -> Result<Request, Rejected> {
    let status_addr = status_of(descs);
    parse_with_status(descs, read_header, limits, status_addr).map_err(|error| Rejected {
        error,
        status_addr: status_addr.ok(),
    })
}

/// The address of the status byte: the last byte of the last descriptor,
/// which must be device-writable.
fn status_of(descs: &[Desc]) -> Result<u64, RequestError> {
    let last = descs.last().ok_or(RequestError::ChainTooShort(0))?;
    if descs.len() < 2 || !last.write_only || last.len == 0 {
        return Err(RequestError::NoStatus);
    }
    end_of(last.addr, last.len).map(|end| end - 1)
}

fn parse_with_status(
    descs: &[Desc],
    read_header: impl FnOnce(u64) -> Option<[u8; 16]>,
    limits: &DeviceLimits,
    status_addr: Result<u64, RequestError>,
) -> Result<Request, RequestError> {
    if descs.len() < 2 {
        return Err(RequestError::ChainTooShort(descs.len()));
    }
    let status_addr = status_addr?;
    let header = descs[0];
    if header.write_only {
        return Err(RequestError::HeaderWriteOnly);
    }
    if header.len < HEADER_LEN {
        return Err(RequestError::HeaderTooShort(header.len));
    }
    end_of(header.addr, header.len)?;
    let bytes = read_header(header.addr).ok_or(RequestError::HeaderUnreadable(header.addr))?;
    let req_type = u32::from_le_bytes(bytes[0..4].try_into().unwrap_or_default());
    let sector = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
    let (kind, device_writes) = kind_of(req_type, limits)?;

    let data_descs = &descs[1..descs.len() - 1];
    if kind == RequestKind::Flush {
        // A flush carries no data; descriptors in between are ignored.
        return Ok(Request {
            kind,
            sector: 0,
            data: Vec::new(),
            data_len: 0,
            status_addr,
        });
    }
    let (data, data_len) = segments(data_descs, device_writes, limits)?;
    check_overlap(&header, &data, device_writes, status_addr)?;
    let sector = check_length(kind, sector, data_len, limits)?;
    Ok(Request {
        kind,
        sector,
        data,
        data_len,
        status_addr,
    })
}

/// What request type `req_type` asks for, and whether the device writes
/// its data; refused when the disk does not offer it.
fn kind_of(req_type: u32, limits: &DeviceLimits) -> Result<(RequestKind, bool), RequestError> {
    let (kind, device_writes) = match req_type {
        VIRTIO_BLK_T_IN => (RequestKind::Read, true),
        VIRTIO_BLK_T_OUT => (RequestKind::Write, false),
        VIRTIO_BLK_T_FLUSH => (RequestKind::Flush, true),
        VIRTIO_BLK_T_GET_ID => (RequestKind::GetId, true),
        VIRTIO_BLK_T_DISCARD if limits.discard => (RequestKind::Discard, false),
        VIRTIO_BLK_T_WRITE_ZEROES if limits.write_zeroes => (RequestKind::WriteZeroes, false),
        other => return Err(RequestError::Unsupported(other)),
    };
    if limits.read_only
        && matches!(
            kind,
            RequestKind::Write | RequestKind::Discard | RequestKind::WriteZeroes
        )
    {
        return Err(RequestError::ReadOnly);
    }
    Ok((kind, device_writes))
}

/// The data descriptors (`data_descs`, numbered from 1 in errors) as
/// segments, and their total length: each non-empty, not wrapping, in the
/// request's direction, at most `max_segments` of them.
fn segments(
    data_descs: &[Desc],
    device_writes: bool,
    limits: &DeviceLimits,
) -> Result<(Vec<Segment>, u64), RequestError> {
    if data_descs.len() > limits.max_segments {
        return Err(RequestError::TooManySegments(data_descs.len()));
    }
    if data_descs.is_empty() {
        return Err(RequestError::NoData);
    }
    let mut data = Vec::with_capacity(data_descs.len());
    let mut data_len = 0u64;
    for (i, d) in data_descs.iter().enumerate() {
        if d.len == 0 {
            return Err(RequestError::EmptyDescriptor(i + 1));
        }
        if d.write_only != device_writes {
            return Err(RequestError::WrongDirection(i + 1));
        }
        end_of(d.addr, d.len)?;
        // At most 2^16 descriptors of < 2^32 bytes: cannot overflow a u64.
        data_len += u64::from(d.len);
        data.push(Segment {
            addr: d.addr,
            len: d.len,
        });
    }
    Ok((data, data_len))
}

/// Checks the data length against the request kind (whole sectors inside
/// the disk for reads and writes, one segment for discard and
/// write-zeroes); returns the request's first sector.
fn check_length(
    kind: RequestKind,
    sector: u64,
    data_len: u64,
    limits: &DeviceLimits,
) -> Result<u64, RequestError> {
    match kind {
        RequestKind::Read | RequestKind::Write => {
            if !data_len.is_multiple_of(SECTOR_SIZE) {
                return Err(RequestError::NotSectorMultiple(data_len));
            }
            check_range(sector, data_len >> SECTOR_SHIFT, limits.capacity)?;
            Ok(sector)
        }
        RequestKind::Discard | RequestKind::WriteZeroes => {
            if !data_len.is_multiple_of(SEGMENT_LEN) {
                return Err(RequestError::BadSegmentLength(data_len));
            }
            // One segment per request is announced (max_*_seg = 1).
            if data_len != SEGMENT_LEN {
                return Err(RequestError::TooManySegments(
                    (data_len / SEGMENT_LEN) as usize,
                ));
            }
            Ok(0)
        }
        _ => Ok(0),
    }
}

/// Checks that `sectors` sectors from `sector` lie inside the disk.
pub fn check_range(sector: u64, sectors: u64, capacity: u64) -> Result<(), RequestError> {
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(RequestError::OutOfRange {
            sector,
            sectors,
            capacity,
        }),
    }
}

/// Device-writable ranges must overlap nothing else in the request (the
/// host would write them concurrently, or over the header/status).
fn check_overlap(
    header: &Desc,
    data: &[Segment],
    data_writable: bool,
    status_addr: u64,
) -> Result<(), RequestError> {
    // (start, end, writable)
    let mut ranges: Vec<(u64, u64, bool)> = Vec::with_capacity(data.len() + 2);
    ranges.push((header.addr, header.addr + u64::from(HEADER_LEN), false));
    ranges.push((status_addr, status_addr + 1, true));
    for s in data {
        ranges.push((s.addr, s.addr + u64::from(s.len), data_writable));
    }
    ranges.sort_unstable();
    let (mut max_end_any, mut max_end_writable) = (0u64, 0u64);
    for (start, end, writable) in ranges {
        if start < max_end_writable || (writable && start < max_end_any) {
            return Err(RequestError::Overlap);
        }
        max_end_any = max_end_any.max(end);
        if writable {
            max_end_writable = max_end_writable.max(end);
        }
    }
    Ok(())
}

/// One parsed discard / write-zeroes segment, in bytes of the disk file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZeroRange {
    /// Byte offset.
    pub offset: u64,
    /// Byte length (never zero).
    pub len: u64,
    /// Deallocate (write-zeroes with the unmap flag, or discard).
    pub unmap: bool,
}

/// Parses a `struct virtio_blk_discard_write_zeroes` segment.
pub fn parse_zero_segment(
    bytes: [u8; 16],
    kind: RequestKind,
    capacity: u64,
    max_sectors: u32,
) -> Result<ZeroRange, RequestError> {
    let sector = u64::from_le_bytes(bytes[0..8].try_into().unwrap_or_default());
    let sectors = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    let flags = u32::from_le_bytes(bytes[12..16].try_into().unwrap_or_default());
    let unmap = match kind {
        RequestKind::Discard if flags == 0 => true,
        RequestKind::WriteZeroes if flags & !FLAG_UNMAP == 0 => flags & FLAG_UNMAP != 0,
        _ => return Err(RequestError::UnsupportedFlags(flags)),
    };
    if sectors == 0 || sectors > max_sectors {
        return Err(RequestError::OutOfRange {
            sector,
            sectors: u64::from(sectors),
            capacity,
        });
    }
    check_range(sector, u64::from(sectors), capacity)?;
    Ok(ZeroRange {
        offset: sector << SECTOR_SHIFT,
        len: u64::from(sectors) << SECTOR_SHIFT,
        unmap,
    })
}

/// Fuzzing entry point: decodes `data` into descriptors, a header and
/// limits, parses, and checks the invariants of every accepted request.
/// Panics on a violated invariant (used by `fuzz/` and a randomized test).
pub fn fuzz_one(data: &[u8]) -> bool {
    fuzz_kind(data).is_some()
}

/// [`fuzz_one`], saying what kind of request was accepted (None: refused).
fn fuzz_kind(data: &[u8]) -> Option<RequestKind> {
    let mut it = data.chunks(13);
    let first = it.next()?;
    let byte = |i: usize| first.get(i).copied().unwrap_or(0);
    let limits = DeviceLimits {
        capacity: u64::from_le_bytes([byte(0), byte(1), byte(2), 0, 0, 0, 0, 0]),
        read_only: byte(3) & 1 != 0,
        discard: byte(3) & 2 != 0,
        write_zeroes: byte(3) & 4 != 0,
        max_segments: usize::from(byte(4)),
    };
    let mut header = [0u8; 16];
    header[0] = byte(5) % 16;
    header[8..12].copy_from_slice(&[byte(6), byte(7), byte(8), byte(9)]);
    header[15] = byte(10) & 0x80;
    let header_ok = byte(11) & 1 == 0;
    let descs: Vec<Desc> = it
        .map(|c| {
            let mut b = [0u8; 13];
            b[..c.len()].copy_from_slice(c);
            Desc {
                addr: u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
                len: u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()),
                write_only: b[12] & 1 != 0,
            }
        })
        .collect();
    let Ok(req) = parse(&descs, |_| header_ok.then_some(header), &limits) else {
        return None;
    };
    assert!(descs.len() >= 2);
    let status = descs[descs.len() - 1];
    assert!(status.write_only && status.len > 0);
    assert!(!descs[0].write_only && descs[0].len >= HEADER_LEN);
    let mut sum = 0u64;
    for seg in &req.data {
        assert!(seg.len > 0);
        assert!(seg.addr.checked_add(u64::from(seg.len)).is_some());
        sum += u64::from(seg.len);
    }
    assert_eq!(sum, req.data_len);
    assert!(req.data.len() <= limits.max_segments || req.kind == RequestKind::Flush);
    match req.kind {
        RequestKind::Read | RequestKind::Write => {
            assert!(req.data_len.is_multiple_of(SECTOR_SIZE) && req.data_len > 0);
            let end = req.sector.checked_add(req.data_len / SECTOR_SIZE);
            assert!(end.is_some_and(|e| e <= limits.capacity));
            assert!(!(limits.read_only && req.kind == RequestKind::Write));
        }
        RequestKind::Discard | RequestKind::WriteZeroes => {
            assert!(!limits.read_only);
            assert_eq!(req.data_len, SEGMENT_LEN);
        }
        RequestKind::Flush | RequestKind::GetId => {}
    }
    // The kind is the header's type; discard and write-zeroes only when the
    // device offers them (a guest may send them anyway).
    let expected = match u32::from(header[0]) {
        VIRTIO_BLK_T_IN => Some(RequestKind::Read),
        VIRTIO_BLK_T_OUT => Some(RequestKind::Write),
        VIRTIO_BLK_T_FLUSH => Some(RequestKind::Flush),
        VIRTIO_BLK_T_GET_ID => Some(RequestKind::GetId),
        VIRTIO_BLK_T_DISCARD if limits.discard => Some(RequestKind::Discard),
        VIRTIO_BLK_T_WRITE_ZEROES if limits.write_zeroes => Some(RequestKind::WriteZeroes),
        _ => None,
    };
    assert_eq!(Some(req.kind), expected, "type {} {limits:?}", header[0]);
    // Data direction: the device writes only into the buffers of a read or
    // a GET_ID, and only reads those of the others. Each data segment is
    // its descriptor, whose direction must be the one the type implies, or
    // the device would write into memory the guest gave it to read.
    if req.kind != RequestKind::Flush {
        let data_descs = &descs[1..descs.len() - 1];
        assert_eq!(req.data.len(), data_descs.len());
        let device_writes = matches!(req.kind, RequestKind::Read | RequestKind::GetId);
        for (seg, d) in req.data.iter().zip(data_descs) {
            assert_eq!((seg.addr, seg.len), (d.addr, d.len));
            assert_eq!(d.write_only, device_writes, "{:?}: {d:?}", req.kind);
        }
    }
    Some(req.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DeviceLimits = DeviceLimits {
        capacity: 2048,
        read_only: false,
        discard: true,
        write_zeroes: true,
        max_segments: 8,
    };

    fn header(t: u32, sector: u64) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&t.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        h
    }

    fn d(addr: u64, len: u32, write_only: bool) -> Desc {
        Desc {
            addr,
            len,
            write_only,
        }
    }

    fn hdr() -> Desc {
        d(0x1000, 16, false)
    }
    fn st() -> Desc {
        d(0x2000, 1, true)
    }

    fn run(descs: &[Desc], h: [u8; 16], limits: &DeviceLimits) -> Result<Request, Rejected> {
        parse(descs, |_| Some(h), limits)
    }

    fn err(descs: &[Desc], h: [u8; 16]) -> RequestError {
        run(descs, h, &LIMITS).unwrap_err().error
    }

    #[test]
    fn read_write_flush_get_id_parse() {
        let r = run(
            &[hdr(), d(0x10000, 4096, true), d(0x20000, 512, true), st()],
            header(VIRTIO_BLK_T_IN, 7),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(r.kind, RequestKind::Read);
        assert_eq!(r.sector, 7);
        assert_eq!(r.data_len, 4608);
        assert_eq!(r.status_addr, 0x2000);
        assert_eq!(r.data.len(), 2);

        let r = run(
            &[hdr(), d(0x10000, 512, false), d(0x3000, 4, true)],
            header(VIRTIO_BLK_T_OUT, 2047),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(r.kind, RequestKind::Write);
        assert_eq!(r.status_addr, 0x3003, "status is the last byte");

        let r = run(&[hdr(), st()], header(VIRTIO_BLK_T_FLUSH, 99), &LIMITS).unwrap();
        assert_eq!(r.kind, RequestKind::Flush);
        assert!(r.data.is_empty());

        let r = run(
            &[hdr(), d(0x10000, 20, true), st()],
            header(VIRTIO_BLK_T_GET_ID, 0),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(r.kind, RequestKind::GetId);

        let r = run(
            &[hdr(), d(0x10000, 16, false), st()],
            header(VIRTIO_BLK_T_DISCARD, 0),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(r.kind, RequestKind::Discard);
    }

    #[test]
    fn short_chains_and_bad_status() {
        assert_eq!(
            run(&[], header(0, 0), &LIMITS).unwrap_err(),
            Rejected {
                error: RequestError::ChainTooShort(0),
                status_addr: None
            }
        );
        // A lone descriptor: no status can be written.
        let r = run(&[st()], header(0, 0), &LIMITS).unwrap_err();
        assert_eq!(r.error, RequestError::ChainTooShort(1));
        assert_eq!(r.status_addr, None);
        // Status descriptor read-only or empty.
        let r = run(&[hdr(), d(0x2000, 1, false)], header(4, 0), &LIMITS).unwrap_err();
        assert_eq!((r.error, r.status_addr), (RequestError::NoStatus, None));
        let r = run(&[hdr(), d(0x2000, 0, true)], header(4, 0), &LIMITS).unwrap_err();
        assert_eq!(r.error, RequestError::NoStatus);
        // A status descriptor that wraps.
        let r = run(&[hdr(), d(u64::MAX, 2, true)], header(4, 0), &LIMITS).unwrap_err();
        assert!(matches!(r.error, RequestError::AddressOverflow { .. }));
    }

    #[test]
    fn bad_headers() {
        assert_eq!(
            err(&[d(0x1000, 16, true), st()], header(0, 0)),
            RequestError::HeaderWriteOnly
        );
        assert_eq!(
            err(&[d(0x1000, 15, false), st()], header(0, 0)),
            RequestError::HeaderTooShort(15)
        );
        let r = parse(&[hdr(), d(0x10000, 512, true), st()], |_| None, &LIMITS).unwrap_err();
        assert_eq!(r.error, RequestError::HeaderUnreadable(0x1000));
        assert_eq!(r.status_addr, Some(0x2000), "the status is still reported");
    }

    #[test]
    fn wrong_directions_and_empty_data() {
        assert_eq!(
            err(
                &[hdr(), d(0x10000, 512, false), st()],
                header(VIRTIO_BLK_T_IN, 0)
            ),
            RequestError::WrongDirection(1)
        );
        assert_eq!(
            err(
                &[hdr(), d(0x10000, 512, false), d(0x11000, 512, true), st()],
                header(VIRTIO_BLK_T_OUT, 0)
            ),
            RequestError::WrongDirection(2)
        );
        assert_eq!(
            err(
                &[hdr(), d(0x10000, 20, false), st()],
                header(VIRTIO_BLK_T_GET_ID, 0)
            ),
            RequestError::WrongDirection(1)
        );
        assert_eq!(
            err(&[hdr(), st()], header(VIRTIO_BLK_T_IN, 0)),
            RequestError::NoData
        );
        assert_eq!(
            err(
                &[hdr(), d(0x10000, 0, true), st()],
                header(VIRTIO_BLK_T_IN, 0)
            ),
            RequestError::EmptyDescriptor(1)
        );
    }

    #[test]
    fn lengths_and_ranges() {
        assert_eq!(
            err(
                &[hdr(), d(0x10000, 511, true), st()],
                header(VIRTIO_BLK_T_IN, 0)
            ),
            RequestError::NotSectorMultiple(511)
        );
        // The last sector is fine, one past is not.
        assert!(run(
            &[hdr(), d(0x10000, 512, true), st()],
            header(VIRTIO_BLK_T_IN, 2047),
            &LIMITS
        )
        .is_ok());
        assert!(matches!(
            err(
                &[hdr(), d(0x10000, 1024, true), st()],
                header(VIRTIO_BLK_T_IN, 2047)
            ),
            RequestError::OutOfRange { .. }
        ));
        // A sector number near 2^64 does not wrap into range.
        assert!(matches!(
            err(
                &[hdr(), d(0x10000, 512, true), st()],
                header(VIRTIO_BLK_T_IN, u64::MAX)
            ),
            RequestError::OutOfRange { .. }
        ));
        // Descriptors wrapping the address space.
        assert!(matches!(
            err(
                &[hdr(), d(u64::MAX - 100, 512, true), st()],
                header(VIRTIO_BLK_T_IN, 0)
            ),
            RequestError::AddressOverflow { .. }
        ));
        // Too many segments.
        let mut descs = vec![hdr()];
        descs.extend((0..9).map(|i| d(0x10000 + i * 0x1000, 512, true)));
        descs.push(st());
        assert_eq!(
            err(&descs, header(VIRTIO_BLK_T_IN, 0)),
            RequestError::TooManySegments(9)
        );
        // Large but valid: 4 GiB - 512 in one descriptor on a large disk.
        let big = DeviceLimits {
            capacity: u64::MAX,
            ..LIMITS
        };
        assert!(run(
            &[hdr(), d(0x1_0000_0000, u32::MAX - 511, true), st()],
            header(VIRTIO_BLK_T_IN, u64::MAX - (1 << 23)),
            &big
        )
        .is_ok());
    }

    #[test]
    fn overlapping_buffers() {
        // Read data over the status byte.
        assert_eq!(
            err(
                &[hdr(), d(0x1f00, 512, true), st()],
                header(VIRTIO_BLK_T_IN, 0)
            ),
            RequestError::Overlap
        );
        // Read data over the header.
        assert_eq!(
            err(
                &[hdr(), d(0x1000, 512, true), st()],
                header(VIRTIO_BLK_T_IN, 0)
            ),
            RequestError::Overlap
        );
        // Two read buffers over each other.
        assert_eq!(
            err(
                &[hdr(), d(0x10000, 1024, true), d(0x10200, 512, true), st()],
                header(VIRTIO_BLK_T_IN, 0)
            ),
            RequestError::Overlap
        );
        // Write buffers may overlap each other (the host only reads them),
        // but not the status byte.
        assert!(run(
            &[hdr(), d(0x10000, 1024, false), d(0x10200, 512, false), st()],
            header(VIRTIO_BLK_T_OUT, 0),
            &LIMITS
        )
        .is_ok());
        assert_eq!(
            err(
                &[hdr(), d(0x1f00, 512, false), st()],
                header(VIRTIO_BLK_T_OUT, 0)
            ),
            RequestError::Overlap
        );
        // Adjacent is fine.
        assert!(run(
            &[hdr(), d(0x1010, 512, true), d(0x1210, 512, true), st()],
            header(VIRTIO_BLK_T_IN, 0),
            &LIMITS
        )
        .is_ok());
    }

    #[test]
    fn read_only_unsupported_and_statuses() {
        let ro = DeviceLimits {
            read_only: true,
            discard: false,
            write_zeroes: false,
            ..LIMITS
        };
        let w = run(
            &[hdr(), d(0x10000, 512, false), st()],
            header(VIRTIO_BLK_T_OUT, 0),
            &ro,
        )
        .unwrap_err();
        assert_eq!(w.error, RequestError::ReadOnly);
        assert_eq!(w.error.status(), VIRTIO_BLK_S_IOERR);
        assert_eq!(w.status_addr, Some(0x2000));
        // Reads still work on a read-only disk.
        assert!(run(
            &[hdr(), d(0x10000, 512, true), st()],
            header(VIRTIO_BLK_T_IN, 0),
            &ro
        )
        .is_ok());
        // Discard not offered: unsupported.
        let e = run(
            &[hdr(), d(0x10000, 16, false), st()],
            header(VIRTIO_BLK_T_DISCARD, 0),
            &ro,
        )
        .unwrap_err()
        .error;
        assert_eq!(e, RequestError::Unsupported(VIRTIO_BLK_T_DISCARD));
        assert_eq!(e.status(), VIRTIO_BLK_S_UNSUPP);
        assert_eq!(
            err(&[hdr(), st()], header(0xdead, 0)),
            RequestError::Unsupported(0xdead)
        );
        // Two discard segments (only one is announced).
        assert_eq!(
            err(
                &[hdr(), d(0x10000, 32, false), st()],
                header(VIRTIO_BLK_T_DISCARD, 0)
            ),
            RequestError::TooManySegments(2)
        );
        assert_eq!(
            err(
                &[hdr(), d(0x10000, 17, false), st()],
                header(VIRTIO_BLK_T_WRITE_ZEROES, 0)
            ),
            RequestError::BadSegmentLength(17)
        );
    }

    fn seg(sector: u64, n: u32, flags: u32) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&sector.to_le_bytes());
        b[8..12].copy_from_slice(&n.to_le_bytes());
        b[12..16].copy_from_slice(&flags.to_le_bytes());
        b
    }

    #[test]
    fn zero_segments() {
        use RequestKind::*;
        assert_eq!(
            parse_zero_segment(seg(8, 8, 0), Discard, 2048, 1024),
            Ok(ZeroRange {
                offset: 4096,
                len: 4096,
                unmap: true
            })
        );
        assert_eq!(
            parse_zero_segment(seg(8, 8, 0), WriteZeroes, 2048, 1024).map(|z| z.unmap),
            Ok(false)
        );
        assert_eq!(
            parse_zero_segment(seg(8, 8, 1), WriteZeroes, 2048, 1024).map(|z| z.unmap),
            Ok(true)
        );
        assert_eq!(
            parse_zero_segment(seg(8, 8, 1), Discard, 2048, 1024),
            Err(RequestError::UnsupportedFlags(1))
        );
        assert_eq!(
            parse_zero_segment(seg(8, 8, 2), WriteZeroes, 2048, 1024),
            Err(RequestError::UnsupportedFlags(2))
        );
        for (sector, n) in [(2047, 2), (u64::MAX, 1), (0, 0), (0, 1025)] {
            assert!(
                parse_zero_segment(seg(sector, n, 0), Discard, 2048, 1024).is_err(),
                "{sector}+{n}"
            );
        }
    }

    /// A bounded randomized run of the fuzz target (fixed seed, so it is
    /// reproducible); the coverage-guided version is `fuzz/`.
    #[test]
    fn randomized_chains_keep_the_invariants() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut accepted = std::collections::HashMap::new();
        for _ in 0..200_000 {
            let n = (next() % 80) as usize;
            let mut data: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            // Bias toward plausible chains: small addresses, sector lengths.
            for (i, b) in data.iter_mut().enumerate() {
                if i >= 13 && (i - 13) % 13 >= 4 && (i - 13) % 13 < 8 && next() % 4 != 0 {
                    *b = 0;
                }
                if i >= 13 && (i - 13) % 13 == 8 && next() % 2 == 0 {
                    *b = 0;
                }
            }
            // Half the chains well formed but for random directions, types
            // and offered features: a 16-byte header first, a 1-byte status
            // last, apart; data of a segment's or a sector's length. Purely
            // random chains almost never reach discard or write-zeroes.
            if next() % 2 == 0 && data.len() >= 13 {
                let types = [0u8, 1, 4, 8, 11, 13];
                data[5] = types[(next() % 6) as usize];
                // A sector below 256 on a disk of at least 64 Ki sectors;
                // the header readable.
                data[2] |= 1;
                data[7..11].fill(0);
                data[11] &= !1;
                // Whole descriptors only: a trailing part would be one too.
                let chunks = (data.len() - 13) / 13;
                data.truncate(13 + chunks * 13);
                for k in 0..chunks {
                    let c = &mut data[13 + k * 13..26 + k * 13];
                    let addr = (k as u64 + 1) << 16;
                    c[0..8].copy_from_slice(&addr.to_le_bytes());
                    let len: u32 = match k {
                        0 => 16,
                        _ if k + 1 == chunks => 1,
                        _ => [16, 512, 4096, 512, 32][(next() % 5) as usize],
                    };
                    c[8..12].copy_from_slice(&len.to_le_bytes());
                    if k == 0 || k + 1 == chunks {
                        c[12] = u8::from(k != 0);
                    }
                }
            }
            if let Some(kind) = fuzz_kind(&data) {
                *accepted.entry(kind).or_insert(0u32) += 1;
            }
        }
        // Every kind is reached, or an invariant about it is never checked.
        for kind in [
            RequestKind::Read,
            RequestKind::Write,
            RequestKind::Flush,
            RequestKind::GetId,
            RequestKind::Discard,
            RequestKind::WriteZeroes,
        ] {
            let n = accepted.get(&kind).copied().unwrap_or(0);
            assert!(
                n >= 20,
                "only {n} {kind:?} chains accepted ({accepted:?}): the generator is too weak"
            );
        }
    }
}
