//! A state file's bytes to a checked [`Snapshot`]: header and checksum,
//! then the ringvisor version, then the parts' consistency. What the fuzz
//! target `snapshot_load` runs; no KVM, no files.

use super::format;
use super::state::Snapshot;

/// This ringvisor's version, as a snapshot records it.
pub const RINGVISOR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why a state file's bytes are not a snapshot this ringvisor restores.
#[derive(Debug)]
pub enum Decoded {
    /// Header, checksum or encoding.
    Format(format::FormatError),
    /// Another ringvisor version wrote it.
    Version(String),
    /// Its parts disagree.
    Invalid(super::state::StateError),
}

/// Decodes and checks a state file's bytes (what the fuzz target runs).
pub fn decode(bytes: &[u8]) -> Result<Snapshot, Decoded> {
    // The version first, from a prefix every version shares: the header,
    // then the version string as postcard's first field.
    let snapshot: Snapshot = format::decode(bytes).map_err(|e| match e {
        format::FormatError::Decode(_) | format::FormatError::Trailing(_) => {
            match version_of(bytes) {
                Some(v) if v != RINGVISOR_VERSION => Decoded::Version(v),
                _ => Decoded::Format(e),
            }
        }
        e => Decoded::Format(e),
    })?;
    if snapshot.ringvisor_version != RINGVISOR_VERSION {
        return Err(Decoded::Version(snapshot.ringvisor_version));
    }
    snapshot.check().map_err(Decoded::Invalid)?;
    Ok(snapshot)
}

/// The ringvisor version at the start of a state file's payload, if it is
/// readable there.
fn version_of(bytes: &[u8]) -> Option<String> {
    let payload = bytes.get(format::HEADER_LEN..)?;
    let (v, _): (String, _) = postcard::take_from_bytes(payload).ok()?;
    Some(v)
}
