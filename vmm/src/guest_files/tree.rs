//! The files to add to the guest, by guest path, with where each came from
//! so that a collision names both sides. Pure: no I/O.

use std::collections::HashMap;
use std::path::PathBuf;

use super::FilesError;

/// One entry of the guest tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory (mode 0755).
    Dir,
    /// A regular file whose bytes are read from `host`.
    File { host: PathBuf, mode: u32 },
    /// A symbolic link.
    Symlink { target: String },
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Dir => "a directory",
            Node::File { .. } => "a file",
            Node::Symlink { .. } => "a symlink",
        }
    }
}

/// Why a guest path is refused (the message follows the path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestPathError {
    /// Relative.
    #[error("must be absolute")]
    NotAbsolute,
    /// Holds a NUL byte.
    #[error("contains a NUL byte")]
    Nul,
    /// Holds a `..` component.
    #[error("must not contain ..")]
    DotDot,
    /// Names `/` itself.
    #[error("is the root directory")]
    Root,
}

/// Checks and normalizes a guest path: absolute, no `..`, no NUL, not `/`
/// itself. Returns it without the leading slash (as newc names are).
pub fn guest_name(path: &str) -> Result<String, GuestPathError> {
    if !path.starts_with('/') {
        return Err(GuestPathError::NotAbsolute);
    }
    if path.contains('\0') {
        return Err(GuestPathError::Nul);
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(GuestPathError::DotDot),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(GuestPathError::Root);
    }
    Ok(parts.join("/"))
}

/// The guest files, in the order they go into the archive (every
/// directory before what it holds).
#[derive(Debug, Default)]
pub struct GuestTree {
    order: Vec<String>,
    entries: HashMap<String, (Node, String)>,
    /// Paths of the base initramfs: true for a directory.
    base: HashMap<String, bool>,
    /// The base initramfs's name, for messages.
    base_name: String,
}

impl GuestTree {
    /// A tree over a base initramfs with these paths (name, is a
    /// directory), named `base_name` in messages.
    pub fn new(base: impl IntoIterator<Item = (String, bool)>, base_name: &str) -> Self {
        GuestTree {
            base: base.into_iter().collect(),
            base_name: base_name.to_string(),
            ..GuestTree::default()
        }
    }

    /// Adds `node` at `name` (from [`guest_name`]), and every missing
    /// parent directory. `origin` says why it is added (e.g. `--file
    /// /usr/bin/jq`, `libjq.so.1, needed by /usr/bin/jq`). The same node
    /// twice is fine; anything else at a taken path is a collision, with
    /// this tree or with the base initramfs (except directory over
    /// directory).
    pub fn add(&mut self, name: &str, node: Node, origin: &str) -> Result<(), FilesError> {
        let mut prefix = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            let last = i + 1 == parts.len();
            let want = if last { node.clone() } else { Node::Dir };
            self.put(&prefix, want, origin)?;
        }
        Ok(())
    }

    fn put(&mut self, name: &str, node: Node, origin: &str) -> Result<(), FilesError> {
        if let Some(&base_dir) = self.base.get(name) {
            if base_dir && node == Node::Dir {
                // Already there; adding it again would reset its mode.
                return Ok(());
            }
            return Err(FilesError::BaseCollision {
                path: format!("/{name}"),
                origin: origin.to_string(),
                kind: node.kind(),
                base: self.base_name.clone(),
                base_kind: if base_dir { "a directory" } else { "a file" },
            });
        }
        match self.entries.get(name) {
            Some((existing, _)) if *existing == node => Ok(()),
            Some((existing, first)) => Err(FilesError::Collision {
                path: format!("/{name}"),
                first: format!("{} ({first})", existing.kind()),
                second: format!("{} ({origin})", node.kind()),
            }),
            None => {
                self.order.push(name.to_string());
                self.entries
                    .insert(name.to_string(), (node, origin.to_string()));
                Ok(())
            }
        }
    }

    /// The node at `name`, if this tree adds one.
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.entries.get(name).map(|(n, _)| n)
    }

    /// Whether the guest has a directory at `name` (the base's or this
    /// tree's).
    pub fn is_dir(&self, name: &str) -> bool {
        self.base.get(name).copied().unwrap_or(false) || self.get(name) == Some(&Node::Dir)
    }

    /// The entries in archive order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.order.iter().map(|n| (n.as_str(), &self.entries[n].0))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the tree adds nothing.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str) -> Node {
        Node::File {
            host: p.into(),
            mode: 0o755,
        }
    }

    #[test]
    fn guest_names_are_checked() {
        assert_eq!(guest_name("/usr//bin/./jq"), Ok("usr/bin/jq".into()));
        assert_eq!(guest_name("/x/"), Ok("x".into()));
        for bad in ["usr/bin/jq", "/a/../b", "/", "//", "/a\0b"] {
            assert!(guest_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parents_come_first_and_duplicates_merge() {
        let mut t = GuestTree::new([("bin".to_string(), true)], "base.cpio");
        t.add("usr/bin/jq", file("/usr/bin/jq"), "--file /usr/bin/jq")
            .unwrap();
        t.add("usr/bin/jq", file("/usr/bin/jq"), "needed again")
            .unwrap();
        t.add("bin/x", file("/x"), "--file /x:/bin/x").unwrap();
        let names: Vec<_> = t.iter().map(|(n, _)| n).collect();
        // bin is the base's: not added again (its mode stays).
        assert_eq!(names, ["usr", "usr/bin", "usr/bin/jq", "bin/x"]);
        assert_eq!(t.get("usr"), Some(&Node::Dir));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn collisions_name_both_sides() {
        let mut t = GuestTree::new(
            [("bin".to_string(), true), ("bin/sh".to_string(), false)],
            "base.cpio",
        );
        t.add("opt/a", file("/h/a"), "--file /h/a:/opt/a").unwrap();
        let e = t
            .add("opt/a", file("/h/b"), "--file /h/b:/opt/a")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/opt/a") && e.contains("/h/a:/opt/a") && e.contains("/h/b:/opt/a"),
            "{e}"
        );
        // A file where a directory is needed.
        let e = t
            .add("opt/a/b", file("/h/c"), "--file /h/c:/opt/a/b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/opt/a") && e.contains("a directory"), "{e}");
        // A symlink over a directory.
        let e = t
            .add("opt", Node::Symlink { target: "x".into() }, "dep")
            .unwrap_err();
        assert!(matches!(e, FilesError::Collision { .. }), "{e}");
        // The base initramfs's own paths.
        let e = t
            .add("bin/sh", file("/h/sh"), "--file /h/sh:/bin/sh")
            .unwrap_err();
        assert!(e.to_string().contains("base.cpio"), "{e}");
        let e = t
            .add("bin/sh/x", file("/h/x"), "--file /h/x:/bin/sh/x")
            .unwrap_err();
        assert!(matches!(e, FilesError::BaseCollision { .. }), "{e}");
    }
}
