//! Many rings from one pool; two threads cloning in opposite directions.

use super::basic::src_ring;
use crate::harness::{step, CaseResult};
use crate::mem::{vmpin_kb, wait_vmpin};
use crate::ring::{buf, pool_a, Ring, Scratch, CHUNK, NBUF, POOL};
use crate::sys::Errno;
use crate::{ensure, fail};
use io_uring::types::CloneBuffersFlags as Flags;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const POOL_RINGS: usize = 64;

pub fn pool_of_64_rings() -> CaseResult {
    let file = Scratch::new()?;
    let base = super::settle_vmpin();
    let src = src_ring()?;
    let mut rings = Vec::with_capacity(POOL_RINGS);
    for i in 0..POOL_RINGS {
        let mut r = Ring::new()?;
        step(&format!("clone into ring {i}"), r.clone_all(&src))?;
        let k = i % NBUF;
        r.check_maps(&file, k as u16, buf(pool_a(), k), CHUNK, 200 + i as u32)?;
        rings.push(r);
    }
    let pin = vmpin_kb();
    let want = base + (POOL >> 10) as u64;
    ensure!(
        pin == want,
        "VmPin {pin} kB with {POOL_RINGS} clones, want {want} (pool once)"
    );
    drop(src);
    drop(rings);
    let end = wait_vmpin(base, Duration::from_secs(5));
    ensure!(
        end == base,
        "VmPin {end} kB after closing all rings, want {base}"
    );
    Ok(())
}

/// Per-thread budget: whichever ends first.
const ITERATIONS: usize = 2000;
const DURATION: Duration = Duration::from_secs(2);

#[derive(Default, Debug)]
struct Counts {
    cross_ok: usize,
    unexpected: Vec<String>,
}

fn churn(mine: &Ring, other: &Ring, pool: &Ring, stop: &AtomicBool) -> Counts {
    let mut c = Counts::default();
    let start = Instant::now();
    let mut note = |what: &str, r: Result<(), Errno>, allowed: &[i32]| match r {
        Ok(()) => true,
        Err(e) if allowed.contains(&e.0) => false,
        Err(e) => {
            if c.unexpected.len() < 4 {
                c.unexpected.push(format!("{what}: {e}"));
            }
            false
        }
    };
    let mut cross_ok = 0;
    for _ in 0..ITERATIONS {
        if stop.load(Ordering::Relaxed) || start.elapsed() > DURATION {
            break;
        }
        note("unregister", mine.unregister(), &[libc::ENXIO]);
        // other -> mine, while the other thread clones mine -> other: the
        // two rings are locked in opposite orders.
        if note(
            "cross clone",
            mine.clone_all(other),
            &[libc::EBUSY, libc::ENXIO],
        ) {
            cross_ok += 1;
        } else {
            note("refill from pool", mine.clone_all(pool), &[libc::EBUSY]);
        }
    }
    c.cross_ok = cross_ok;
    c
}

pub fn concurrent_opposite_clones() -> CaseResult {
    let file = Scratch::new()?;
    let pool = src_ring()?;
    let a = Ring::new()?;
    let b = Ring::new()?;
    step("seed a", a.clone_all(&pool))?;
    step("seed b", b.clone_all(&pool))?;
    let fp = pool.fd();
    let (a, b, pool) = (Arc::new(a), Arc::new(b), Arc::new(pool));
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |mine: &Arc<Ring>, other: &Arc<Ring>| {
        let (mine, other, pool, stop) = (mine.clone(), other.clone(), pool.clone(), stop.clone());
        std::thread::spawn(move || churn(&mine, &other, &pool, &stop))
    };
    let t1 = spawn(&a, &b);
    let t2 = spawn(&b, &a);
    let deadline = Instant::now() + DURATION + Duration::from_secs(20);
    while !(t1.is_finished() && t2.is_finished()) {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            // Threads stuck in the kernel cannot be joined; report and leak.
            fail!(
                "threads still running {} s past their budget: deadlock?",
                20
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (c1, c2) = (t1.join(), t2.join());
    let (c1, c2) = match (c1, c2) {
        (Ok(x), Ok(y)) => (x, y),
        _ => fail!("a churn thread panicked"),
    };
    let unexpected: Vec<_> = c1.unexpected.iter().chain(&c2.unexpected).collect();
    ensure!(unexpected.is_empty(), "unexpected results: {unexpected:?}");
    ensure!(
        c1.cross_ok + c2.cross_ok > 0,
        "no cross clone ever succeeded ({} / {}): the race was not exercised",
        c1.cross_ok,
        c2.cross_ok
    );
    // Both tables are still sane: refill and do I/O through each (the
    // joined threads gave their rings back).
    let (Ok(mut a), Ok(mut b)) = (Arc::try_unwrap(a), Arc::try_unwrap(b)) else {
        fail!("a joined churn thread still holds its ring");
    };
    step(
        "final refill a",
        a.clone_range(fp, 0, 0, 0, Flags::DST_REPLACE),
    )?;
    step(
        "final refill b",
        b.clone_range(fp, 0, 0, 0, Flags::DST_REPLACE),
    )?;
    a.check_maps(&file, 1, buf(pool_a(), 1), CHUNK, 300)?;
    b.check_maps(&file, 3, buf(pool_a(), 3), CHUNK, 301)
}
