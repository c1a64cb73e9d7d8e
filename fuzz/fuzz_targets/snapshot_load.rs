//! Fuzzes the snapshot loader: arbitrary state-file bytes go through the
//! same header, checksum, version and consistency checks `run --restore`
//! runs (vmm/src/snapshot/{format,state,decode}.rs, compiled here as they
//! are). Inputs with a valid CRC-32 reach the postcard decoder: the
//! fuzzer's bytes are wrapped in a valid header half of the time.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The loader's modules as siblings at the crate root, where `super::`
// in them finds each other as in vmm's `snapshot` module.
#[allow(dead_code)]
#[path = "../../vmm/src/snapshot/decode.rs"]
mod decode;
#[allow(dead_code)]
#[path = "../../vmm/src/snapshot/format.rs"]
mod format;
#[allow(dead_code)]
#[path = "../../vmm/src/snapshot/state.rs"]
mod state;

fuzz_target!(|data: &[u8]| {
    let Some((&wrap, rest)) = data.split_first() else {
        return;
    };
    let file = if wrap & 1 == 1 {
        // A valid header around the payload: the decoder itself is fuzzed.
        let mut file = Vec::with_capacity(rest.len() + format::HEADER_LEN);
        file.extend_from_slice(&format::MAGIC);
        file.extend_from_slice(&format::FORMAT_VERSION.to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(rest).to_le_bytes());
        file.extend_from_slice(&(rest.len() as u64).to_le_bytes());
        file.extend_from_slice(rest);
        file
    } else {
        rest.to_vec()
    };
    if let Ok(s) = decode::decode(&file) {
        // Whatever decodes is consistent and encodes back to a file that
        // decodes again.
        assert!(s.check().is_ok());
        let again = format::encode(&s).expect("a decoded state encodes");
        assert!(decode::decode(&again).is_ok());
    }
});
