//! The `--file HOST[:GUEST]` value.

use std::path::PathBuf;

use super::tree::guest_name;
use super::FilesError;

/// One `--file`: a host file or directory and where it goes in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The host path as given.
    pub host: PathBuf,
    /// The absolute guest path; `None`: the host path made absolute.
    pub guest: Option<String>,
    /// The value as given, for messages.
    pub text: String,
}

impl std::str::FromStr for FileSpec {
    type Err = FilesError;

    /// `HOST` or `HOST:GUEST`. The split is at the last `:` that is
    /// followed by `/`, so a host name with a colon still works when a
    /// guest path is given.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| FilesError::Spec {
            spec: s.to_string(),
            why: why.to_string(),
        };
        let (host, guest) = match s.rfind(":/") {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None if s.ends_with(':') => return Err(bad("the guest path after ':' is empty")),
            None => (s, None),
        };
        if host.is_empty() {
            return Err(bad("the host path is empty"));
        }
        if let Some(g) = guest {
            guest_name(g).map_err(|why| bad(&format!("guest path {g} {why}")))?;
        }
        Ok(FileSpec {
            host: PathBuf::from(host),
            guest: guest.map(str::to_string),
            text: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_guest_split() {
        let f: FileSpec = "/usr/bin/jq".parse().unwrap();
        assert_eq!((f.host.to_str(), f.guest), (Some("/usr/bin/jq"), None));
        let f: FileSpec = "build/prog:/opt/prog".parse().unwrap();
        assert_eq!(f.host, PathBuf::from("build/prog"));
        assert_eq!(f.guest.as_deref(), Some("/opt/prog"));
        let f: FileSpec = "odd:name:/x".parse().unwrap();
        assert_eq!(f.host, PathBuf::from("odd:name"));
        let f: FileSpec = "odd:name".parse().unwrap();
        assert_eq!(f.host, PathBuf::from("odd:name"));
    }

    #[test]
    fn bad_values_are_named() {
        for bad in ["", ":/x", "a:", "a:/", "a:/x/../y"] {
            let e = bad.parse::<FileSpec>().unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
