//! The snapshot state file: a fixed header and a postcard payload.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "RVSNAP\r\n"
//! 8       4     format version (u32 LE), FORMAT_VERSION
//! 12      4     CRC-32 (IEEE) of the payload (u32 LE)
//! 16      8     payload length in bytes (u64 LE)
//! 24      ...   payload: the state, serde-encoded with postcard
//! ```
//!
//! Postcard (a stable, documented wire format: varints, no field names) keeps
//! the file small and its decoder is strict; the CRC catches a corrupted
//! or truncated file before a byte of it is decoded. Nothing here knows KVM,
//! so the fuzz target runs it as it is.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"RVSNAP\r\n";
/// The version of this layout and of the payload's structure. Any change
/// to either bumps it; a file of another version is refused.
pub const FORMAT_VERSION: u32 = 2;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 24;
/// The largest payload accepted (vCPU states, devices; not guest RAM).
pub const MAX_PAYLOAD: u64 = 16 << 20;

/// Why a state file cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// Shorter than the header.
    #[error("truncated: {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    ShortHeader {
        /// The file's length.
        len: usize,
    },
    /// Not a snapshot.
    #[error("not a ringvisor snapshot (first bytes {found:02x?})")]
    Magic {
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// Another format version.
    #[error("snapshot format version {found}; this ringvisor reads version {FORMAT_VERSION}")]
    Version {
        /// The file's version.
        found: u32,
    },
    /// Payload length and file length disagree.
    #[error("truncated or extended: the header announces {expected} bytes of state, the file holds {found}")]
    Length {
        /// From the header.
        expected: u64,
        /// In the file.
        found: u64,
    },
    /// Payload larger than [`MAX_PAYLOAD`].
    #[error("the header announces {0} bytes of state, more than the {MAX_PAYLOAD} accepted")]
    TooLarge(u64),
    /// CRC mismatch.
    #[error("corrupted: the state's CRC-32 is {found:#010x}, the header says {expected:#010x}")]
    Checksum {
        /// From the header.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// The payload does not decode (only a buggy writer gets here).
    #[error("the state does not decode: {0}")]
    Decode(#[source] postcard::Error),
    /// Bytes follow the decoded state (only a buggy writer gets here).
    #[error("the state does not decode: {0} bytes left after the state")]
    Trailing(usize),
    /// The state cannot be encoded.
    #[error("encoding the state failed: {0}")]
    Encode(#[source] postcard::Error),
}

/// Encodes `value` as a complete state file.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FormatError> {
    let payload = postcard::to_stdvec(value).map_err(FormatError::Encode)?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Checks the header and the CRC of a state file and decodes its payload.
pub fn decode<T: DeserializeOwned>(file: &[u8]) -> Result<T, FormatError> {
    if file.len() < HEADER_LEN {
        if !file.is_empty() && !MAGIC.starts_with(&file[..file.len().min(MAGIC.len())]) {
            return Err(FormatError::Magic {
                found: file[..file.len().min(MAGIC.len())].to_vec(),
            });
        }
        return Err(FormatError::ShortHeader { len: file.len() });
    }
    let (header, payload) = file.split_at(HEADER_LEN);
    if header[..8] != MAGIC {
        return Err(FormatError::Magic {
            found: header[..8].to_vec(),
        });
    }
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let version = word(8);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version { found: version });
    }
    let expected_crc = word(12);
    let len = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    if len > MAX_PAYLOAD {
        return Err(FormatError::TooLarge(len));
    }
    if len != payload.len() as u64 {
        return Err(FormatError::Length {
            expected: len,
            found: payload.len() as u64,
        });
    }
    let crc = crc32fast::hash(payload);
    if crc != expected_crc {
        return Err(FormatError::Checksum {
            expected: expected_crc,
            found: crc,
        });
    }
    let (value, rest) = postcard::take_from_bytes(payload).map_err(FormatError::Decode)?;
    if !rest.is_empty() {
        return Err(FormatError::Trailing(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        name: String,
        words: Vec<u64>,
    }

    fn sample() -> Vec<u8> {
        encode(&Sample {
            name: "ringvisor".into(),
            words: vec![1, 2, u64::MAX],
        })
        .unwrap()
    }

    #[test]
    fn round_trips() {
        let s: Sample = decode(&sample()).unwrap();
        assert_eq!(s.name, "ringvisor");
        assert_eq!(s.words, vec![1, 2, u64::MAX]);
    }

    #[test]
    fn every_truncation_is_refused() {
        let file = sample();
        for len in 0..file.len() {
            let err = decode::<Sample>(&file[..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    FormatError::ShortHeader { .. } | FormatError::Length { .. }
                ),
                "{len}: {err}"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let file = sample();
        for i in 0..file.len() * 8 {
            let mut bad = file.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(decode::<Sample>(&bad).is_err(), "bit {i} flipped decoded");
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let mut file = sample();
        file[8] = 7;
        assert_eq!(
            decode::<Sample>(&file).unwrap_err().to_string(),
            "snapshot format version 7; this ringvisor reads version 2"
        );
        let mut file = sample();
        let last = file.len() - 1;
        file[last] ^= 0xff;
        assert!(decode::<Sample>(&file)
            .unwrap_err()
            .to_string()
            .starts_with("corrupted: the state's CRC-32"));
        assert!(decode::<Sample>(b"#!/bin/sh\necho hi\n")
            .unwrap_err()
            .to_string()
            .starts_with("not a ringvisor snapshot"));
        let mut file = sample();
        file.push(0);
        assert!(matches!(
            decode::<Sample>(&file),
            Err(FormatError::Length { .. })
        ));
    }
}
