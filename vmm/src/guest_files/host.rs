//! Reading the host: what each `--file` adds to the [`GuestTree`], and the
//! libraries ELF programs need, found with [`search`]'s order.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::elf::{self, ElfDeps, ElfError};
use super::search::{self, Requester, DEFAULT_DIRS};
use super::tree::{guest_name, GuestTree, Node};
use super::{FileSpec, FilesError};

/// The loader's configuration and cache on the host.
const LD_SO_CONF: &str = "/etc/ld.so.conf";
const LD_SO_CACHE: &str = "/etc/ld.so.cache";
/// The kernel's and glibc's limit on symlinks in one path.
const MAX_SYMLINKS: u32 = 40;

/// An ELF object whose libraries are still to be found.
struct Pending {
    /// Where the loader finds it (its directory is `$ORIGIN`).
    path: PathBuf,
    deps: ElfDeps,
    /// How messages name it.
    who: String,
}

/// Adds `--file` entries and their libraries to a tree.
pub struct Collector<'t> {
    tree: &'t mut GuestTree,
    /// The `ld.so.conf` directories, read on first use.
    conf_dirs: Option<Vec<String>>,
    /// Objects (by real host path) whose libraries were already added.
    resolved: HashSet<PathBuf>,
    /// A library came from an `ld.so.conf` directory the loader does not
    /// search without its cache.
    needs_cache: bool,
}

fn guest(path: &Path) -> Result<String, FilesError> {
    let text = path.to_string_lossy();
    guest_name(&text).map_err(|why| FilesError::Spec {
        spec: text.to_string(),
        why: format!("guest path {why}"),
    })
}

fn file_kind(t: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_socket() {
        "a socket"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "a device node"
    } else {
        "a special file"
    }
}

impl<'t> Collector<'t> {
    /// A collector that adds to `tree`.
    pub fn new(tree: &'t mut GuestTree) -> Self {
        Collector {
            tree,
            conf_dirs: None,
            resolved: HashSet::new(),
            needs_cache: false,
        }
    }

    /// Adds one `--file`: a file (following symlinks; an ELF file with its
    /// interpreter and libraries) or a directory (recursively; symlinks in
    /// it kept as symlinks, programs in it with their libraries).
    pub fn add_spec(&mut self, spec: &FileSpec) -> Result<(), FilesError> {
        let missing = |source| FilesError::Missing {
            spec: spec.text.clone(),
            path: spec.host.clone(),
            source,
        };
        let meta = fs::metadata(&spec.host).map_err(missing)?;
        let guest_path = match &spec.guest {
            Some(g) => PathBuf::from(g),
            None => search::normalize(&std::path::absolute(&spec.host).map_err(missing)?),
        };
        let name = guest(&guest_path)?;
        let origin = format!("--file {}", spec.text);
        if meta.is_dir() {
            self.add_dir(&spec.host, &name, &origin)
        } else if meta.is_file() {
            let real = fs::canonicalize(&spec.host).map_err(missing)?;
            self.add_file(&real, &name, meta.permissions().mode(), &origin, true)
        } else {
            Err(FilesError::Unsupported {
                path: spec.host.clone(),
                what: file_kind(meta.file_type()),
            })
        }
    }

    /// Adds what the libraries need once every `--file` is in: the host's
    /// loader cache when a library is only found through it.
    pub fn finish(&mut self) -> Result<(), FilesError> {
        if self.needs_cache && Path::new(LD_SO_CACHE).is_file() {
            self.place(
                Path::new(LD_SO_CACHE),
                "the host's loader cache, for a library from an ld.so.conf directory",
            )?;
        }
        Ok(())
    }

    /// A regular file at guest `name`; its libraries when it is a program
    /// (or any ELF object, when `explicit`).
    fn add_file(
        &mut self,
        host: &Path,
        name: &str,
        mode: u32,
        origin: &str,
        explicit: bool,
    ) -> Result<(), FilesError> {
        self.tree.add(
            name,
            Node::File {
                host: host.to_path_buf(),
                mode,
            },
            origin,
        )?;
        let read_err = |source| FilesError::Read {
            path: host.to_path_buf(),
            source,
        };
        // The magic first: a large data file is not read twice.
        let mut magic = [0u8; 4];
        let n = fs::File::open(host)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut magic))
            .map_err(read_err)?;
        if !elf::is_elf(&magic[..n]) {
            return Ok(());
        }
        let data = fs::read(host).map_err(read_err)?;
        let deps = match elf::parse(&data) {
            Ok(deps) => deps,
            Err(ElfError::WrongMachine(why)) => {
                log::warn!(
                    "{}: not an x86-64 ELF ({why}); added without libraries",
                    host.display()
                );
                return Ok(());
            }
            Err(source) => {
                return Err(FilesError::Elf {
                    path: host.to_path_buf(),
                    source,
                })
            }
        };
        if deps.interp.is_none() && !explicit {
            return Ok(());
        }
        let real = fs::canonicalize(host).unwrap_or_else(|_| host.to_path_buf());
        if !self.resolved.insert(real.clone()) {
            return Ok(());
        }
        self.resolve(Pending {
            path: real,
            deps,
            who: host.display().to_string(),
        })
    }

    fn add_dir(&mut self, host: &Path, name: &str, origin: &str) -> Result<(), FilesError> {
        self.tree.add(name, Node::Dir, origin)?;
        let read = |source| FilesError::Read {
            path: host.to_path_buf(),
            source,
        };
        let mut entries: Vec<_> = fs::read_dir(host)
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let child = format!("{name}/{}", entry.file_name().to_string_lossy());
            let meta = fs::symlink_metadata(&path).map_err(|source| FilesError::Read {
                path: path.clone(),
                source,
            })?;
            let t = meta.file_type();
            if t.is_symlink() {
                let target = fs::read_link(&path).map_err(|source| FilesError::Read {
                    path: path.clone(),
                    source,
                })?;
                let target = target.to_string_lossy().into_owned();
                self.tree.add(&child, Node::Symlink { target }, origin)?;
            } else if t.is_dir() {
                self.add_dir(&path, &child, origin)?;
            } else if t.is_file() {
                self.add_file(&path, &child, meta.permissions().mode(), origin, false)?;
            } else {
                log::warn!("--file: skipping {} ({})", path.display(), file_kind(t));
            }
        }
        Ok(())
    }

    fn conf_dirs(&mut self) -> &[String] {
        self.conf_dirs.get_or_insert_with(|| {
            let mut read = |p: &Path| fs::read_to_string(p).ok();
            let mut expand = |pattern: &str| -> Vec<PathBuf> {
                let mut files: Vec<PathBuf> = glob::glob(pattern)
                    .map(|paths| paths.filter_map(Result::ok).collect())
                    .unwrap_or_default();
                files.sort();
                files
            };
            search::conf_dirs(Path::new(LD_SO_CONF), &mut read, &mut expand)
        })
    }

    /// Adds the interpreter and the libraries of `first`, and theirs.
    fn resolve(&mut self, first: Pending) -> Result<(), FilesError> {
        let exe = first.deps.interp.is_some().then(|| {
            (
                first.path.parent().unwrap_or(Path::new("/")).to_path_buf(),
                first.deps.rpath.clone(),
                first.deps.runpath.clone(),
            )
        });
        if let Some(interp) = &first.deps.interp {
            fs::metadata(interp).map_err(|source| FilesError::InterpreterNotFound {
                interp: interp.clone(),
                program: first.who.clone(),
                source,
            })?;
            let real = self.place(Path::new(interp), &format!("interpreter of {}", first.who))?;
            self.resolved.insert(real);
        }
        let mut work = vec![first];
        while let Some(obj) = work.pop() {
            let origin = obj.path.parent().unwrap_or(Path::new("/")).to_path_buf();
            for name in &obj.deps.needed {
                let requester = Requester {
                    origin: &origin,
                    rpath: &obj.deps.rpath,
                    runpath: &obj.deps.runpath,
                };
                let exe_req = exe.as_ref().map(|(o, rpath, runpath)| Requester {
                    origin: o,
                    rpath,
                    runpath,
                });
                let conf = self.conf_dirs().to_vec();
                let candidates = search::candidates(name, requester, exe_req, &conf);
                let found = candidates
                    .iter()
                    .find_map(|c| usable_library(c).map(|deps| (c.clone(), deps)));
                let Some((path, deps)) = found else {
                    let searched: Vec<_> = candidates
                        .iter()
                        .filter_map(|c| c.parent())
                        .map(|d| d.display().to_string())
                        .collect();
                    return Err(FilesError::LibraryNotFound {
                        name: name.clone(),
                        needed_by: obj.who.clone(),
                        searched: searched.join(":"),
                    });
                };
                let dir = path.parent().map(|d| d.to_string_lossy().into_owned());
                if let Some(dir) = dir {
                    if conf.contains(&dir) && !DEFAULT_DIRS.contains(&dir.as_str()) {
                        self.needs_cache = true;
                    }
                }
                let real = self.place(&path, &format!("{name}, needed by {}", obj.who))?;
                if self.resolved.insert(real) {
                    work.push(Pending {
                        who: path.display().to_string(),
                        path,
                        deps,
                    });
                }
            }
        }
        Ok(())
    }

    /// Adds the host file at absolute `path` to the same guest path, each
    /// host symlink on the way as a symlink (unless the guest already has a
    /// directory there: then the path stays a directory). Returns the
    /// file's real host path.
    fn place(&mut self, path: &Path, origin: &str) -> Result<PathBuf, FilesError> {
        let mut pending = search::normalize(path);
        let mut links = 0;
        'walk: loop {
            let parts: Vec<_> = pending
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(p) => Some(p.to_os_string()),
                    _ => None,
                })
                .collect();
            let mut cur = PathBuf::from("/");
            for (i, part) in parts.iter().enumerate() {
                cur.push(part);
                let last = i + 1 == parts.len();
                let name = guest(&cur)?;
                let meta = fs::symlink_metadata(&cur).map_err(|source| FilesError::Read {
                    path: cur.clone(),
                    source,
                })?;
                let t = meta.file_type();
                let kept_as_dir = !last && self.tree.is_dir(&name);
                if t.is_symlink() && !kept_as_dir {
                    let target = fs::read_link(&cur).map_err(|source| FilesError::Read {
                        path: cur.clone(),
                        source,
                    })?;
                    let node = Node::Symlink {
                        target: target.to_string_lossy().into_owned(),
                    };
                    self.tree.add(&name, node, origin)?;
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(FilesError::SymlinkLoop {
                            path: path.to_path_buf(),
                        });
                    }
                    let mut next = cur.parent().unwrap_or(Path::new("/")).join(target);
                    next.extend(&parts[i + 1..]);
                    pending = search::normalize(&next);
                    continue 'walk;
                }
                if last {
                    if !t.is_file() {
                        return Err(FilesError::Unsupported {
                            path: cur,
                            what: if t.is_dir() {
                                "a directory"
                            } else {
                                file_kind(t)
                            },
                        });
                    }
                    let node = Node::File {
                        host: cur.clone(),
                        mode: meta.permissions().mode(),
                    };
                    self.tree.add(&name, node, origin)?;
                    return Ok(cur);
                }
                // A directory (or a host symlink kept as the guest's
                // directory): the tree adds it with the next part.
            }
            return Err(FilesError::Unsupported {
                path: path.to_path_buf(),
                what: "the root directory",
            });
        }
    }
}

/// The dependencies of `path` if the loader would take it as a library: a
/// readable x86-64 ELF file.
fn usable_library(path: &Path) -> Option<ElfDeps> {
    if !fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let data = fs::read(path).ok()?;
    elf::parse(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn collect(specs: &[&str], base: &[(&str, bool)]) -> Result<GuestTree, FilesError> {
        let mut tree = GuestTree::new(base.iter().map(|(n, d)| (n.to_string(), *d)), "base.cpio");
        let mut c = Collector::new(&mut tree);
        for s in specs {
            c.add_spec(&s.parse()?)?;
        }
        c.finish()?;
        Ok(tree)
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rv-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_host_program_brings_its_loader_and_libraries() {
        // /bin/sh (dash) needs libc.so.6 through /lib64/ld-linux-x86-64.so.2.
        let tree = collect(&["/bin/sh:/opt/sh"], &[("bin", true)]).unwrap();
        let interp = Path::new("/lib64/ld-linux-x86-64.so.2");
        let mut name = "lib64/ld-linux-x86-64.so.2".to_string();
        // Follow the guest tree's symlinks to a file, as the guest would.
        let mut hops = 0;
        loop {
            let mut cur = String::new();
            let mut redirected = None;
            for part in name.split('/') {
                if !cur.is_empty() {
                    cur.push('/');
                }
                cur.push_str(part);
                if let Some(Node::Symlink { target }) = tree.get(&cur) {
                    let rest = &name[cur.len()..];
                    let base = Path::new(&cur).parent().unwrap_or(Path::new(""));
                    let t = if let Some(abs) = target.strip_prefix('/') {
                        PathBuf::from(abs)
                    } else {
                        base.join(target)
                    };
                    let joined = format!("{}{rest}", t.display());
                    redirected = Some(search::normalize(Path::new(&joined)));
                    break;
                }
            }
            match redirected {
                Some(p) => name = p.to_string_lossy().into_owned(),
                None => break,
            }
            hops += 1;
            assert!(hops < 10, "symlink loop in the guest tree");
        }
        match tree.get(&name) {
            Some(Node::File { host, .. }) => {
                assert_eq!(
                    fs::canonicalize(host).unwrap(),
                    fs::canonicalize(interp).unwrap()
                )
            }
            other => panic!("{name}: {other:?}"),
        }
        let libc = tree
            .iter()
            .find(|(n, node)| n.ends_with("/libc.so.6") && matches!(node, Node::File { .. }));
        assert!(libc.is_some(), "no libc.so.6 file in the tree");
        assert!(matches!(tree.get("opt/sh"), Some(Node::File { .. })));
    }

    #[test]
    fn directories_recurse_with_symlinks_kept() {
        let dir = tmp("dir");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/data.txt"), "hello").unwrap();
        symlink("sub/data.txt", dir.join("link")).unwrap();
        let spec = format!("{}:/srv/d", dir.display());
        let tree = collect(&[&spec], &[]).unwrap();
        assert_eq!(
            tree.get("srv/d/link"),
            Some(&Node::Symlink {
                target: "sub/data.txt".into()
            })
        );
        assert!(matches!(
            tree.get("srv/d/sub/data.txt"),
            Some(Node::File { .. })
        ));
        assert_eq!(tree.get("srv/d/sub"), Some(&Node::Dir));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_what_failed() {
        let e = collect(&["/no/such/file"], &[]).unwrap_err().to_string();
        assert!(e.contains("/no/such/file"), "{e}");

        // Two --file entries on one guest path.
        let e = collect(&["/bin/sh:/x", "/etc/hostname:/x"], &[]).unwrap_err();
        assert!(matches!(e, FilesError::Collision { .. }), "{e}");
        // The same entry twice is fine.
        collect(&["/etc/hostname:/x", "/etc/hostname:/x"], &[]).unwrap();
        // A path of the base initramfs.
        let e = collect(
            &["/etc/hostname:/bin/sh"],
            &[("bin", true), ("bin/sh", false)],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/bin/sh") && e.contains("base.cpio"), "{e}");
    }

    #[test]
    fn a_missing_library_is_named_with_its_requester() {
        // A copy of /bin/sh whose DT_NEEDED "libc.so.6" is renamed to a
        // library no host has (same length: the string table stays valid).
        let dir = tmp("missing");
        let mut data = fs::read("/bin/sh").unwrap();
        let at = data
            .windows(10)
            .position(|w| w == b"libc.so.6\0")
            .expect("libc.so.6 in /bin/sh");
        data[at..at + 9].copy_from_slice(b"libq.so.6");
        let prog = dir.join("prog");
        fs::write(&prog, &data).unwrap();
        let spec = format!("{}:/prog", prog.display());
        let e = collect(&[&spec], &[]).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, FilesError::LibraryNotFound { .. }), "{text}");
        assert!(
            text.contains("libq.so.6") && text.contains(&prog.display().to_string()),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_symlinks_over_guest_directories_stay_directories() {
        // On merged-/usr hosts /lib is a symlink; a guest that already has
        // a /lib directory keeps it and gets the libraries inside.
        let tree = collect(&["/bin/sh:/opt/sh"], &[("lib", true), ("lib64", true)]).unwrap();
        assert!(tree.get("lib/x86_64-linux-gnu/libc.so.6").is_some());
        assert!(tree.get("lib").is_none());
        assert!(tree.get("lib64/ld-linux-x86-64.so.2").is_some());
    }
}
