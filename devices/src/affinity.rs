//! Host CPU placement (vCPU threads, SQ threads, device workers): the kernel's CPU-list syntax (`1`, `0-3`,
//! `0,2-3`) and the calling thread's affinity (`sched_getaffinity` /
//! `sched_setaffinity`).

use std::fmt::Write as _;
use std::io;

use thiserror::Error;

/// CPUs a `cpu_set_t` can name (`CPU_SETSIZE`): 0 to 1023.
pub const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

/// A CPU list that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CpuListError {
    /// An empty list or an empty item (`0,,1`).
    #[error("empty CPU list or item")]
    Empty,
    /// An item that is not a number or a range of numbers.
    #[error("{0:?} is not a CPU number or a range N-M")]
    NotANumber(String),
    /// A range whose end is below its start (`3-1`).
    #[error("range {0:?} ends below its start")]
    Backwards(String),
    /// A CPU beyond what `cpu_set_t` holds.
    #[error("CPU {0} is beyond the highest CPU number {max}", max = MAX_CPUS - 1)]
    TooLarge(usize),
}

/// Restricting a thread to host CPUs (`sched_setaffinity`) failed.
#[derive(Debug, Error)]
#[error("sched_setaffinity to host CPUs {cpus}: {source}")]
pub struct AffinityError {
    /// The CPU list asked for.
    pub cpus: String,
    /// Why it failed.
    pub source: io::Error,
}

impl From<AffinityError> for io::Error {
    /// Keeps the error kind; the message names the CPUs.
    fn from(e: AffinityError) -> Self {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

/// Parses a CPU list in the kernel's syntax (`1`, `0-3`, `0,2-3`) into
/// sorted, distinct CPU numbers.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, CpuListError> {
    let number = |n: &str| -> Result<usize, CpuListError> {
        let n = n.trim();
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CpuListError::NotANumber(n.to_string()));
        }
        let cpu: usize = n
            .parse()
            .map_err(|_| CpuListError::NotANumber(n.to_string()))?;
        if cpu >= MAX_CPUS {
            return Err(CpuListError::TooLarge(cpu));
        }
        Ok(cpu)
    };
    let mut cpus = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(CpuListError::Empty);
        }
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if b < a {
                    return Err(CpuListError::Backwards(item.to_string()));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(number(item)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Formats CPU numbers in the kernel's list syntax, ranges collapsed
/// (`[0, 1, 2, 5]` gives `0-2,5`; no CPUs gives an empty string).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    out
}

/// The host CPUs the calling thread may run on (`sched_getaffinity(0)`).
/// Called from the main thread before any pinning, this is the set the
/// ringvisor process was started with (e.g. by taskset or a cpuset).
pub fn current_thread_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: all-zero bytes are a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t and the size passed is its size;
    // the kernel writes at most that many bytes.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..MAX_CPUS)
        // SAFETY: cpu < CPU_SETSIZE, inside the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Restricts the calling thread to `cpus` (`sched_setaffinity(0)`). Every
/// CPU must be below [`MAX_CPUS`] (as [`parse_cpu_list`] guarantees).
pub fn pin_current_thread(cpus: &[usize]) -> Result<(), AffinityError> {
    let set_err = |source| AffinityError {
        cpus: format_cpu_list(cpus),
        source,
    };
    // SAFETY: all-zero bytes are a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu >= MAX_CPUS {
            return Err(set_err(io::Error::from_raw_os_error(libc::EINVAL)));
        }
        // SAFETY: cpu < CPU_SETSIZE, inside the set.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a live, initialized cpu_set_t of the size passed;
    // the kernel only reads it.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        return Err(set_err(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("1"), Ok(vec![1]));
        assert_eq!(parse_cpu_list("0-3"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(parse_cpu_list("0,2-3"), Ok(vec![0, 2, 3]));
        assert_eq!(parse_cpu_list("3,1,1-2"), Ok(vec![1, 2, 3]));
        assert_eq!(parse_cpu_list("5-5"), Ok(vec![5]));
        assert_eq!(parse_cpu_list("1023"), Ok(vec![1023]));
    }

    #[test]
    fn bad_cpu_lists_are_refused() {
        assert_eq!(parse_cpu_list(""), Err(CpuListError::Empty));
        assert_eq!(parse_cpu_list("0,,1"), Err(CpuListError::Empty));
        assert_eq!(parse_cpu_list("1,"), Err(CpuListError::Empty));
        assert_eq!(
            parse_cpu_list("3-1"),
            Err(CpuListError::Backwards("3-1".into()))
        );
        assert_eq!(parse_cpu_list("1024"), Err(CpuListError::TooLarge(1024)));
        assert_eq!(
            parse_cpu_list("0-99999999999999999999"),
            Err(CpuListError::NotANumber("99999999999999999999".into()))
        );
        for bad in ["x", "-1", "1-", "-", "1-2-3", "+1", "0x1", "1.5"] {
            assert!(
                matches!(parse_cpu_list(bad), Err(CpuListError::NotANumber(_))),
                "{bad:?} parsed: {:?}",
                parse_cpu_list(bad)
            );
        }
    }

    #[test]
    fn cpu_lists_format_with_ranges() {
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(format_cpu_list(&[3]), "3");
        assert_eq!(format_cpu_list(&[0, 1]), "0-1");
        assert_eq!(format_cpu_list(&[5, 0, 1, 2, 7, 8]), "0-2,5,7-8");
        for s in ["0", "0-3", "0,2-3", "1,3,5-9"] {
            assert_eq!(format_cpu_list(&parse_cpu_list(s).unwrap()), s);
        }
    }

    #[test]
    fn a_thread_pins_itself_to_one_allowed_cpu() {
        let allowed = current_thread_cpus().unwrap();
        let cpu = *allowed.last().expect("no CPU allowed");
        let got = std::thread::spawn(move || {
            pin_current_thread(&[cpu]).unwrap();
            current_thread_cpus().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(got, vec![cpu]);
        // The spawning thread keeps its own set.
        assert_eq!(current_thread_cpus().unwrap(), allowed);
    }

    #[test]
    fn pinning_to_an_impossible_cpu_fails_with_the_list() {
        let e = std::thread::spawn(|| pin_current_thread(&[MAX_CPUS]).unwrap_err())
            .join()
            .unwrap();
        assert!(e.to_string().contains(&MAX_CPUS.to_string()), "{e}");
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
        assert!(io
            .to_string()
            .starts_with("sched_setaffinity to host CPUs 1024"));
    }
}
