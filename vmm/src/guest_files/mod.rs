//! `ringvisor run --file HOST[:GUEST]`: host files and directories in the
//! guest with no image build. At start the VMM writes them into a newc
//! archive in memory and appends it to the initramfs (Linux unpacks
//! concatenated archives over each other).
//!
//! For a dynamically linked ELF program it adds what the program needs to
//! start, found as the host's dynamic loader would find it: the
//! interpreter (`PT_INTERP`), and each `DT_NEEDED` library, recursively,
//! through `DT_RPATH`/`DT_RUNPATH` (with `$ORIGIN`), the `/etc/ld.so.conf`
//! directories and the default ones ([`search`]). Those go to the same
//! paths in the guest, with the host's symlinks along the way kept as
//! symlinks (`/lib64 -> usr/lib64`, `libjq.so.1 -> libjq.so.1.0.4`), so
//! the guest's loader, the host's own `ld.so`, finds them in its default
//! directories, or through `$ORIGIN`; when a library came from an
//! `ld.so.conf` directory outside those, the host's `/etc/ld.so.cache`
//! goes along too.
//!
//! What it does not do: `LD_LIBRARY_PATH` and `LD_PRELOAD` are not
//! followed (the guest's environment is rv-init's, not the caller's);
//! `glibc-hwcaps` subdirectories are not looked into (the guest runs with
//! AVX off, see rv-init, so the baseline library is the right one); a
//! program placed at a guest path other than its host path keeps its
//! libraries at their host paths, so a `$ORIGIN`-relative library is found
//! only when the whole tree keeps its host path (`--file /opt/app`). The
//! host's own files are trusted input (the user names them); the guest
//! never reaches this code, so it has no fuzz target.
//!
//! Crates: ELF is read with `object` (gimli-rs; bounds-checked, no unsafe
//! in the reader we use); the archive is written and a base initramfs's
//! paths are listed with `cpio` (newc both ways, no dependencies); include
//! patterns of `ld.so.conf` are expanded with `glob` (rust-lang).
//!
//! Layout: [`spec`] (the command-line value), [`elf`], [`search`],
//! [`tree`] (guest paths, collisions) and [`newc`] are pure and unit
//! tested; [`host`] reads the host's file system.

pub mod elf;
pub mod host;
pub mod newc;
pub mod search;
pub mod spec;
pub mod tree;

use std::path::{Path, PathBuf};

pub use spec::FileSpec;
use thiserror::Error;

/// Errors making the extra archive. Each names the path or value.
#[derive(Debug, Error)]
pub enum FilesError {
    /// A malformed `--file` value.
    #[error("invalid --file {spec:?}: {why}")]
    Spec { spec: String, why: String },
    /// A host path that does not exist or cannot be inspected.
    #[error("--file {spec}: cannot read {path}: {source}")]
    Missing {
        spec: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A host file that cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A needed library the loader's search would not find.
    #[error("library {name}, needed by {needed_by}, not found (searched {searched})")]
    LibraryNotFound {
        name: String,
        needed_by: String,
        searched: String,
    },
    /// The interpreter of a program does not exist on the host.
    #[error("interpreter {interp} of {program} not found: {source}")]
    InterpreterNotFound {
        interp: String,
        program: String,
        source: std::io::Error,
    },
    /// An ELF program or library that cannot be used.
    #[error("{path}: {source}")]
    Elf {
        path: PathBuf,
        source: elf::ElfError,
    },
    /// Two things want the same guest path.
    #[error("guest path {path} collides: {first} and {second}")]
    Collision {
        path: String,
        first: String,
        second: String,
    },
    /// A guest path that the base initramfs already holds.
    #[error("guest path {path} ({kind}, {origin}) is {base_kind} in the initramfs {base}")]
    BaseCollision {
        path: String,
        origin: String,
        kind: &'static str,
        base: String,
        base_kind: &'static str,
    },
    /// Something other than a file, directory or symlink.
    #[error("{path}: {what} cannot go into the guest (only files, directories and symlinks)")]
    Unsupported { path: PathBuf, what: &'static str },
    /// A symlink chain that does not end.
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: PathBuf },
    /// A file too big for newc (4 GiB).
    #[error("{path}: {size} bytes is too big for a newc archive (at most 4 GiB - 1)")]
    TooBig { path: String, size: u64 },
    /// Writing the archive failed.
    #[error("writing the --file archive: {0}")]
    Archive(String),
}

/// Makes the archive of `specs` to append to the initramfs `base` (its path
/// and bytes), checking guest paths against the base's own when it is an
/// uncompressed newc archive.
pub fn build_archive(
    specs: &[FileSpec],
    base: Option<(&Path, &[u8])>,
) -> Result<Vec<u8>, FilesError> {
    let (base_paths, base_name) = match base {
        Some((path, data)) => {
            let paths = newc::list_paths(data);
            if paths.is_none() {
                log::info!(
                    "{} is not an uncompressed newc archive: --file paths are not checked against it",
                    path.display()
                );
            }
            (paths.unwrap_or_default(), path.display().to_string())
        }
        None => (Vec::new(), String::new()),
    };
    let mut tree = tree::GuestTree::new(base_paths, &base_name);
    let mut collector = host::Collector::new(&mut tree);
    for spec in specs {
        collector.add_spec(spec)?;
    }
    collector.finish()?;
    log::info!("--file: {} guest entries", tree.len());
    newc::write_archive(&tree, &mut |p| std::fs::read(p))
}
