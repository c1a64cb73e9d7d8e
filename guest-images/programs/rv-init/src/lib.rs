//! `rv-init`: the /init of a ringvisor guest. Implements the guest side of
//! docs/guest-interface.md:
//!
//! 1. re-executes itself once with `GLIBC_TUNABLES` set so that glibc (and
//!    every program started from here, which inherits the variable) stays off
//!    AVX/AVX2/AVX-512: on PVM hosts the guest kernel runs with `noxsave` and
//!    context-switches only x87/SSE state;
//! 2. mounts proc, sysfs, devtmpfs on /dev and hugetlbfs on /dev/hugepages;
//! 3. writes `BOOT_MARKER` of the guest-signal device (if present);
//! 4. with `rv.snapshot=1` on the kernel command line, writes `READY` and
//!    waits for the workload command in the device's mailbox (the VMM takes
//!    a snapshot at `READY` and hands the command over after a restore);
//! 5. mounts each `rv.mount=DEVICE:DIR[:FSTYPE[:OPTIONS]]` of the command
//!    line (a disk with a file system; see [`mounts`]; it unmounts them
//!    after the workload so that everything written reaches the disk);
//! 6. runs the workload: the mailbox's command, else argv after the
//!    kernel's ` -- `, else `/bin/<rv.workload>` (default `demo`), writes
//!    `WORKLOAD_STARTED`, and reaps every zombie meanwhile;
//! 7. prints `rv-init: workload exited with status N` and writes N to `EXIT`
//!    (128 + signal when the workload was killed by a signal). Without the
//!    device (e.g. under QEMU) it resets the guest instead (see power_off).

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::ptr;
use std::time::{Duration, Instant};

const SIGNAL_BASE: libc::off_t = 0xd000_0000;
const SIGNAL_LEN: usize = 0x1000;
const REG_MAGIC: usize = 0x00;
const REG_EXIT: usize = 0x04;
const REG_BOOT_MARKER: usize = 0x08;
const REG_READY: usize = 0x0c;
const REG_COMMAND_READY: usize = 0x10;
const REG_COMMAND_LEN: usize = 0x14;
const REG_WORKLOAD_STARTED: usize = 0x18;
const REG_HOST_TIME_LO: usize = 0x20;
const REG_HOST_TIME_HI: usize = 0x24;
const COMMAND: usize = 0x100;
/// How long the launcher spins on the mailbox before it falls back to
/// looking every [`MAILBOX_POLL`]. `ringvisor snapshot` pauses the guest
/// right after `READY`, so the snapshot holds the launcher spinning in user
/// mode, and after a restore it sees the command on its next read. Sleeping
/// instead costs, after the restore, a timer interrupt, a wake-up and a
/// return to user mode in the guest kernel: about 70 ms where that kernel
/// is emulated (nested PVM).
const MAILBOX_SPIN: Duration = Duration::from_secs(2);
/// How often the launcher looks at the mailbox after [`MAILBOX_SPIN`].
const MAILBOX_POLL: Duration = Duration::from_millis(1);
const MAGIC: u32 = 0x5256_4753; // "RVGS"

/// glibc 2.36 `glibc.cpu.hwcaps` syntax: a comma-separated list of
/// `-FEATURE` names from sysdeps/x86/cpu-tunables.c. Disabling AVX and AVX2
/// takes every AVX-based string/memory function out of the ifunc choices,
/// the AVX-512 names take out the EVEX/ZMM variants, and XSAVE/XSAVEC keep
/// the dynamic loader's trampolines on fxsave.
pub const GLIBC_TUNABLES: &str = "glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512CD,\
-AVX512BW,-AVX512DQ,-AVX512ER,-AVX512PF,-AVX512VL,-AVX_VNNI,-AVX512_VNNI,-AVX512_BF16,\
-AVX512_FP16,-AVX512_VBMI,-AVX512_VBMI2,-AVX512_BITALG,-AVX512_IFMA,\
-AVX512_VPOPCNTDQ,-AVX512_4FMAPS,-AVX512_4VNNIW,-AVX512_VP2INTERSECT,\
-FMA,-FMA4,-F16C,-VAES,-VPCLMULQDQ,-XOP,-XSAVE,-XSAVEC,-AVX_Fast_Unaligned_Load,\
-Prefer_No_VZEROUPPER";

/// Marks the re-executed instance (the kernel gives init no such variable).
const REEXEC_MARK: &str = "RV_INIT_REEXEC";

fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "rv-init: {msg}");
    let _ = out.flush();
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn cstr(s: &[u8]) -> CString {
    CString::new(s).unwrap_or_else(|_| CString::new("?").unwrap())
}

/// The mapped guest-signal device, or `None` when absent.
struct SignalDevice {
    base: *mut u32,
}

impl SignalDevice {
    fn open() -> Result<Self, String> {
        let path = cstr(b"/dev/mem");
        // SAFETY: plain open(2) of a NUL-terminated path.
        let fd =
            unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_SYNC | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open /dev/mem: {}", errno()));
        }
        // SAFETY: a fresh shared mapping of the device's 4 KiB MMIO page.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                SIGNAL_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                SIGNAL_BASE,
            )
        };
        let err = errno();
        // SAFETY: fd is ours; the mapping keeps its own reference.
        unsafe { libc::close(fd) };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap /dev/mem at {SIGNAL_BASE:#x}: {err}"));
        }
        let dev = SignalDevice { base: p.cast() };
        let magic = dev.read(REG_MAGIC);
        if magic != MAGIC {
            // SAFETY: unmapping the mapping made above.
            unsafe { libc::munmap(p, SIGNAL_LEN) };
            return Err(format!(
                "no guest-signal device (MAGIC reads {magic:#010x})"
            ));
        }
        Ok(dev)
    }

    fn read(&self, off: usize) -> u32 {
        // SAFETY: off is one of the register offsets, inside the mapping.
        unsafe { ptr::read_volatile(self.base.add(off / 4)) }
    }

    fn write(&self, off: usize, val: u32) {
        // SAFETY: off is one of the register offsets, inside the mapping.
        unsafe { ptr::write_volatile(self.base.add(off / 4), val) }
    }

    /// Says /init is ready for a workload, then waits for the VMM to put a
    /// command in the mailbox; returns its argv words (none: the default
    /// workload).
    fn wait_for_command(&self) -> Vec<OsString> {
        self.write(REG_READY, 1);
        let spin_until = Instant::now() + MAILBOX_SPIN;
        let mut reads = 0u32;
        while self.read(REG_COMMAND_READY) != 1 {
            reads = reads.wrapping_add(1);
            // Each read is a VM exit: the loop needs no pause of its own,
            // and looks at the clock only now and then.
            if reads.is_multiple_of(1024) && Instant::now() > spin_until {
                std::thread::sleep(MAILBOX_POLL);
            }
        }
        let len = (self.read(REG_COMMAND_LEN) as usize).min(SIGNAL_LEN - COMMAND);
        let bytes: Vec<u8> = (0..len.div_ceil(4))
            .flat_map(|i| self.read(COMMAND + 4 * i).to_le_bytes())
            .take(len)
            .collect();
        mailbox_argv(&bytes)
    }

    /// The host's wall clock as the VMM offers it (`None` from a VMM that
    /// does not: the register reads 0).
    fn host_time(&self) -> Option<Duration> {
        let lo = u64::from(self.read(REG_HOST_TIME_LO));
        let hi = u64::from(self.read(REG_HOST_TIME_HI));
        let ns = hi << 32 | lo;
        (ns != 0).then(|| Duration::from_nanos(ns))
    }

    /// Sets the guest's wall clock to the host's. The kernel read it from
    /// kvm-clock at boot, but a guest restored from a snapshot would keep
    /// the time the snapshot was taken at.
    fn set_wall_clock(&self) {
        let Some(now) = self.host_time() else {
            return;
        };
        let ts = libc::timespec {
            tv_sec: now.as_secs() as libc::time_t,
            tv_nsec: now.subsec_nanos() as libc::c_long,
        };
        // SAFETY: clock_settime reads the timespec we pass.
        if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
            say(&format!("setting the wall clock: {}", errno()));
        }
    }
}

/// The argv words of a mailbox command: each word ended by a NUL.
fn mailbox_argv(bytes: &[u8]) -> Vec<OsString> {
    bytes
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| std::ffi::OsStr::from_bytes(w).to_os_string())
        .collect()
}

/// Whether the kernel command line asks /init to wait for its workload in
/// the mailbox (`rv.snapshot=1`, before any ` -- `).
fn snapshot_requested(cmdline: &str) -> bool {
    let head = match cmdline.find(" -- ") {
        Some(i) => &cmdline[..i],
        None => cmdline,
    };
    head.split_ascii_whitespace().any(|a| a == "rv.snapshot=1")
}

fn mount(src: &str, target: &str, fstype: &str, data: Option<&str>) {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f) = (
        cstr(src.as_bytes()),
        cstr(target.as_bytes()),
        cstr(fstype.as_bytes()),
    );
    let d = data.map(|d| cstr(d.as_bytes()));
    let dp = d.as_ref().map_or(ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, dp) };
    if rc != 0 {
        let e = errno();
        // devtmpfs may already be mounted by the kernel (DEVTMPFS_MOUNT).
        if e.raw_os_error() != Some(libc::EBUSY) {
            say(&format!("mount {fstype} on {target}: {e}"));
        }
    }
}

/// Counts the words the kernel splits `s` into (double quotes group words,
/// as the kernel's `next_arg()` does).
fn kernel_word_count(s: &str) -> usize {
    let (mut words, mut in_word, mut in_quote) = (0, false, false);
    for c in s.chars() {
        if c == '"' {
            in_quote = !in_quote;
        }
        if c.is_ascii_whitespace() && !in_quote {
            in_word = false;
        } else if !in_word {
            in_word = true;
            words += 1;
        }
    }
    words
}

/// The workload command line: the arguments after the kernel's ` -- `, else
/// `/bin/<rv.workload>` from /proc/cmdline (default `demo`). The kernel also
/// hands init every bare word it does not know (e.g. `noxsave`), ahead of
/// the ` -- ` part, so only the last words of argv are the workload.
fn workload(args: &[OsString], cmdline: &str) -> Vec<OsString> {
    let after_dashes = cmdline
        .strip_prefix("-- ")
        .or_else(|| cmdline.split_once(" -- ").map(|(_, tail)| tail));
    if let Some(tail) = after_dashes {
        let n = kernel_word_count(tail);
        if n > 0 && args.len() > n {
            return args[args.len() - n..].to_vec();
        }
    }
    let name = workload_name(cmdline);
    vec![OsString::from(format!("/bin/{name}"))]
}

/// `rv.workload=NAME` from the kernel command line, ignoring everything
/// after ` -- ` (that part belongs to init's argv).
fn workload_name(cmdline: &str) -> String {
    let head = match cmdline.find(" -- ") {
        Some(i) => &cmdline[..i],
        None => cmdline,
    };
    head.split_ascii_whitespace()
        .filter_map(|a| a.strip_prefix("rv.workload="))
        .next_back()
        .filter(|n| !n.is_empty())
        .unwrap_or("demo")
        .to_string()
}

/// One `rv.mount=` request from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    /// The block device, e.g. `/dev/vda`.
    pub device: String,
    /// The directory to mount it on (created if missing).
    pub dir: String,
    /// The file system type (default `ext4`).
    pub fstype: String,
    /// `ro` or `rw` plus file-system options (`,`-separated), as `mount -o`.
    pub options: String,
}

/// The status rv-init reports when a `rv.mount=` fails: the workload does
/// not run without its disk.
pub const MOUNT_FAILED_STATUS: u32 = 125;

/// Every `rv.mount=DEVICE:DIR[:FSTYPE[:OPTIONS]]` of the command line, in
/// order (the part after ` -- ` belongs to the workload). Errors name the
/// malformed value.
pub fn mounts(cmdline: &str) -> Result<Vec<MountRequest>, String> {
    let head = match cmdline.find(" -- ") {
        Some(i) => &cmdline[..i],
        None => cmdline,
    };
    head.split_ascii_whitespace()
        .filter_map(|a| a.strip_prefix("rv.mount="))
        .map(|spec| {
            let mut parts = spec.splitn(4, ':');
            let device = parts.next().unwrap_or_default();
            let dir = parts.next().unwrap_or_default();
            let fstype = parts.next().filter(|f| !f.is_empty()).unwrap_or("ext4");
            let options = parts.next().unwrap_or_default();
            if !device.starts_with('/') || !dir.starts_with('/') {
                return Err(format!(
                    "rv.mount={spec}: expected DEVICE:DIR[:FSTYPE[:OPTIONS]] with absolute paths"
                ));
            }
            Ok(MountRequest {
                device: device.into(),
                dir: dir.into(),
                fstype: fstype.into(),
                options: options.into(),
            })
        })
        .collect()
}

/// Splits `mount -o` style options into mount(2) flags (`ro`, `rw`,
/// `sync`, `noatime`) and the rest, passed to the file system as data.
fn mount_flags(options: &str) -> (libc::c_ulong, String) {
    let (mut flags, mut data) = (0, Vec::new());
    for o in options.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => flags &= !libc::MS_RDONLY,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            "noatime" => flags |= libc::MS_NOATIME,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Mounts one requested disk.
fn mount_disk(m: &MountRequest) -> Result<(), String> {
    std::fs::create_dir_all(&m.dir).map_err(|e| format!("mkdir {}: {e}", m.dir))?;
    let (flags, data) = mount_flags(&m.options);
    let (s, t, f, d) = (
        cstr(m.device.as_bytes()),
        cstr(m.dir.as_bytes()),
        cstr(m.fstype.as_bytes()),
        cstr(data.as_bytes()),
    );
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    if rc != 0 {
        return Err(format!(
            "mount {} on {} ({}): {}",
            m.device,
            m.dir,
            m.fstype,
            errno()
        ));
    }
    say(&format!("mounted {} on {} ({})", m.device, m.dir, m.fstype));
    Ok(())
}

/// Unmounts what the launcher mounted of `requested`, last first, so that
/// the file systems are clean on the disk when the VMM exits (a request the
/// launcher did not get to is not a mount point: EINVAL, skipped). Returns
/// false if one could not be unmounted (then it is at least synced).
fn unmount_disks(requested: &[MountRequest]) -> bool {
    let mut ok = true;
    for m in requested.iter().rev() {
        let t = cstr(m.dir.as_bytes());
        // SAFETY: umount2 of a NUL-terminated path.
        if unsafe { libc::umount2(t.as_ptr(), 0) } != 0 {
            let e = errno();
            if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
                continue;
            }
            say(&format!("umount {}: {e}", m.dir));
            // SAFETY: sync has no preconditions.
            unsafe { libc::sync() };
            ok = false;
        }
    }
    ok
}

/// Exit status as the guest interface reports it.
fn status_code(wstatus: libc::c_int) -> u32 {
    if libc::WIFEXITED(wstatus) {
        libc::WEXITSTATUS(wstatus) as u32
    } else if libc::WIFSIGNALED(wstatus) {
        128 + libc::WTERMSIG(wstatus) as u32
    } else {
        255
    }
}

/// What the launcher needs to start the workload.
struct Launch<'a> {
    /// The guest-signal device, if present.
    dev: Option<&'a SignalDevice>,
    /// Wait for the command in the mailbox first (`rv.snapshot=1`).
    from_mailbox: bool,
    /// The workload command line (the mailbox's, when not empty, wins).
    argv: Vec<OsString>,
    /// The disks to mount first, or why the request is malformed.
    mounts: &'a Result<Vec<MountRequest>, String>,
}

/// Forks the launcher, the process that becomes the workload; returns its
/// pid, or the status to report. The fork comes before the wait for a
/// snapshot's mailbox, so that a restored guest only has the exec left to
/// do: a fork costs about 100 ms where the guest kernel is emulated.
fn spawn_launcher(launch: Launch<'_>) -> Result<libc::pid_t, u32> {
    // SAFETY: fork in a single-threaded process, so the child may allocate.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        say(&format!("fork: {}", errno()));
        return Err(255);
    }
    if pid == 0 {
        launcher(launch);
    }
    Ok(pid)
}

/// The launcher (a child of init): its own session with the console as its
/// controlling terminal; waits for the mailbox's command when asked (and
/// then sets the wall clock, which a restore left behind); mounts the
/// disks; writes `WORKLOAD_STARTED` and execs the workload. Exits with [`MOUNT_FAILED_STATUS`] when a mount fails and
/// 127 when the exec does.
fn launcher(launch: Launch<'_>) -> ! {
    // SAFETY: setsid and ioctl(TIOCSCTTY) take no pointers.
    unsafe {
        libc::setsid();
        libc::ioctl(0, libc::TIOCSCTTY, 0);
    }
    let mut argv = launch.argv;
    if let (Some(d), true) = (launch.dev, launch.from_mailbox) {
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
        let uptime = uptime.split_whitespace().next().unwrap_or("?");
        say(&format!(
            "ready for a workload at uptime {uptime} s; waiting in the guest-signal mailbox"
        ));
        // SAFETY: tcdrain only waits on the given descriptor.
        unsafe { libc::tcdrain(1) };
        let command = d.wait_for_command();
        if !command.is_empty() {
            argv = command;
        }
        // Only here: a cold boot's kernel read the wall clock at boot, and
        // setting it costs emulated kernel work on nested PVM.
        d.set_wall_clock();
    }
    let mounted = launch
        .mounts
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|requests| requests.iter().try_for_each(mount_disk));
    if let Err(e) = mounted {
        say(&format!("{e}; not running the workload"));
        // SAFETY: _exit ends this process only.
        unsafe { libc::_exit(MOUNT_FAILED_STATUS as libc::c_int) };
    }
    if let Some(d) = launch.dev {
        d.write(REG_WORKLOAD_STARTED, 1);
    }
    let shown: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
    say(&format!("running {}", shown.join(" ")));
    let cargs: Vec<CString> = argv.iter().map(|a| cstr(a.as_bytes())).collect();
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(ptr::null());
    // SAFETY: ptrs is NULL-terminated and its strings outlive execv.
    unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
    say(&format!(
        "exec of {} failed: {}",
        argv[0].to_string_lossy(),
        errno()
    ));
    // SAFETY: _exit ends this process only.
    unsafe { libc::_exit(127) }
}

/// Waits for `pid`, reaping any other child (orphans re-parented to us).
fn wait_for(pid: libc::pid_t) -> u32 {
    loop {
        let mut ws: libc::c_int = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut ws, 0) };
        if r == pid {
            return status_code(ws);
        }
        if r < 0 {
            let e = errno();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            say(&format!("waitpid: {e}"));
            return 255;
        }
    }
}

/// Reaps children that have already exited, without blocking.
fn reap_rest() {
    loop {
        let mut ws: libc::c_int = 0;
        // SAFETY: waitpid with a valid status pointer.
        if unsafe { libc::waitpid(-1, &mut ws, libc::WNOHANG) } <= 0 {
            break;
        }
    }
}

fn reexec_with_tunables(args: &[OsString]) {
    if std::env::var_os(REEXEC_MARK).is_some() {
        return;
    }
    std::env::set_var("GLIBC_TUNABLES", GLIBC_TUNABLES);
    std::env::set_var(REEXEC_MARK, "1");
    let cargs: Vec<CString> = args.iter().map(|a| cstr(a.as_bytes())).collect();
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(ptr::null());
    let me = cstr(b"/init");
    // SAFETY: NULL-terminated argv of strings that outlive the call; execv
    // uses the environment set above.
    unsafe { libc::execv(me.as_ptr(), ptrs.as_ptr()) };
    say(&format!(
        "re-exec with GLIBC_TUNABLES failed ({}); continuing without",
        errno()
    ));
}

/// Ends the guest without the guest-signal device. Power-off needs ACPI,
/// which the guest kernel leaves out (without it the kernel only halts and
/// QEMU waits forever), so reset the guest instead: with `reboot=k` that is
/// a keyboard-controller reset (then a triple fault), which `ringvisor run`
/// reports as status 0 and `qemu -no-reboot` turns into an exit.
fn power_off() -> ! {
    // SAFETY: sync and reboot have no memory-safety preconditions.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    // Only reached when the kernel refused; init must not exit.
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

pub fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    reexec_with_tunables(&args);
    std::env::remove_var(REEXEC_MARK);
    std::env::set_var("PATH", "/bin");

    mount("proc", "/proc", "proc", None);
    mount("sysfs", "/sys", "sysfs", None);
    mount("devtmpfs", "/dev", "devtmpfs", None);
    mount("hugetlbfs", "/dev/hugepages", "hugetlbfs", None);

    let dev = match SignalDevice::open() {
        Ok(d) => {
            d.write(REG_BOOT_MARKER, 1);
            Some(d)
        }
        Err(e) => {
            say(&format!("{e}; will reset the guest at the end"));
            None
        }
    };

    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let requested = mounts(cmdline.trim_end());
    let launch = Launch {
        dev: dev.as_ref(),
        from_mailbox: snapshot_requested(&cmdline),
        argv: workload(&args, cmdline.trim_end()),
        mounts: &requested,
    };
    let mut status = match spawn_launcher(launch) {
        Ok(pid) => wait_for(pid),
        Err(s) => s,
    };
    reap_rest();
    let requested = requested.unwrap_or_default();
    if !unmount_disks(&requested) && status == 0 {
        status = MOUNT_FAILED_STATUS;
    }
    say(&format!("workload exited with status {status}"));
    // The console transmits asynchronously: wait until everything written
    // so far has left the UART, or the VMM stops the guest mid-line.
    // SAFETY: tcdrain only waits on the given descriptors.
    unsafe {
        libc::tcdrain(1);
        libc::tcdrain(2);
    }

    match dev {
        Some(d) => {
            d.write(REG_EXIT, status & 0xff);
            // The VMM stops the guest on that write; if it did not,
            // reset rather than let init exit (a kernel panic).
            power_off();
        }
        None => power_off(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn workload_default_and_named() {
        assert_eq!(workload_name("console=ttyS0 panic=-1"), "demo");
        assert_eq!(
            workload_name("console=ttyS0 rv.workload=clone-suite x=1"),
            "clone-suite"
        );
        assert_eq!(workload_name("rv.workload="), "demo");
        assert_eq!(workload_name("a rv.workload=one -- rv.workload=two"), "one");
    }

    #[test]
    fn workload_argv_wins() {
        let args: Vec<OsString> = ["/init", "noxsave", "/bin/sh", "-c", "exit 3"]
            .iter()
            .map(OsString::from)
            .collect();
        let w = workload(&args, "noxsave rv.workload=demo -- /bin/sh -c \"exit 3\"");
        assert_eq!(w, args[2..].to_vec());
        // Bare unknown words without ` -- ` are not a workload.
        let w = workload(&args[..2], "console=ttyS0 noxsave rv.workload=demo");
        assert_eq!(w, vec![OsStr::new("/bin/demo").to_os_string()]);
        assert_eq!(kernel_word_count(" a  \"b c\" d"), 3);
        let w = workload(&args[..1], "rv.workload=ring-pool");
        assert_eq!(w, vec![OsStr::new("/bin/ring-pool").to_os_string()]);
    }

    #[test]
    fn mount_requests_parse() {
        assert_eq!(mounts("console=ttyS0 rv.workload=demo"), Ok(vec![]));
        let m = mounts("a rv.mount=/dev/vda:/mnt rv.mount=/dev/vdb:/data:xfs:ro,noatime,x=1 -- rv.mount=/dev/vdc:/no").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0],
            MountRequest {
                device: "/dev/vda".into(),
                dir: "/mnt".into(),
                fstype: "ext4".into(),
                options: String::new(),
            }
        );
        assert_eq!(
            (m[1].fstype.as_str(), m[1].options.as_str()),
            ("xfs", "ro,noatime,x=1")
        );
        assert_eq!(
            mount_flags(&m[1].options),
            (libc::MS_RDONLY | libc::MS_NOATIME, "x=1".to_string())
        );
        for bad in [
            "rv.mount=/dev/vda",
            "rv.mount=vda:/mnt",
            "rv.mount=/dev/vda:mnt",
            "rv.mount=",
        ] {
            let e = mounts(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn mailbox_commands_and_the_snapshot_flag() {
        assert_eq!(
            mailbox_argv(b"/bin/sh\0-c\0exit 3\0"),
            ["/bin/sh", "-c", "exit 3"]
                .iter()
                .map(OsString::from)
                .collect::<Vec<_>>()
        );
        assert!(mailbox_argv(b"").is_empty());
        assert!(snapshot_requested("console=ttyS0 rv.snapshot=1"));
        assert!(!snapshot_requested("console=ttyS0 -- rv.snapshot=1"));
        assert!(!snapshot_requested("rv.snapshot=0"));
    }

    #[test]
    fn statuses() {
        assert_eq!(status_code(3 << 8), 3);
        assert_eq!(status_code(9), 137);
        assert_eq!(status_code(11), 139);
    }
}
