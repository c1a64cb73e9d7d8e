//! Where glibc's dynamic loader looks for a `DT_NEEDED` library, as pure
//! functions: the order of directories for one requesting object, the
//! expansion of `$ORIGIN`, `$LIB` and `$PLATFORM`, and the lines of
//! `/etc/ld.so.conf` (which `ldconfig` turns into the loader's cache).
//!
//! The order (glibc `_dl_map_object`, `man ld.so`): a name with a slash is
//! a path; else `DT_RPATH` of the requester and then of the executable
//! (only when the requester has no `DT_RUNPATH`), `LD_LIBRARY_PATH` (not
//! used: the guest's environment is not the host's), `DT_RUNPATH` of the
//! requester, the `ld.so.conf` directories (the cache), and the default
//! directories.

use std::path::{Component, Path, PathBuf};

/// The loader's built-in directories on x86-64 Debian (multiarch first),
/// searched after the `ld.so.conf` directories.
pub const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// What `$LIB` expands to on x86-64 Debian.
const LIB: &str = "lib/x86_64-linux-gnu";
/// What `$PLATFORM` expands to on x86-64.
const PLATFORM: &str = "x86_64";

/// One line of an `ld.so.conf` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfLine {
    /// A directory to search.
    Dir(String),
    /// `include PATTERN`: more files (a glob, relative to the including
    /// file's directory unless absolute).
    Include(String),
    /// A blank line, a comment or a `hwcap` line (ignored by ldconfig).
    Nothing,
}

/// Parses one line of `ld.so.conf` as ldconfig does: `#` starts a comment,
/// `include` takes patterns, a directory may carry an obsolete `=TYPE`.
pub fn parse_conf_line(line: &str) -> Vec<ConfLine> {
    let line = line.split('#').next().unwrap_or_default().trim();
    if line.is_empty() || line.starts_with("hwcap ") {
        return vec![ConfLine::Nothing];
    }
    if let Some(rest) = line.strip_prefix("include") {
        if rest.starts_with([' ', '\t']) {
            return rest
                .split_ascii_whitespace()
                .map(|p| ConfLine::Include(p.to_string()))
                .collect();
        }
    }
    let dir = line.split_once('=').map_or(line, |(d, _)| d).trim_end();
    vec![ConfLine::Dir(dir.trim_end_matches('/').to_string())]
}

/// The directories of an `ld.so.conf` tree, in order (an `include` is
/// processed in place, as ldconfig does). `read` returns a file's text
/// (None when it cannot be read, which ldconfig also skips); `expand` lists
/// the files an include pattern matches, sorted.
pub fn conf_dirs(
    conf: &Path,
    read: &mut dyn FnMut(&Path) -> Option<String>,
    expand: &mut dyn FnMut(&str) -> Vec<PathBuf>,
) -> Vec<String> {
    let mut dirs = Vec::new();
    conf_file(conf, 0, read, expand, &mut dirs);
    dirs
}

fn conf_file(
    file: &Path,
    depth: u32,
    read: &mut dyn FnMut(&Path) -> Option<String>,
    expand: &mut dyn FnMut(&str) -> Vec<PathBuf>,
    dirs: &mut Vec<String>,
) {
    // Include loops end at a fixed depth.
    if depth > 8 {
        return;
    }
    let Some(text) = read(file) else { return };
    let base = file.parent().unwrap_or(Path::new("/"));
    for line in text.lines().flat_map(parse_conf_line) {
        match line {
            ConfLine::Dir(d) if !d.is_empty() && !dirs.contains(&d) => dirs.push(d),
            ConfLine::Include(p) => {
                let pattern = if p.starts_with('/') {
                    p
                } else {
                    base.join(p).to_string_lossy().into_owned()
                };
                for f in expand(&pattern) {
                    conf_file(&f, depth + 1, read, expand, dirs);
                }
            }
            _ => {}
        }
    }
}

/// Expands `$ORIGIN`, `$LIB` and `$PLATFORM` (also in `${...}` form) in a
/// search directory or needed name; `origin` is the directory of the
/// object that names it.
pub fn expand_tokens(s: &str, origin: &Path) -> String {
    let origin = origin.to_string_lossy();
    let mut out = s.to_string();
    for (token, value) in [("ORIGIN", &*origin), ("LIB", LIB), ("PLATFORM", PLATFORM)] {
        out = out
            .replace(&format!("${{{token}}}"), value)
            .replace(&format!("${token}"), value);
    }
    out
}

/// What the loader knows about the object that needs a library.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The directory it was loaded from (`$ORIGIN`).
    pub origin: &'a Path,
    /// Its `DT_RPATH`.
    pub rpath: &'a [String],
    /// Its `DT_RUNPATH`.
    pub runpath: &'a [String],
}

/// The candidate paths for `name`, in the loader's order.
pub fn candidates(
    name: &str,
    requester: Requester<'_>,
    executable: Option<Requester<'_>>,
    conf_dirs: &[String],
) -> Vec<PathBuf> {
    if name.contains('/') {
        return vec![normalize(Path::new(&expand_tokens(name, requester.origin)))];
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut push = |dir: String| {
        let dir = normalize(Path::new(&dir));
        if dir.is_absolute() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    };
    if requester.runpath.is_empty() {
        for r in std::iter::once(requester).chain(executable) {
            if r.runpath.is_empty() {
                r.rpath
                    .iter()
                    .for_each(|d| push(expand_tokens(d, r.origin)));
            }
        }
    }
    for d in requester.runpath {
        push(expand_tokens(d, requester.origin));
    }
    conf_dirs.iter().cloned().for_each(&mut push);
    DEFAULT_DIRS.iter().map(|d| d.to_string()).for_each(push);
    dirs.into_iter().map(|d| d.join(name)).collect()
}

/// Removes `.` and resolves `..` lexically (as the loader does with a
/// search directory string before it opens the file).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_lines_parse_like_ldconfig() {
        assert_eq!(
            parse_conf_line("  /usr/local/lib/ # multiarch"),
            vec![ConfLine::Dir("/usr/local/lib".into())]
        );
        assert_eq!(
            parse_conf_line("include /etc/ld.so.conf.d/*.conf other.conf"),
            vec![
                ConfLine::Include("/etc/ld.so.conf.d/*.conf".into()),
                ConfLine::Include("other.conf".into())
            ]
        );
        assert_eq!(parse_conf_line("# only a comment"), vec![ConfLine::Nothing]);
        assert_eq!(parse_conf_line("hwcap 0 nosegneg"), vec![ConfLine::Nothing]);
        assert_eq!(
            parse_conf_line("/opt/old=libc6"),
            vec![ConfLine::Dir("/opt/old".into())]
        );
        // A directory that merely starts with "include".
        assert_eq!(
            parse_conf_line("includes/lib"),
            vec![ConfLine::Dir("includes/lib".into())]
        );
    }

    #[test]
    fn conf_includes_are_followed_in_order_and_loops_end() {
        let files = |p: &Path| -> Option<String> {
            match p.to_str()? {
                "/etc/ld.so.conf" => Some("include ld.so.conf.d/*.conf\n/opt/last\n".into()),
                "/etc/ld.so.conf.d/a.conf" => Some("/opt/a\n/opt/shared\n".into()),
                "/etc/ld.so.conf.d/b.conf" => {
                    Some("/opt/b\n/opt/shared\ninclude /etc/ld.so.conf\n".into())
                }
                _ => None,
            }
        };
        let mut read = files;
        let mut calls = 0;
        let mut expand = |pattern: &str| {
            calls += 1;
            match pattern {
                "/etc/ld.so.conf.d/*.conf" => vec![
                    PathBuf::from("/etc/ld.so.conf.d/a.conf"),
                    PathBuf::from("/etc/ld.so.conf.d/b.conf"),
                ],
                "/etc/ld.so.conf" => vec![PathBuf::from(pattern)],
                other => panic!("unexpected pattern {other}"),
            }
        };
        let dirs = conf_dirs(Path::new("/etc/ld.so.conf"), &mut read, &mut expand);
        assert_eq!(dirs, ["/opt/a", "/opt/shared", "/opt/b", "/opt/last"]);
        // The include loop (b.conf includes ld.so.conf) ended.
        assert!(calls < 40, "{calls} includes expanded");
    }

    #[test]
    fn tokens_expand() {
        let o = Path::new("/opt/app/bin");
        assert_eq!(expand_tokens("$ORIGIN/../lib", o), "/opt/app/bin/../lib");
        assert_eq!(expand_tokens("${ORIGIN}/x", o), "/opt/app/bin/x");
        assert_eq!(
            expand_tokens("/usr/$LIB/$PLATFORM", o),
            "/usr/lib/x86_64-linux-gnu/x86_64"
        );
    }

    #[test]
    fn candidates_follow_the_loader_order() {
        let exe_rpath = vec!["/exe/rpath".to_string()];
        let exe = Requester {
            origin: Path::new("/opt/app/bin"),
            rpath: &exe_rpath,
            runpath: &[],
        };
        let lib_rpath = vec!["$ORIGIN/../private".to_string()];
        let lib = Requester {
            origin: Path::new("/opt/app/lib"),
            rpath: &lib_rpath,
            runpath: &[],
        };
        let conf = vec!["/usr/local/lib".to_string()];
        let c = candidates("libx.so.1", lib, Some(exe), &conf);
        let shown: Vec<_> = c.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            shown[..4],
            [
                "/opt/app/private/libx.so.1",
                "/exe/rpath/libx.so.1",
                "/usr/local/lib/libx.so.1",
                "/lib/x86_64-linux-gnu/libx.so.1"
            ]
        );
        assert_eq!(c.len(), 3 + DEFAULT_DIRS.len());

        // DT_RUNPATH turns off every DT_RPATH, the executable's too.
        let runpath = vec!["$ORIGIN".to_string()];
        let lib = Requester {
            runpath: &runpath,
            ..lib
        };
        let c = candidates("libx.so.1", lib, Some(exe), &[]);
        assert_eq!(c[0], Path::new("/opt/app/lib/libx.so.1"));
        assert_eq!(c[1], Path::new("/lib/x86_64-linux-gnu/libx.so.1"));

        // A name with a slash is a path.
        let c = candidates("$ORIGIN/../libz.so", lib, None, &conf);
        assert_eq!(c, vec![PathBuf::from("/opt/app/libz.so")]);
    }
}
