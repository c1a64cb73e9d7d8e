//! Least privilege for the threads that submit guest I/O.
//!
//! io_uring requests, and the io-wq workers that run them, act with the
//! credentials of the thread that submitted them. A VMM run as root would
//! otherwise let a request ask for what root may (a real-time I/O
//! priority class needs `CAP_SYS_NICE` or `CAP_SYS_ADMIN`, Linux
//! `ioprio_check_cap`). Linux capability sets are per thread, so each
//! submitting thread drops what it does not need when it starts, leaving
//! the rest of the VMM alone. `CAP_IPC_LOCK` stays: registering buffers
//! beyond `RLIMIT_MEMLOCK` needs it.

use std::io;

/// `CAP_SYS_ADMIN`.
pub const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_SYS_NICE`.
pub const CAP_SYS_NICE: u32 = 23;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Removes capability `cap` from the calling thread's effective,
/// permitted and inheritable sets (for good: it cannot be raised again).
pub fn drop_thread_capability(cap: u32) -> io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a v3 header and room for the two data words v3
    // uses; pid 0 is the calling thread.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
    let Some(d) = data.get_mut(word) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    d.effective &= !bit;
    d.permitted &= !bit;
    d.inheritable &= !bit;
    // SAFETY: as above; capset only lowers this thread's sets.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the calling thread has `cap` in its effective set.
pub fn thread_has_capability(cap: u32) -> io::Result<bool> {
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .ok_or_else(|| io::Error::other("no CapEff line in /proc/thread-self/status"))?;
    let eff = u64::from_str_radix(hex, 16).map_err(io::Error::other)?;
    Ok(eff & (1 << cap) != 0)
}

/// Whether creating an io_uring needs `CAP_SYS_ADMIN` here
/// (`kernel.io_uring_disabled` = 1 lets only it and a group create rings).
fn io_uring_setup_needs_admin() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").is_ok_and(|v| v.trim() != "0")
}

/// What a submitting thread runs with: no `CAP_SYS_NICE`, and no
/// `CAP_SYS_ADMIN` unless `creates_rings` and the host allows only it to
/// create io_uring instances. Logs (does not fail) what it cannot drop.
pub fn restrict_submitting_thread(what: &str, creates_rings: bool) {
    let mut caps = vec![CAP_SYS_NICE];
    if !(creates_rings && io_uring_setup_needs_admin()) {
        caps.push(CAP_SYS_ADMIN);
    }
    for cap in caps {
        if let Err(e) = drop_thread_capability(cap) {
            log::warn!("{what}: cannot drop capability {cap}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_drops_sys_nice_and_others_keep_it() {
        let before = thread_has_capability(CAP_SYS_NICE).unwrap();
        let child = std::thread::spawn(|| {
            drop_thread_capability(CAP_SYS_NICE).unwrap();
            thread_has_capability(CAP_SYS_NICE).unwrap()
        })
        .join()
        .unwrap();
        assert!(!child, "the thread still has CAP_SYS_NICE");
        // Per thread: this one is unchanged.
        assert_eq!(thread_has_capability(CAP_SYS_NICE).unwrap(), before);
    }

    #[test]
    fn without_sys_nice_an_rt_io_priority_is_refused() {
        const IOPRIO_WHO_PROCESS: i32 = 1;
        const IOPRIO_CLASS_RT: i32 = 1;
        let rt = IOPRIO_CLASS_RT << 13;
        let refused = std::thread::spawn(move || {
            restrict_submitting_thread("test", false);
            // SAFETY: ioprio_set on the calling thread (who 0).
            let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, rt) };
            (rc, io::Error::last_os_error().raw_os_error())
        })
        .join()
        .unwrap();
        assert_eq!(refused, (-1, Some(libc::EPERM)));
    }
}
