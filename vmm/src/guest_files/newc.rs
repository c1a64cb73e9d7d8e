//! The newc ("070701") archive: writing the extra files, and listing the
//! paths of a base initramfs. Both through the `cpio` crate (no
//! dependencies, reads and writes newc, checks its lengths); this module
//! only adds what the kernel's unpacker (init/initramfs.c) expects of
//! concatenated archives: each one starts 4-byte aligned, and zero bytes
//! between them are skipped.

use std::io::{self, Cursor, Write};
use std::path::Path;

use cpio::newc::{self, Builder, ModeFileType};

use super::tree::{GuestTree, Node};
use super::FilesError;

/// Writes the tree as one newc archive (with its trailer). `read` returns
/// a host file's bytes.
pub fn write_archive(
    tree: &GuestTree,
    read: &mut dyn FnMut(&Path) -> io::Result<Vec<u8>>,
) -> Result<Vec<u8>, FilesError> {
    let mut out = Vec::new();
    for (ino, (name, node)) in (1u32..).zip(tree.iter()) {
        let (kind, perm, nlink, data) = match node {
            Node::Dir => (ModeFileType::Directory, 0o755, 2, Vec::new()),
            Node::Symlink { target } => {
                (ModeFileType::Symlink, 0o777, 1, target.as_bytes().to_vec())
            }
            Node::File { host, mode } => {
                let data = read(host).map_err(|source| FilesError::Read {
                    path: host.clone(),
                    source,
                })?;
                (ModeFileType::Regular, mode & 0o7777, 1, data)
            }
        };
        let size = u32::try_from(data.len()).map_err(|_| FilesError::TooBig {
            path: format!("/{name}"),
            size: data.len() as u64,
        })?;
        let mut w = Builder::new(name)
            .ino(ino)
            .mode(perm)
            .set_mode_file_type(kind)
            .nlink(nlink)
            .write(&mut out, size);
        w.write_all(&data)
            .and_then(|()| w.finish().map(|_| ()))
            .map_err(|e| FilesError::Archive(e.to_string()))?;
    }
    newc::trailer(&mut out).map_err(|e| FilesError::Archive(e.to_string()))?;
    Ok(out)
}

/// The paths in `data` (a newc archive, or several concatenated) with
/// whether each is a directory; `None` when `data` is not an uncompressed
/// newc archive (then collisions with it cannot be told). Names lose a
/// leading `./` or `/`.
pub fn list_paths(data: &[u8]) -> Option<Vec<(String, bool)>> {
    const MAGIC: &[u8] = b"070701";
    if !data.starts_with(MAGIC) {
        return None;
    }
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        // Skip the zero padding between archives, staying 4-byte aligned.
        while pos < data.len() && data[pos] == 0 {
            pos += 1;
        }
        if pos >= data.len() {
            return Some(out);
        }
        if !pos.is_multiple_of(4) || !data[pos..].starts_with(MAGIC) {
            return None;
        }
        let mut cursor = Cursor::new(&data[pos..]);
        loop {
            let reader = newc::Reader::new(&mut cursor).ok()?;
            let entry = reader.entry();
            if entry.is_trailer() {
                reader.finish().ok()?;
                break;
            }
            let name = entry
                .name()
                .trim_start_matches("./")
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_string();
            let is_dir = entry.mode() & 0o170000 == 0o040000;
            reader.skip().ok()?;
            if !name.is_empty() && name != "." {
                out.push((name, is_dir));
            }
        }
        pos += usize::try_from(cursor.position()).ok()?;
    }
}

/// The base initramfs followed by the extra archive: zero padding to a
/// 4-byte boundary between them, as the kernel's unpacker expects.
pub fn concatenate(mut base: Vec<u8>, extra: &[u8]) -> Vec<u8> {
    base.resize(base.len().next_multiple_of(4), 0);
    base.extend_from_slice(extra);
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tree() -> GuestTree {
        let mut t = GuestTree::new([("bin".to_string(), true)], "base");
        t.add(
            "opt/tool",
            Node::File {
                host: "/host/tool".into(),
                mode: 0o100755,
            },
            "--file",
        )
        .unwrap();
        t.add(
            "bin/tool",
            Node::Symlink {
                target: "/opt/tool".into(),
            },
            "--file",
        )
        .unwrap();
        t
    }

    #[test]
    fn archive_round_trips_through_a_reader() {
        let files = HashMap::from([("/host/tool", b"abcde".to_vec())]);
        let mut read = |p: &Path| {
            files
                .get(p.to_str().unwrap())
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        };
        let data = write_archive(&tree(), &mut read).unwrap();
        assert_eq!(data.len() % 4, 0);
        let mut cursor = Cursor::new(&data[..]);
        let mut seen = Vec::new();
        loop {
            let mut r = newc::Reader::new(&mut cursor).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            let (name, mode) = (r.entry().name().to_string(), r.entry().mode());
            let mut body = Vec::new();
            io::Read::read_to_end(&mut r, &mut body).unwrap();
            r.finish().unwrap();
            seen.push((name, mode, body));
        }
        assert_eq!(
            seen,
            vec![
                ("opt".into(), 0o040755, vec![]),
                ("opt/tool".into(), 0o100755, b"abcde".to_vec()),
                ("bin/tool".into(), 0o120777, b"/opt/tool".to_vec()),
            ]
        );
    }

    #[test]
    fn a_missing_host_file_is_named() {
        let mut read = |_: &Path| Err(io::Error::from(io::ErrorKind::NotFound));
        let e = write_archive(&tree(), &mut read).unwrap_err().to_string();
        assert!(e.contains("/host/tool"), "{e}");
    }

    #[test]
    fn concatenated_archives_are_listed() {
        let files = HashMap::from([("/host/tool", b"abc".to_vec())]);
        let mut read = |p: &Path| Ok(files[p.to_str().unwrap()].clone());
        let one = write_archive(&tree(), &mut read).unwrap();
        // An odd-length base, as a hand-made archive may be.
        let mut base = one.clone();
        base.push(0);
        base.push(0);
        base.push(0);
        let both = concatenate(base, &one);
        let paths = list_paths(&both).unwrap();
        assert_eq!(paths.len(), 6);
        assert_eq!(paths[0], ("opt".to_string(), true));
        assert_eq!(paths[2], ("bin/tool".to_string(), false));
        assert_eq!(paths[3], ("opt".to_string(), true));
        // Not newc (e.g. compressed): unknown, not empty.
        assert_eq!(list_paths(b"\x1f\x8b\x08\x00"), None);
        // A broken second archive.
        let mut bad = one.clone();
        bad.extend_from_slice(b"0707");
        assert_eq!(list_paths(&bad), None);
        assert_eq!(
            concatenate(vec![1, 2, 3, 4, 5], &[9]),
            [1, 2, 3, 4, 5, 0, 0, 0, 9]
        );
    }
}
