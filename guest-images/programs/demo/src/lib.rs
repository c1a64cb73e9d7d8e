//! The default workload of a ringvisor guest: prints the guest kernel
//! version (uname) and the number of online CPUs, then exits 0.

use std::ffi::CStr;

fn field(f: &[libc::c_char]) -> String {
    // SAFETY: uname() NUL-terminates every field it fills in.
    unsafe { CStr::from_ptr(f.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

pub fn main() {
    // SAFETY: utsname is plain data, for which all zeroes are valid.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname() fills in the utsname it is given.
    if unsafe { libc::uname(&mut uts) } != 0 {
        eprintln!("demo: uname: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    println!(
        "demo: kernel {} {} {}",
        field(&uts.sysname),
        field(&uts.release),
        field(&uts.machine)
    );
    println!("demo: {cpus} CPU(s) online");
}
