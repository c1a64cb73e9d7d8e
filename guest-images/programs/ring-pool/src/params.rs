//! Workload parameters: defaults, the kernel command line (`rv.pool.*`),
//! then command-line flags, each overriding the one before.

use guest_common::cli::CliError;
use thiserror::Error;

/// Largest single registered buffer the kernel accepts (`SZ_1G`).
pub const MAX_BUF: u64 = 1 << 30;
/// `IORING_MAX_REG_BUFFERS`.
pub const MAX_BUFS: u64 = 1 << 14;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("bad size {0:?} (want e.g. 4096, 512K, 64M, 1G)")]
    Size(String),
    #[error("bad page size {0:?} (want 2M or 4K)")]
    Page(String),
    #[error("bad ring count {0:?} (want an integer >= 1, or a list such as 1,2,4,8)")]
    Rings(String),
    #[error("unknown option {0:?} (see --help)")]
    Unknown(String),
    #[error("option {0} needs a value")]
    Missing(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<CliError> for ParamError {
    fn from(e: CliError) -> Self {
        match e {
            CliError::Missing(what) => ParamError::Missing(what),
            CliError::Unknown(what) => ParamError::Unknown(what),
        }
    }
}

/// Backing page size of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    Huge2M,
    Small4K,
}

impl PageSize {
    pub fn bytes(self) -> u64 {
        match self {
            PageSize::Huge2M => 2 << 20,
            PageSize::Small4K => 4 << 10,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            PageSize::Huge2M => "2M",
            PageSize::Small4K => "4K",
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Ring counts, measured one after the other on the same pool (a
    /// sweep); each count gets fresh rings.
    pub rings: Vec<usize>,
    pub size: u64,
    pub page: PageSize,
    /// Bytes per registered buffer; `None`: min(size, 1 GiB).
    pub buf: Option<u64>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            rings: vec![8],
            size: 16 << 20,
            page: PageSize::Huge2M,
            buf: None,
        }
    }
}

/// Parses `4096`, `512K`, `64M`, `1G`, `2T` (binary units, optional `iB`/`B`).
pub fn parse_size(s: &str) -> Result<u64, ParamError> {
    let err = || ParamError::Size(s.to_string());
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| err())?;
    let v = n
        .checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(err)?;
    if v == 0 {
        return Err(err());
    }
    Ok(v)
}

pub fn parse_page(s: &str) -> Result<PageSize, ParamError> {
    match s.trim() {
        "2M" | "2m" | "2MiB" | "2048K" | "2048k" => Ok(PageSize::Huge2M),
        "4K" | "4k" | "4KiB" | "4096" => Ok(PageSize::Small4K),
        _ => Err(ParamError::Page(s.to_string())),
    }
}

/// Most rings of one count: far beyond any sweep, below the default
/// RLIMIT_NOFILE of 1024 with the rings of the other counts.
pub const MAX_RINGS: usize = 512;

/// `8` or `1,2,4,8`: each count from 1 to [`MAX_RINGS`].
fn parse_rings(s: &str) -> Result<Vec<usize>, ParamError> {
    s.split(',')
        .map(|w| match w.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_RINGS).contains(&n) => Ok(n),
            _ => Err(ParamError::Rings(s.to_string())),
        })
        .collect()
}

impl Params {
    /// The buffer size in effect: explicit, or min(size, 1 GiB).
    pub fn buf_bytes(&self) -> u64 {
        self.buf.unwrap_or(self.size.min(MAX_BUF))
    }
}

/// Splits `size` bytes into `(offset, len)` buffers of `buf` bytes; the last
/// one takes the remainder.
pub fn split(size: u64, buf: u64) -> Vec<(u64, u64)> {
    (0..size.div_ceil(buf))
        .map(|i| {
            let off = i * buf;
            (off, buf.min(size - off))
        })
        .collect()
}

pub const USAGE: &str = "usage: ring-pool [--rings N[,N...]] [--size S] [--page 2M|4K] [--buf B]
Times giving N-1 rings a pool of S bytes (buffers of B bytes, at most 1 GiB
each) already registered on a first ring: by registering it again and by
cloning it (IORING_REGISTER_CLONE_BUFFERS). A list of ring counts measures
each count in turn on fresh rings and the same pool (N=1: the first
registration only). Every sample is printed. Defaults: 8 rings, 16M, 2M pages
(4K if no hugepages are free), B = min(S, 1G). The kernel command line's
rv.pool.rings= rv.pool.size= rv.pool.page= rv.pool.buf= apply first; flags
override them. Results are JSON lines on stdout, progress on stderr.";

impl guest_common::cli::Params for Params {
    type Error = ParamError;
    const PREFIX: &'static str = "rv.pool.";

    /// Unknown keys are errors, on the kernel command line too (a typo
    /// must not silently run the defaults).
    fn set(&mut self, key: &str, value: &str) -> Result<(), ParamError> {
        match key {
            "rings" => self.rings = parse_rings(value)?,
            "size" => self.size = parse_size(value)?,
            "page" => self.page = parse_page(value)?,
            "buf" => self.buf = Some(parse_size(value)?),
            _ => return Err(ParamError::Unknown(key.to_string())),
        }
        Ok(())
    }

    /// Checks the limits the kernel imposes on a registration.
    fn validate(&self) -> Result<(), ParamError> {
        // Every ring stays open to the end (plus two for the clone probe),
        // each an fd: stay under the default RLIMIT_NOFILE of 1024.
        let open: usize = self.rings.iter().sum::<usize>() + 2;
        if open > 1000 {
            return Err(ParamError::Invalid(format!(
                "{open} rings open at once: at most 1000 (fewer or smaller ring counts)"
            )));
        }
        let buf = self.buf_bytes();
        if buf > MAX_BUF {
            return Err(ParamError::Invalid(format!(
                "buffer of {buf} bytes: the kernel's limit is 1 GiB"
            )));
        }
        if buf > self.size {
            return Err(ParamError::Invalid(format!(
                "buffer of {buf} bytes exceeds the pool of {}",
                self.size
            )));
        }
        if self.size.div_ceil(buf) > MAX_BUFS {
            return Err(ParamError::Invalid(format!(
                "{} buffers: the kernel's limit is {MAX_BUFS}",
                self.size.div_ceil(buf)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_common::cli::Params as _;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2 << 20));
        assert_eq!(parse_size("3T"), Ok(3 << 40));
        for bad in ["", "M", "0", "-1", "1.5G", "12Q", "99999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pages() {
        assert_eq!(parse_page("2M"), Ok(PageSize::Huge2M));
        assert_eq!(parse_page("4K"), Ok(PageSize::Small4K));
        assert!(parse_page("1G").is_err());
    }

    #[test]
    fn cmdline_then_flags() {
        let mut p = Params::default();
        p.apply_cmdline(
            "console=ttyS0 rv.workload=ring-pool rv.pool.rings=4 rv.pool.size=64M rv.pool.page=4K -- rv.pool.rings=9",
        )
        .unwrap();
        assert_eq!(
            p,
            Params {
                rings: vec![4],
                size: 64 << 20,
                page: PageSize::Small4K,
                buf: None
            }
        );
        let more = ["--size", "1G", "--page=2M", "--buf", "256M"].map(String::from);
        assert_eq!(p.apply_args(more), Ok(true));
        assert_eq!(
            p,
            Params {
                rings: vec![4],
                size: 1 << 30,
                page: PageSize::Huge2M,
                buf: Some(256 << 20)
            }
        );
        assert_eq!(p.apply_args(["--help".to_string()]), Ok(false));
        let sweep = ["--rings", "1,2,4,64"].map(String::from);
        assert_eq!(p.apply_args(sweep), Ok(true));
        assert_eq!(p.rings, vec![1, 2, 4, 64]);
    }

    #[test]
    fn cmdline_errors() {
        let mut p = Params::default();
        assert!(p.apply_cmdline("rv.pool.rings=0").is_err());
        assert!(p.apply_cmdline("rv.pool.rings=1,,2").is_err());
        assert!(p.apply_cmdline("rv.pool.rings=513").is_err());
        assert!(p.apply_cmdline("rv.pool.sise=1M").is_err());
        assert!(p.apply_cmdline("rv.pool.size").is_err());
        assert!(p.apply_args(["--rings".to_string()]).is_err());
        assert!(p.apply_args(["--bogus=1".to_string()]).is_err());
        assert!(p.apply_args(["stray".to_string()]).is_err());
    }

    #[test]
    fn buffers() {
        let p = Params {
            size: 4 << 30,
            ..Params::default()
        };
        assert_eq!(p.buf_bytes(), 1 << 30);
        assert!(p.validate().is_ok());
        let p = Params {
            buf: Some(2 << 30),
            size: 4 << 30,
            ..Params::default()
        };
        assert!(p.validate().is_err());
        let p = Params {
            buf: Some(4096),
            size: 1 << 30,
            ..Params::default()
        };
        assert!(p.validate().is_err(), "262144 buffers");
        let p = Params {
            rings: vec![500, 500],
            ..Params::default()
        };
        assert!(p.validate().is_err(), "1002 rings open");
        assert_eq!(split(10, 4), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(split(8, 4), vec![(0, 4), (4, 4)]);
    }
}
