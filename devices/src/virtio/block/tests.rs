//! The block device against a real file and a guest memory map, with chains
//! built by virtio-queue's mock driver: every request type and every hostile
//! case, and that the device keeps serving afterwards.

use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::engine::Engine;
use super::request::*;
use super::*;
use crate::virtio::test_file::TempFile;
use crate::virtio::VirtioInterrupt;

const DISK_SECTORS: u64 = 64; // 32 KiB
const QSIZE: u16 = 64;
const HDR: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STATUS: u64 = 0x30000;
/// Second RAM region, right after the first (a buffer may not span both).
const REGION2: u64 = 0x10_0000;

/// A disk file for the tests. Under the workspace's target directory, not
/// /tmp: /tmp may be a tmpfs, which has no O_DIRECT, and these tests need a
/// file system that has it and fallocate's punch/zero (ext4, xfs, btrfs).
/// They fail rather than skip without one, as a missing /dev/kvm does.
fn temp_file(bytes: &[u8]) -> TempFile {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
    TempFile::new_in(&dir, "rv-blk-test", bytes)
}
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i / 512 * 7 + i % 251) as u8).collect()
}

struct Rig {
    mem: GuestMemoryMmap,
    file: TempFile,
    block: Block,
    irq: Arc<EventFd>,
    next_desc: u16,
    used_seen: u16,
    queue: Option<Queue>,
    avail: u64,
    used: u64,
}

impl Rig {
    fn new(read_only: bool, direct: bool) -> Self {
        let file = temp_file(&pattern((DISK_SECTORS * 512) as usize));
        let config = BlockConfig {
            path: file.0.clone(),
            read_only,
            direct,
            num_queues: 1,
            serial: "rv-serial-0123456789-extra".into(),
        };
        let block = Block::new(&config).unwrap_or_else(|e| {
            panic!(
                "{} (direct={direct}): {e}; the file system under target/ must take O_DIRECT",
                file.0.display()
            )
        });
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), REGION2 as usize),
            (GuestAddress(REGION2), 0x10_0000),
        ])
        .unwrap();
        // The mock lays the rings out (and zeroes them) once.
        let mock = MockSplitQueue::create(&mem, GuestAddress(0), QSIZE);
        let queue = mock.create_queue().unwrap();
        let (avail, used) = (mock.avail_addr().0, mock.used_addr().0);
        assert_eq!(mock.desc_table_addr().0, 0);
        Self {
            queue: Some(queue),
            avail,
            used,
            mem,
            file,
            block,
            irq: Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()),
            next_desc: 0,
            used_seen: 0,
        }
    }

    fn engine(&mut self) -> Engine {
        let q = self.queue.take().unwrap();
        let interrupt = VirtioInterrupt::new(Arc::new(AtomicU32::new(0)), self.irq.clone());
        self.block.engine(self.mem.clone(), vec![q], interrupt)
    }

    /// Adds a chain of raw descriptors (NEXT flags are set here).
    fn add_raw(&mut self, descs: &[(u64, u32, bool)]) {
        let start = self.next_desc;
        let raw: Vec<(u64, u32, u16, u16)> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, w))| {
                let mut flags = if w { VRING_DESC_F_WRITE as u16 } else { 0 };
                if i + 1 < descs.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                (addr, len, flags, (start + i as u16 + 1) % QSIZE)
            })
            .collect();
        self.add_descs(&raw, start);
    }

    /// Writes descriptors (addr, len, flags, next) from table index `start`
    /// and offers the first as a chain head.
    fn add_descs(&mut self, descs: &[(u64, u32, u16, u16)], start: u16) {
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let at = GuestAddress(16 * u64::from((start + i as u16) % QSIZE));
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&addr.to_le_bytes());
            b[8..12].copy_from_slice(&len.to_le_bytes());
            b[12..14].copy_from_slice(&flags.to_le_bytes());
            b[14..16].copy_from_slice(&next.to_le_bytes());
            self.mem.write_slice(&b, at).unwrap();
        }
        let idx: u16 = self.mem.read_obj(GuestAddress(self.avail + 2)).unwrap();
        let slot = self.avail + 4 + 2 * u64::from(idx % QSIZE);
        self.mem
            .write_obj(start % QSIZE, GuestAddress(slot))
            .unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(self.avail + 2))
            .unwrap();
        self.next_desc = (start + descs.len() as u16) % QSIZE;
    }

    /// A request: header (type, sector), data descriptors, status.
    fn add_request(&mut self, t: u32, sector: u64, data: &[(u64, u32, bool)]) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&t.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let mut descs = vec![(HDR, 16, false)];
        descs.extend_from_slice(data);
        descs.push((STATUS, 1, true));
        self.add_raw(&descs);
    }

    /// Runs the queue to completion; returns the new used entries (id, len).
    fn run(&mut self, engine: &mut Engine) -> Vec<(u32, u32)> {
        engine.process_queue(0);
        engine.wait_idle();
        let idx: u16 = self.mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let at = self.used + 4 + 8 * u64::from(self.used_seen % QSIZE);
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((id, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }

    fn status(&self) -> u8 {
        self.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    /// One request, run alone: (status byte, used length).
    fn one(
        &mut self,
        engine: &mut Engine,
        t: u32,
        sector: u64,
        data: &[(u64, u32, bool)],
    ) -> (u8, u32) {
        self.add_request(t, sector, data);
        let used = self.run(engine);
        assert_eq!(used.len(), 1, "one used entry per request");
        (self.status(), used[0].1)
    }

    fn guest(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

#[test]
fn reads_writes_flush_and_get_id() {
    let mut rig = Rig::new(false, false);
    let mut e = rig.engine();
    let disk = pattern((DISK_SECTORS * 512) as usize);

    // A read into two segments.
    let r = rig.one(
        &mut e,
        VIRTIO_BLK_T_IN,
        2,
        &[(DATA, 1024, true), (DATA + 0x4000, 512, true)],
    );
    assert_eq!(r, (VIRTIO_BLK_S_OK, 1537));
    assert_eq!(rig.guest(DATA, 1024), disk[1024..2048]);
    assert_eq!(rig.guest(DATA + 0x4000, 512), disk[2048..2560]);
    assert!(rig.irq.read().unwrap() >= 1, "the guest is interrupted");

    // A write of the last sector.
    rig.mem
        .write_slice(&[0x5a; 512], GuestAddress(DATA))
        .unwrap();
    let r = rig.one(
        &mut e,
        VIRTIO_BLK_T_OUT,
        DISK_SECTORS - 1,
        &[(DATA, 512, false)],
    );
    assert_eq!(r, (VIRTIO_BLK_S_OK, 1));
    let file = rig.file.contents();
    assert_eq!(file[(DISK_SECTORS as usize - 1) * 512..], [0x5a; 512]);
    assert_eq!(
        file[..(DISK_SECTORS as usize - 1) * 512],
        disk[..(DISK_SECTORS as usize - 1) * 512]
    );

    assert_eq!(
        rig.one(&mut e, VIRTIO_BLK_T_FLUSH, 0, &[]),
        (VIRTIO_BLK_S_OK, 1)
    );

    let r = rig.one(&mut e, VIRTIO_BLK_T_GET_ID, 0, &[(DATA, 20, true)]);
    assert_eq!(r, (VIRTIO_BLK_S_OK, 21));
    assert_eq!(rig.guest(DATA, 20), b"rv-serial-0123456789");
    assert_eq!(e.stats.failed, 0);
}

#[test]
fn hostile_requests_fail_and_the_device_keeps_serving() {
    let mut rig = Rig::new(false, false);
    let mut e = rig.engine();
    let before = rig.file.contents();
    let ram_end = REGION2 + 0x10_0000;

    type Case = (&'static str, u32, u64, Vec<(u64, u32, bool)>, u8);
    let cases: Vec<Case> = vec![
        (
            "sector past the end",
            VIRTIO_BLK_T_IN,
            DISK_SECTORS,
            vec![(DATA, 512, true)],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "range running past the end",
            VIRTIO_BLK_T_OUT,
            DISK_SECTORS - 1,
            vec![(DATA, 1024, false)],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "sector near 2^64",
            VIRTIO_BLK_T_OUT,
            u64::MAX,
            vec![(DATA, 512, false)],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "write buffer outside RAM",
            VIRTIO_BLK_T_OUT,
            0,
            vec![(ram_end, 512, false)],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "read buffer outside RAM",
            VIRTIO_BLK_T_IN,
            0,
            vec![(0x4000_0000, 512, true)],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "buffer running off the end of RAM",
            VIRTIO_BLK_T_IN,
            0,
            vec![(ram_end - 512, 1024, true)],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "buffer spanning two RAM regions",
            VIRTIO_BLK_T_IN,
            0,
            vec![(REGION2 - 512, 1024, true)],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "wrapping buffer",
            VIRTIO_BLK_T_IN,
            0,
            vec![(u64::MAX - 511, 1024, true)],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "read into a read-only buffer",
            VIRTIO_BLK_T_IN,
            0,
            vec![(DATA, 512, false)],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "write from a write-only buffer",
            VIRTIO_BLK_T_OUT,
            0,
            vec![(DATA, 512, true)],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "partial sector",
            VIRTIO_BLK_T_IN,
            0,
            vec![(DATA, 100, true)],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "read over its own status byte",
            VIRTIO_BLK_T_IN,
            0,
            vec![(STATUS - 256, 512, true)],
            VIRTIO_BLK_S_IOERR,
        ),
        ("unknown request type", 77, 0, vec![], VIRTIO_BLK_S_UNSUPP),
        (
            "read without data",
            VIRTIO_BLK_T_IN,
            0,
            vec![],
            VIRTIO_BLK_S_IOERR,
        ),
    ];
    for (what, t, sector, data, want) in cases {
        let (status, len) = rig.one(&mut e, t, sector, &data);
        assert_eq!(status, want, "{what}");
        assert_eq!(len, 1, "{what}: only the status byte is reported written");
    }

    // A chain too short to carry a status: completed with nothing written.
    rig.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    rig.add_raw(&[(HDR, 16, false)]);
    assert_eq!(rig.run(&mut e).len(), 1);
    assert_eq!(rig.status(), 0xff);
    // A status descriptor outside RAM.
    rig.add_raw(&[(HDR, 16, false), (0x4000_0000, 1, true)]);
    assert_eq!(rig.run(&mut e)[0].1, 0);
    // The header outside RAM.
    rig.add_raw(&[
        (0x4000_0000, 16, false),
        (DATA, 512, true),
        (STATUS, 1, true),
    ]);
    assert_eq!(rig.run(&mut e)[0].1, 1);
    assert_eq!(rig.status(), VIRTIO_BLK_S_IOERR);
    // A write-only header.
    rig.add_raw(&[(HDR, 16, true), (STATUS, 1, true)]);
    rig.run(&mut e);
    assert_eq!(rig.status(), VIRTIO_BLK_S_IOERR);

    // A looping chain: its last descriptor points back at its first.
    let start = rig.next_desc;
    let looping = [
        (HDR, 16, VRING_DESC_F_NEXT as u16, start + 1),
        (
            DATA,
            512,
            (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
            start,
        ),
    ];
    rig.add_descs(&looping, start);
    // A chain whose next index is beyond the table.
    let start = rig.next_desc;
    rig.add_descs(&[(HDR, 16, VRING_DESC_F_NEXT as u16, 999)], start);
    let used = rig.run(&mut e);
    assert_eq!(used.len(), 2, "broken chains are completed once each");

    // The disk is untouched, and a good request still works.
    assert_eq!(rig.file.contents(), before);
    let r = rig.one(&mut e, VIRTIO_BLK_T_IN, 0, &[(DATA, 512, true)]);
    assert_eq!(r, (VIRTIO_BLK_S_OK, 513));
    assert_eq!(rig.guest(DATA, 512), before[..512]);
}

#[test]
fn read_only_disk_refuses_writes_and_announces_ro() {
    let mut rig = Rig::new(true, false);
    assert_ne!(rig.block.features() & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(rig.block.features() & (1 << VIRTIO_BLK_F_DISCARD), 0);
    let mut e = rig.engine();
    let before = rig.file.contents();
    rig.mem.write_slice(&[1; 512], GuestAddress(DATA)).unwrap();
    let r = rig.one(&mut e, VIRTIO_BLK_T_OUT, 0, &[(DATA, 512, false)]);
    assert_eq!(r.0, VIRTIO_BLK_S_IOERR);
    let r = rig.one(&mut e, VIRTIO_BLK_T_DISCARD, 0, &[(DATA, 16, false)]);
    assert_eq!(r.0, VIRTIO_BLK_S_UNSUPP);
    assert_eq!(
        rig.one(&mut e, VIRTIO_BLK_T_IN, 1, &[(DATA, 512, true)]).0,
        VIRTIO_BLK_S_OK
    );
    assert_eq!(rig.guest(DATA, 512), before[512..1024]);
    assert_eq!(rig.file.contents(), before);
}

#[test]
fn config_space_and_features() {
    let rig = Rig::new(false, false);
    let f = rig.block.features();
    for bit in [
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_MQ,
        32,
    ] {
        assert_ne!(f & (1 << bit), 0, "feature {bit}");
    }
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    let mut b = [0u8; 8];
    rig.block.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), DISK_SECTORS);
    let mut w = [0u8; 4];
    rig.block.read_config(12, &mut w);
    assert_eq!(u32::from_le_bytes(w), SEG_MAX);
    rig.block.read_config(20, &mut w);
    assert_eq!(u32::from_le_bytes(w), 512);
    let mut q = [0u8; 2];
    rig.block.read_config(34, &mut q);
    assert_eq!(u16::from_le_bytes(q), 1);
    // Discard and write-zeroes limits (the file under target/ takes both,
    // see the next test).
    for (offset, value) in [
        (36, MAX_ZERO_SECTORS),
        (40, 1),
        (44, 1),
        (48, MAX_ZERO_SECTORS),
        (52, 1),
    ] {
        rig.block.read_config(offset, &mut w);
        assert_eq!(u32::from_le_bytes(w), value, "config offset {offset}");
    }
    let mut unmap = [0u8; 1];
    rig.block.read_config(56, &mut unmap);
    assert_eq!(unmap, [1]);
}

/// The configuration space is the 60 bytes of the kernel's `struct
/// virtio_blk_config` up to its secure-erase fields, field for field.
#[test]
fn config_layout_matches_virtio_bindings() {
    use std::mem::{offset_of, size_of};
    use virtio_bindings::virtio_blk::virtio_blk_config as Kernel;
    macro_rules! same_offsets {
        ($($field:ident),*) => {
            $(assert_eq!(
                offset_of!(VirtioBlkConfig, $field),
                offset_of!(Kernel, $field),
                stringify!($field)
            );)*
        };
    }
    same_offsets!(
        capacity,
        size_max,
        seg_max,
        blk_size,
        physical_block_exp,
        alignment_offset,
        min_io_size,
        opt_io_size,
        num_queues,
        max_discard_sectors,
        max_discard_seg,
        discard_sector_alignment,
        max_write_zeroes_sectors,
        max_write_zeroes_seg,
        write_zeroes_may_unmap,
        unused1
    );
    assert_eq!(
        offset_of!(VirtioBlkConfig, cylinders),
        offset_of!(Kernel, geometry)
    );
    assert_eq!(
        offset_of!(VirtioBlkConfig, writeback),
        offset_of!(Kernel, wce)
    );
    assert_eq!(
        size_of::<VirtioBlkConfig>(),
        offset_of!(Kernel, max_secure_erase_sectors)
    );
}

#[test]
fn discard_and_write_zeroes_when_the_file_supports_them() {
    let mut rig = Rig::new(false, false);
    let f = rig.block.features();
    // Not a skip: the file is under target/, which must be a file system
    // with fallocate's punch/zero (see temp_file).
    assert!(
        f & (1 << VIRTIO_BLK_F_WRITE_ZEROES) != 0 && f & (1 << VIRTIO_BLK_F_DISCARD) != 0,
        "{}: the file system under target/ must take fallocate punch/zero",
        rig.file.0.display()
    );
    let mut e = rig.engine();
    let seg = |sector: u64, n: u32, flags: u32| {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&sector.to_le_bytes());
        b[8..12].copy_from_slice(&n.to_le_bytes());
        b[12..16].copy_from_slice(&flags.to_le_bytes());
        b
    };
    rig.mem
        .write_slice(&seg(8, 8, 0), GuestAddress(DATA))
        .unwrap();
    let r = rig.one(&mut e, VIRTIO_BLK_T_WRITE_ZEROES, 0, &[(DATA, 16, false)]);
    assert_eq!(r, (VIRTIO_BLK_S_OK, 1));
    let file = rig.file.contents();
    assert_eq!(file.len() as u64, DISK_SECTORS * 512, "size unchanged");
    assert!(file[4096..8192].iter().all(|&b| b == 0));
    assert_eq!(file[..4096], pattern(4096)[..]);
    // Past the end, and reserved flags.
    rig.mem
        .write_slice(&seg(DISK_SECTORS - 1, 2, 0), GuestAddress(DATA))
        .unwrap();
    let r = rig.one(&mut e, VIRTIO_BLK_T_WRITE_ZEROES, 0, &[(DATA, 16, false)]);
    assert_eq!(r.0, VIRTIO_BLK_S_IOERR);
    rig.mem
        .write_slice(&seg(0, 1, 0x80), GuestAddress(DATA))
        .unwrap();
    let r = rig.one(&mut e, VIRTIO_BLK_T_WRITE_ZEROES, 0, &[(DATA, 16, false)]);
    assert_eq!(r.0, VIRTIO_BLK_S_UNSUPP);
    if f & (1 << VIRTIO_BLK_F_DISCARD) != 0 {
        rig.mem
            .write_slice(&seg(16, 8, 0), GuestAddress(DATA))
            .unwrap();
        let r = rig.one(&mut e, VIRTIO_BLK_T_DISCARD, 0, &[(DATA, 16, false)]);
        assert_eq!(r.0, VIRTIO_BLK_S_OK);
        assert!(rig.file.contents()[8192..12288].iter().all(|&b| b == 0));
    }
}

#[test]
fn direct_io_bounces_misaligned_buffers() {
    let mut rig = Rig::new(false, true);
    let mut e = rig.engine();
    let disk = pattern((DISK_SECTORS * 512) as usize);
    // Aligned: in place.
    let r = rig.one(&mut e, VIRTIO_BLK_T_IN, 8, &[(DATA, 4096, true)]);
    assert_eq!(r, (VIRTIO_BLK_S_OK, 4097));
    assert_eq!(rig.guest(DATA, 4096), disk[4096..8192]);
    assert_eq!(e.stats.bounced, 0);
    // Misaligned address, then misaligned lengths: bounced, still correct.
    let r = rig.one(&mut e, VIRTIO_BLK_T_IN, 1, &[(DATA + 3, 1024, true)]);
    assert_eq!(r, (VIRTIO_BLK_S_OK, 1025));
    assert_eq!(rig.guest(DATA + 3, 1024), disk[512..1536]);
    rig.mem
        .write_slice(&[0xc3; 0x600], GuestAddress(DATA + 0x1000))
        .unwrap();
    let r = rig.one(
        &mut e,
        VIRTIO_BLK_T_OUT,
        4,
        &[(DATA + 0x1000, 100, false), (DATA + 0x1100, 924, false)],
    );
    assert_eq!(r.0, VIRTIO_BLK_S_OK);
    assert_eq!(e.stats.bounced, 2);
    let file = rig.file.contents();
    assert_eq!(file[2048..2148], [0xc3; 100]);
    assert_eq!(file[2148..3072], [0xc3; 924]);
}

#[test]
fn device_worker_starts_and_stops() {
    let mut rig = Rig::new(false, false);
    let q = rig.queue.take().unwrap();
    let mut block = rig.block;
    let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let interrupt = VirtioInterrupt::new(Arc::new(AtomicU32::new(0)), rig.irq.clone());
    assert!(block
        .activate(rig.mem.clone(), 0, vec![], vec![], interrupt.clone())
        .is_err());
    block
        .activate(
            rig.mem.clone(),
            0,
            vec![q],
            vec![evt.try_clone().unwrap()],
            interrupt,
        )
        .unwrap();
    evt.write(1).unwrap();
    block.reset();
    block.reset();
}
