//! Cases across tasks: other processes (mm), other users, single-issuer
//! ownership, and user locked-memory limits.

use super::basic::src_ring;
use crate::harness::{expect_errno, step, CaseError, CaseResult};
use crate::mem::{vmpin_kb, wait_vmpin};
use crate::ring::{errno, pool_a, pool_b, Ring, BUF, NBUF, POOL};
use crate::sys::Errno;
use crate::{ensure, fail};
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

/// An unprivileged uid/gid nobody else uses, so its locked_vm starts at 0.
const TEST_UID: libc::uid_t = 54_321;

/// Runs `f` in a forked child; its error message comes back through a pipe.
fn in_child(f: impl FnOnce() -> CaseResult) -> CaseResult {
    // Make sure the shared pools exist before forking (faulted once).
    let _ = (pool_a(), pool_b());
    let _ = std::io::stdout().flush();
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        fail!("pipe2: {}", Errno::last());
    }
    // SAFETY: the suite runs cases one at a time and joins every thread it
    // starts, so the child is a copy of a single-threaded process and may
    // allocate freely; it leaves with _exit and never returns here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail!("fork: {}", Errno::last());
    }
    if pid == 0 {
        // SAFETY: the write end, owned by the child from here on.
        let mut w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let msg = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(Ok(())) => String::new(),
            Ok(Err(CaseError::Fail(m))) => format!("F{m}"),
            Ok(Err(CaseError::Skip(m))) => format!("S{m}"),
            Err(_) => "Fpanic in child".into(),
        };
        let _ = w.write_all(msg.as_bytes());
        // SAFETY: leave without running the parent's destructors or atexit.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: closing the child's end in the parent; reading our own end.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end is ours.
    let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut msg = String::new();
    let _ = r.read_to_string(&mut msg);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        fail!("child died (status {status:#x}) {msg}");
    }
    match msg.split_at(msg.len().min(1)) {
        ("", _) => Ok(()),
        ("S", m) => Err(CaseError::Skip(m.into())),
        (_, m) => Err(CaseError::Fail(m.into())),
    }
}

fn need_root() -> CaseResult {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CaseError::Skip(
            "needs root to switch to an unprivileged user".into(),
        ));
    }
    Ok(())
}

/// Drops to TEST_UID (and with it every capability, CAP_IPC_LOCK included).
fn become_test_user() -> CaseResult {
    // SAFETY: plain credential system calls in the child.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(TEST_UID) != 0
            || libc::setuid(TEST_UID) != 0
        {
            fail!("dropping to uid {TEST_UID}: {}", Errno::last());
        }
    }
    Ok(())
}

pub fn einval_different_mm() -> CaseResult {
    let src = src_ring()?;
    let src_fd = src.fd();
    in_child(move || {
        let dst = Ring::new()?;
        expect_errno(
            "child clones from the parent's ring",
            dst.clone_all_fd(src_fd),
            libc::EINVAL,
        )?;
        // Control: within the child's own mm cloning works.
        let own = Ring::new()?;
        step("child registers", own.register(&pool_b().iovecs(NBUF, BUF)))?;
        step("child clones its own ring", dst.clone_all(&own))
    })
}

pub fn einval_different_user() -> CaseResult {
    need_root()?;
    in_child(|| {
        let root_ring = src_ring()?;
        become_test_user()?;
        let dst = Ring::new()?;
        expect_errno(
            "user ring clones from a root ring",
            dst.clone_all(&root_ring),
            libc::EINVAL,
        )?;
        let own = Ring::new()?;
        step("user registers", own.register(&pool_b().iovecs(1, BUF)))?;
        step("user clones its own ring", dst.clone_all(&own))
    })
}

pub fn memlock_user_charged_once() -> CaseResult {
    need_root()?;
    in_child(|| {
        become_test_user()?;
        // Room for the pool plus one more buffer, not for a second pool.
        let limit = (POOL + 2 * BUF) as u64;
        let rl = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: lowering our own limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) } != 0 {
            fail!("setrlimit MEMLOCK: {}", Errno::last());
        }
        let base = wait_vmpin(0, Duration::from_millis(200));
        let src = src_ring()?;
        let mut clones = Vec::new();
        for i in 0..4 {
            let r = Ring::new()?;
            step(
                &format!("clone {i} under RLIMIT_MEMLOCK"),
                r.clone_all(&src),
            )?;
            clones.push(r);
        }
        let pin = vmpin_kb();
        ensure!(
            pin == base + (POOL >> 10) as u64,
            "VmPin {pin} kB with 4 clones, want {}",
            base + (POOL >> 10) as u64
        );
        // Clones charged nothing: one more buffer still fits under the limit.
        let small = Ring::new()?;
        step(
            "register one more buffer (fits if clones were not charged)",
            small.register(&pool_b().iovecs(1, BUF)),
        )?;
        // A second copy of the pool does not.
        let big = Ring::new()?;
        expect_errno(
            "register the pool a second time",
            big.register(&pool_b().iovecs(NBUF, BUF)),
            libc::ENOMEM,
        )?;
        drop(small);
        step("unregister src", src.unregister())?;
        // Still charged while clones hold the buffers.
        let again = Ring::new()?;
        expect_errno(
            "register the pool again while clones hold the first",
            again.register(&pool_b().iovecs(NBUF, BUF)),
            libc::ENOMEM,
        )?;
        drop(clones);
        drop(src);
        // Teardown is asynchronous: the charge must come back within seconds.
        let start = Instant::now();
        loop {
            match again.register(&pool_b().iovecs(NBUF, BUF)) {
                Ok(()) => break,
                Err(e) if e.0 == libc::ENOMEM && start.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => fail!("register after every clone closed: {e} (charge not returned)"),
            }
        }
        Ok(())
    })
}

pub fn eexist_single_issuer_other_task() -> CaseResult {
    use std::sync::mpsc;
    // (a) A SINGLE_ISSUER ring created (so owned) by another thread.
    let (fd_tx, fd_rx) = mpsc::channel::<Result<i32, String>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let r = Ring::with(io_uring::IoUring::builder().setup_single_issuer());
        let ring = match r {
            Ok(r) => r,
            Err(e) => return fd_tx.send(Err(e.to_string())).unwrap_or(()),
        };
        match ring.register(&pool_a().iovecs(NBUF, BUF)) {
            Ok(()) => fd_tx.send(Ok(ring.fd())).unwrap_or(()),
            Err(e) => fd_tx
                .send(Err(format!("owner registers: {e}")))
                .unwrap_or(()),
        }
        let _ = done_rx.recv();
        drop(ring);
    });
    let res = (|| -> CaseResult {
        let src_fd = match fd_rx.recv() {
            Ok(Ok(fd)) => fd,
            Ok(Err(m)) => fail!("{m}"),
            Err(_) => fail!("owner thread vanished"),
        };
        let dst = Ring::new()?;
        expect_errno(
            "clone from a ring owned by another thread",
            dst.clone_all_fd(src_fd),
            libc::EEXIST,
        )
    })();
    let _ = done_tx.send(());
    let _ = t.join();
    res?;

    // (b) SINGLE_ISSUER | R_DISABLED: no owner until enabled, so cloning
    // works; (c) once another thread enables it, that thread owns it.
    let ring = Ring::with(
        io_uring::IoUring::builder()
            .setup_single_issuer()
            .setup_r_disabled(),
    )?;
    step(
        "register on a disabled single-issuer ring",
        ring.register(&pool_a().iovecs(NBUF, BUF)),
    )?;
    let dst = Ring::new()?;
    step(
        "clone from a disabled (ownerless) single-issuer ring",
        dst.clone_all(&ring),
    )?;
    let enabled = std::thread::scope(|s| {
        s.spawn(|| errno(ring.io.submitter().register_enable_rings()))
            .join()
    })
    .map_err(|_| CaseError::Fail("enabling thread panicked".into()))?;
    step("enable rings on another thread", enabled)?;
    let dst2 = Ring::new()?;
    expect_errno(
        "clone after another thread enabled it",
        dst2.clone_all(&ring),
        libc::EEXIST,
    )
}
