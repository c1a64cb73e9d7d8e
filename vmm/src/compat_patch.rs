//! Bringing your own kernel: does a guest kernel image carry ringvisor's PVM
//! compatibility patch (guest-kernel-patches/0001)? On nested PVM a kernel
//! without it stops in `int3_selftest()` on an emulation failure, tens of
//! seconds into the boot, with nothing on the console that says why; the VMM
//! looks for the patch's `ringvisor_pvm` parameter in the image before the
//! boot and warns once.
//!
//! The search is pure ([`compat_patch_in_image`]) and understands the images
//! `ringvisor run --kernel` boots: an ELF vmlinux, and a bzImage whose payload
//! is uncompressed or LZ4 (Debian's kernels). For other bzImage compressions
//! it answers [`CompatPatch::Unknown`].

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use thiserror::Error;

/// The patch's early parameter, as the kernel stores it
/// (`early_param("ringvisor_pvm", ...)` keeps a NUL-terminated string).
pub const COMPAT_PARAMETER: &[u8] = b"ringvisor_pvm\0";

/// Whether a kernel image has the compatibility patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompatPatch {
    /// The image holds the patch's parameter.
    Present,
    /// The image was searched through and does not hold it.
    Absent,
    /// The image could not be searched; the reason.
    Unknown(&'static str),
}

/// Why an LZ4 payload could not be decompressed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Lz4Error {
    /// The data ends inside a sequence.
    #[error("LZ4 block truncated")]
    Truncated,
    /// A match refers to data before the start of the block.
    #[error("LZ4 match offset {offset} outside the {decoded} bytes decoded")]
    BadOffset { offset: usize, decoded: usize },
    /// A block decodes to more than the legacy format's block size.
    #[error("LZ4 block larger than {LZ4_LEGACY_BLOCK_MAX} bytes")]
    BlockTooLarge,
}

const ELF_MAGIC: &[u8] = b"\x7fELF";
/// The legacy LZ4 frame magic (0x184c2102), which the kernel's build uses.
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// Each legacy LZ4 block decodes to at most 8 MiB.
const LZ4_LEGACY_BLOCK_MAX: usize = 8 << 20;

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut start = 0;
    while let Some(pos) = haystack[start..].iter().position(|&b| b == first) {
        let at = start + pos;
        if haystack[at + 1..].starts_with(rest) {
            return true;
        }
        start = at + 1;
    }
    false
}

/// The compressed kernel inside a bzImage (boot protocol 2.08 or later:
/// `payload_offset` and `payload_length` in the setup header), or `None` when
/// `image` is not such a bzImage.
fn bzimage_payload(image: &[u8]) -> Option<&[u8]> {
    let le16 = |at: usize| Some(u16::from_le_bytes(image.get(at..at + 2)?.try_into().ok()?));
    let le32 = |at: usize| Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?));
    if image.get(0x202..0x206)? != b"HdrS" || le16(0x206)? < 0x208 {
        return None;
    }
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + usize::try_from(le32(0x248)?).ok()?;
    let len = usize::try_from(le32(0x24c)?).ok()?;
    image.get(start..start.checked_add(len)?)
}

/// The name of a payload's compression, from its magic bytes.
fn compression_name(payload: &[u8]) -> &'static str {
    match payload {
        [0x1f, 0x8b, ..] => "gzip",
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
        [b'B', b'Z', b'h', ..] => "bzip2",
        [0x5d, 0, 0, ..] => "lzma",
        [0x89, b'L', b'Z', b'O', ..] => "lzo",
        _ => "an unrecognised format",
    }
}

/// Decodes one LZ4 block (the raw block format) into `out`, which it clears
/// first.
fn lz4_decode_block(block: &[u8], out: &mut Vec<u8>) -> Result<(), Lz4Error> {
    fn length(block: &[u8], pos: &mut usize, nibble: u8) -> Result<usize, Lz4Error> {
        let mut len = usize::from(nibble);
        if nibble == 15 {
            loop {
                let byte = *block.get(*pos).ok_or(Lz4Error::Truncated)?;
                *pos += 1;
                len += usize::from(byte);
                if byte != 255 {
                    break;
                }
            }
        }
        Ok(len)
    }
    out.clear();
    let mut pos = 0;
    while pos < block.len() {
        let token = block[pos];
        pos += 1;
        let literals = length(block, &mut pos, token >> 4)?;
        let end = pos.checked_add(literals).ok_or(Lz4Error::Truncated)?;
        out.extend_from_slice(block.get(pos..end).ok_or(Lz4Error::Truncated)?);
        pos = end;
        if pos == block.len() {
            break; // The last sequence has literals only.
        }
        let offset = usize::from(u16::from_le_bytes(
            block
                .get(pos..pos + 2)
                .ok_or(Lz4Error::Truncated)?
                .try_into()
                .map_err(|_| Lz4Error::Truncated)?,
        ));
        pos += 2;
        let match_len = length(block, &mut pos, token & 15)? + 4;
        if offset == 0 || offset > out.len() {
            return Err(Lz4Error::BadOffset {
                offset,
                decoded: out.len(),
            });
        }
        if out.len() + match_len > LZ4_LEGACY_BLOCK_MAX {
            return Err(Lz4Error::BlockTooLarge);
        }
        let from = out.len() - offset;
        if offset >= match_len {
            out.extend_from_within(from..from + match_len);
        } else {
            // The match overlaps what it writes: copy byte by byte.
            for i in 0..match_len {
                out.push(out[from + i]);
            }
        }
        if out.len() > LZ4_LEGACY_BLOCK_MAX {
            return Err(Lz4Error::BlockTooLarge);
        }
    }
    Ok(())
}

/// Whether the legacy-LZ4 stream `stream` (starting with its magic; what the
/// kernel's `lz4 -l` build step writes, followed by the kernel's 4-byte
/// size) decodes to data holding `needle`. Decodes one block at a time.
fn lz4_legacy_contains(stream: &[u8], needle: &[u8]) -> Result<bool, Lz4Error> {
    let mut pos = LZ4_LEGACY_MAGIC.len();
    let mut block = Vec::new();
    // The end of the previous block, for a needle split between two.
    let mut carry: Vec<u8> = Vec::new();
    while let Some(size) = stream.get(pos..pos + 4) {
        let size = u32::from_le_bytes(size.try_into().map_err(|_| Lz4Error::Truncated)?);
        pos += 4;
        if size.to_le_bytes() == LZ4_LEGACY_MAGIC {
            continue; // Concatenated streams.
        }
        let size = usize::try_from(size).map_err(|_| Lz4Error::Truncated)?;
        // After the last block comes the kernel's size, which no block fits.
        let Some(data) = stream.get(pos..pos + size).filter(|_| size > 0) else {
            break;
        };
        pos += size;
        lz4_decode_block(data, &mut block)?;
        if contains(&block, needle) {
            return Ok(true);
        }
        let head = &block[..block.len().min(needle.len().saturating_sub(1))];
        carry.extend_from_slice(head);
        if contains(&carry, needle) {
            return Ok(true);
        }
        let tail_start = block.len().saturating_sub(needle.len().saturating_sub(1));
        carry.clear();
        carry.extend_from_slice(&block[tail_start..]);
    }
    Ok(false)
}

/// Searches a kernel image (the bytes of an ELF vmlinux or a bzImage) for the
/// compatibility patch's parameter.
pub fn compat_patch_in_image(image: &[u8]) -> CompatPatch {
    let found = |yes: bool| {
        if yes {
            CompatPatch::Present
        } else {
            CompatPatch::Absent
        }
    };
    if image.starts_with(ELF_MAGIC) {
        return found(contains(image, COMPAT_PARAMETER));
    }
    let Some(payload) = bzimage_payload(image) else {
        return CompatPatch::Unknown("neither an ELF vmlinux nor a bzImage");
    };
    if payload.starts_with(ELF_MAGIC) {
        return found(contains(payload, COMPAT_PARAMETER));
    }
    if payload.starts_with(&LZ4_LEGACY_MAGIC) {
        return match lz4_legacy_contains(payload, COMPAT_PARAMETER) {
            Ok(yes) => found(yes),
            Err(_) => CompatPatch::Unknown("its LZ4 payload does not decompress"),
        };
    }
    CompatPatch::Unknown(match compression_name(payload) {
        "gzip" => "its payload is gzip-compressed",
        "xz" => "its payload is xz-compressed",
        "zstd" => "its payload is zstd-compressed",
        "bzip2" => "its payload is bzip2-compressed",
        "lzma" => "its payload is lzma-compressed",
        "lzo" => "its payload is lzo-compressed",
        _ => "its payload's compression is not recognised",
    })
}

/// The one warning line for a kernel without the patch on nested PVM.
pub fn missing_patch_warning(kernel: &Path) -> String {
    format!(
        "{} lacks ringvisor's PVM compatibility patch (guest-kernel-patches/0001: no \
         `ringvisor_pvm` in the image) and will likely stop on an emulation failure \
         (int3 in int3_selftest()) on this nested-PVM host: apply the patch series to it, \
         or boot the kernel guest-images/build.sh builds (README: \"Bringing your own kernel\")",
        kernel.display()
    )
}

/// What to say before booting `kernel` on nested PVM, given what the image
/// search found: the warning for a kernel without the patch, nothing
/// otherwise.
pub fn warning_before_boot(kernel: &Path, found: CompatPatch) -> Option<String> {
    match found {
        CompatPatch::Absent => Some(missing_patch_warning(kernel)),
        CompatPatch::Present | CompatPatch::Unknown(_) => None,
    }
}

/// Whether `needle` occurs in what `reader` yields, read in small pieces:
/// a vmlinux is tens of MiB, and a buffer that size would stay in the
/// VMM's heap (and in its measured memory) for the whole run.
fn stream_contains(mut reader: impl Read, needle: &[u8]) -> std::io::Result<bool> {
    const CHUNK: usize = 64 << 10;
    let keep = needle.len().saturating_sub(1);
    let mut buf = vec![0u8; keep + CHUNK];
    let mut filled = 0;
    loop {
        let n = match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        filled += n;
        if contains(&buf[..filled], needle) {
            return Ok(true);
        }
        // Keep the end, where the needle may begin.
        let tail = filled.saturating_sub(keep);
        buf.copy_within(tail..filled, 0);
        filled -= tail;
    }
}

/// Searches the kernel image at `kernel`: an ELF vmlinux is read in small
/// pieces, anything else whole (a bzImage is a few MiB).
fn compat_patch_in_file(kernel: &Path) -> std::io::Result<CompatPatch> {
    let mut file = std::fs::File::open(kernel)?;
    let mut magic = [0u8; 4];
    let is_elf = file.read_exact(&mut magic).is_ok() && magic == ELF_MAGIC;
    file.seek(SeekFrom::Start(0))?;
    if is_elf {
        return Ok(if stream_contains(file, COMPAT_PARAMETER)? {
            CompatPatch::Present
        } else {
            CompatPatch::Absent
        });
    }
    let mut image = Vec::new();
    file.read_to_end(&mut image)?;
    Ok(compat_patch_in_image(&image))
}

/// Reads `kernel` and returns the warning to print before booting it on
/// nested PVM, if it lacks the patch. A kernel that cannot be read is left to
/// the loader to report.
pub fn check_kernel_before_pvm_boot(kernel: &Path) -> Option<String> {
    let found = match compat_patch_in_file(kernel) {
        Ok(found) => found,
        Err(e) => {
            log::debug!("PVM compatibility patch check: {}: {e}", kernel.display());
            return None;
        }
    };
    match found {
        CompatPatch::Present => log::debug!("{}: PVM compatibility patch found", kernel.display()),
        CompatPatch::Unknown(why) => log::info!(
            "cannot tell whether {} has the PVM compatibility patch: {why}",
            kernel.display()
        ),
        CompatPatch::Absent => {}
    }
    warning_before_boot(kernel, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF-looking image with `body` after the magic.
    fn elf_with(body: &[u8]) -> Vec<u8> {
        let mut image = b"\x7fELF\x02\x01\x01".to_vec();
        image.resize(64, 0);
        image.extend_from_slice(body);
        image.resize(image.len() + 4096, 0xcc);
        image
    }

    /// An LZ4 block with everything as literals (what an incompressible
    /// block looks like).
    fn lz4_literal_block(data: &[u8]) -> Vec<u8> {
        let mut block = Vec::new();
        if data.len() < 15 {
            block.push((data.len() as u8) << 4);
        } else {
            block.push(0xf0);
            let mut rest = data.len() - 15;
            while rest >= 255 {
                block.push(255);
                rest -= 255;
            }
            block.push(rest as u8);
        }
        block.extend_from_slice(data);
        block
    }

    /// A legacy LZ4 stream of the given blocks, followed by a 4-byte size as
    /// the kernel's build appends it.
    fn lz4_legacy_stream(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut stream = LZ4_LEGACY_MAGIC.to_vec();
        for block in blocks {
            stream.extend_from_slice(&(block.len() as u32).to_le_bytes());
            stream.extend_from_slice(block);
        }
        stream.extend_from_slice(&0x0300_0000u32.to_le_bytes());
        stream
    }

    /// A bzImage-shaped file: a setup header (protocol 2.15) and `payload`.
    fn bzimage_with(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 1u8;
        let payload_offset = 0x40u32;
        let mut image = vec![0u8; (usize::from(setup_sects) + 1) * 512];
        image[0x1f1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.resize(image.len() + payload_offset as usize, 0x90);
        image.extend_from_slice(payload);
        image.extend_from_slice(&[0u8; 256]);
        image
    }

    #[test]
    fn an_elf_vmlinux_with_the_parameter_has_the_patch() {
        let image = elf_with(b"...nokaslr\0ringvisor_pvm\0earlyprintk\0...");
        assert_eq!(compat_patch_in_image(&image), CompatPatch::Present);
    }

    #[test]
    fn an_elf_vmlinux_without_the_parameter_lacks_it() {
        let image = elf_with(b"...nokaslr\0ringvisor_pv\0ringvisor: PVM\0...");
        assert_eq!(compat_patch_in_image(&image), CompatPatch::Absent);
        assert_eq!(
            compat_patch_in_image(&elf_with(b"")),
            CompatPatch::Absent,
            "an image that ends early"
        );
    }

    #[test]
    fn an_uncompressed_bzimage_payload_is_searched() {
        let with = bzimage_with(&elf_with(b"ringvisor_pvm\0"));
        assert_eq!(compat_patch_in_image(&with), CompatPatch::Present);
        let without = bzimage_with(&elf_with(b"int3_selftest\0"));
        assert_eq!(compat_patch_in_image(&without), CompatPatch::Absent);
    }

    #[test]
    fn an_lz4_bzimage_payload_is_decompressed_and_searched() {
        // One block with a back-reference: "ab" then a match of 10 bytes at
        // offset 2 gives "abababababab", then the parameter as literals.
        let mut block = vec![0x26, b'a', b'b', 0x02, 0x00];
        block.extend(lz4_literal_block(b"xringvisor_pvm\0tail"));
        let with = bzimage_with(&lz4_legacy_stream(&[block]));
        assert_eq!(compat_patch_in_image(&with), CompatPatch::Present);

        let without = bzimage_with(&lz4_legacy_stream(&[lz4_literal_block(
            b"int3_selftest\0quiet",
        )]));
        assert_eq!(compat_patch_in_image(&without), CompatPatch::Absent);
    }

    #[test]
    fn the_parameter_split_between_two_lz4_blocks_is_found() {
        let blocks = [
            lz4_literal_block(b"....ringvis"),
            lz4_literal_block(b"or_pvm\0...."),
        ];
        let image = bzimage_with(&lz4_legacy_stream(&blocks));
        assert_eq!(compat_patch_in_image(&image), CompatPatch::Present);
    }

    #[test]
    fn lz4_blocks_decode_as_the_format_says() {
        let mut out = Vec::new();
        // Overlapping match: "a" then 7 more "a" at offset 1.
        lz4_decode_block(&[0x13, b'a', 0x01, 0x00, 0x10, b'!'], &mut out).unwrap();
        assert_eq!(out, b"aaaaaaaa!");
        // A long literal run with the 255-continuation form.
        let long = vec![b'z'; 15 + 255 + 7];
        lz4_decode_block(&lz4_literal_block(&long), &mut out).unwrap();
        assert_eq!(out, long);
        assert_eq!(
            lz4_decode_block(&[0x10, b'a', 0x05, 0x00], &mut out),
            Err(Lz4Error::BadOffset {
                offset: 5,
                decoded: 1
            })
        );
        assert_eq!(
            lz4_decode_block(&[0x50, b'a'], &mut out),
            Err(Lz4Error::Truncated)
        );
    }

    #[test]
    fn other_compressions_and_other_files_are_unknown() {
        let xz = bzimage_with(b"\xfd7zXZ\0rest");
        assert_eq!(
            compat_patch_in_image(&xz),
            CompatPatch::Unknown("its payload is xz-compressed")
        );
        let gzip = bzimage_with(b"\x1f\x8b\x08\0rest");
        assert_eq!(
            compat_patch_in_image(&gzip),
            CompatPatch::Unknown("its payload is gzip-compressed")
        );
        assert!(matches!(
            compat_patch_in_image(b"#!/bin/sh\necho not a kernel\n"),
            CompatPatch::Unknown(_)
        ));
        assert!(matches!(
            compat_patch_in_image(&bzimage_with(&lz4_legacy_stream(&[vec![0x50, b'a']]))),
            CompatPatch::Unknown("its LZ4 payload does not decompress")
        ));
    }

    #[test]
    fn a_kernel_without_the_patch_gets_one_warning_line_naming_the_fix() {
        let kernel = Path::new("/boot/vmlinuz-6.1.0-54-cloud-amd64");
        let warning = warning_before_boot(kernel, CompatPatch::Absent).expect("a warning");
        assert!(!warning.contains('\n'), "one line: {warning}");
        for needed in [
            "/boot/vmlinuz-6.1.0-54-cloud-amd64",
            "guest-kernel-patches/0001",
            "int3_selftest",
            "guest-images/build.sh",
            "Bringing your own kernel",
        ] {
            assert!(
                warning.contains(needed),
                "{needed:?} missing from {warning}"
            );
        }
        assert_eq!(warning_before_boot(kernel, CompatPatch::Present), None);
        assert_eq!(
            warning_before_boot(kernel, CompatPatch::Unknown("xz")),
            None,
            "no warning for a kernel that could not be searched"
        );
    }

    #[test]
    fn a_file_read_in_pieces_finds_the_parameter_across_a_piece_boundary() {
        // A reader that hands out 5 bytes at a time.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(5).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut image = vec![b'x'; 200_000];
        image.extend_from_slice(COMPAT_PARAMETER);
        image.extend_from_slice(&[b'y'; 3]);
        assert!(stream_contains(Trickle(&image), COMPAT_PARAMETER).unwrap());
        assert!(stream_contains(&image[..], COMPAT_PARAMETER).unwrap());
        let cut = image.len() - 4;
        assert!(!stream_contains(&image[..cut], COMPAT_PARAMETER).unwrap());
        assert!(!stream_contains(Trickle(&image[..cut]), COMPAT_PARAMETER).unwrap());
    }

    #[test]
    fn a_fake_stock_kernel_file_is_warned_about() {
        let dir = std::env::temp_dir().join(format!("rv-compat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stock = dir.join("vmlinux-stock");
        let patched = dir.join("vmlinux-patched");
        std::fs::write(&stock, elf_with(b"int3_selftest\0")).unwrap();
        let mut big_patched = elf_with(&vec![0x90; 3 << 20]);
        big_patched.extend_from_slice(b"ringvisor_pvm\0");
        std::fs::write(&patched, big_patched).unwrap();
        let stock_bzimage = dir.join("vmlinuz-stock");
        std::fs::write(
            &stock_bzimage,
            bzimage_with(&lz4_legacy_stream(&[lz4_literal_block(b"int3_selftest\0")])),
        )
        .unwrap();
        assert!(check_kernel_before_pvm_boot(&stock_bzimage).is_some());
        let warning = check_kernel_before_pvm_boot(&stock).expect("a warning");
        assert!(
            warning.starts_with(&stock.display().to_string()),
            "{warning}"
        );
        assert_eq!(check_kernel_before_pvm_boot(&patched), None);
        assert_eq!(check_kernel_before_pvm_boot(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
