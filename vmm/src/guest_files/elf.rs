//! What an ELF file asks of the dynamic loader: its interpreter
//! (`PT_INTERP`), the libraries it needs (`DT_NEEDED`) and where to look
//! for them (`DT_RPATH`, `DT_RUNPATH`). Pure: bytes in, names out, read
//! with the `object` crate (gimli-rs), which checks every offset and size.

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::Endianness;

/// The loader-relevant facts of one ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfDeps {
    /// `PT_INTERP`: the program interpreter (dynamic loader), if any.
    pub interp: Option<String>,
    /// `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
    /// `DT_RPATH` directories (colon-separated in the file), in order.
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` directories, in order.
    pub runpath: Vec<String>,
}

/// Why an ELF file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// Not 64-bit little-endian x86-64: the guest cannot run it, and the
    /// loader would skip it as a library.
    #[error("not an x86-64 ELF ({0})")]
    WrongMachine(String),
    /// The headers or the dynamic table are malformed.
    #[error("malformed ELF: {0}")]
    Malformed(String),
}

/// Whether `data` starts with the ELF magic.
pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

/// Splits a DT_RPATH/DT_RUNPATH value into directories (empty entries,
/// which mean the current directory to glibc, are dropped: a guest has no
/// meaningful current directory at load time).
fn split_path(s: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(s)
        .split(':')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads the interpreter, needed libraries and search paths of an x86-64
/// ELF file.
pub fn parse(data: &[u8]) -> Result<ElfDeps, ElfError> {
    // e_ident: class at 4 (2 = 64-bit), data at 5 (1 = little-endian).
    if data.len() < 20 || data[4] != elf::ELFCLASS64.0 || data[5] != elf::ELFDATA2LSB.0 {
        return Err(ElfError::WrongMachine(format!(
            "class {}, data {}",
            data.get(4).copied().unwrap_or(0),
            data.get(5).copied().unwrap_or(0)
        )));
    }
    let file =
        ElfFile64::<Endianness>::parse(data).map_err(|e| ElfError::Malformed(e.to_string()))?;
    let endian = file.endian();
    let machine = file.elf_header().e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(ElfError::WrongMachine(format!("e_machine {}", machine.0)));
    }
    let mut deps = ElfDeps::default();
    for ph in file.elf_program_headers() {
        if let Some(interp) = ph
            .interpreter(endian, data)
            .map_err(|e| ElfError::Malformed(e.to_string()))?
        {
            deps.interp = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let dynamic = file
        .elf_dynamic_table()
        .map_err(|e| ElfError::Malformed(e.to_string()))?;
    for d in dynamic.iter() {
        let string = || {
            dynamic
                .string(d)
                .map_err(|e| ElfError::Malformed(format!("dynamic tag {}: {e}", d.tag)))
        };
        match d.tag {
            elf::DT_NEEDED => deps
                .needed
                .push(String::from_utf8_lossy(string()?).into_owned()),
            elf::DT_RPATH => deps.rpath.extend(split_path(string()?)),
            elf::DT_RUNPATH => deps.runpath.extend(split_path(string()?)),
            _ => {}
        }
    }
    Ok(deps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_host_program() {
        // Every Debian host has a dynamically linked /bin/sh (dash) that
        // needs libc through the x86-64 loader.
        let data = std::fs::read("/bin/sh").unwrap();
        assert!(is_elf(&data));
        let deps = parse(&data).unwrap();
        assert_eq!(deps.interp.as_deref(), Some("/lib64/ld-linux-x86-64.so.2"));
        assert!(deps.needed.iter().any(|n| n == "libc.so.6"), "{deps:?}");
    }

    #[test]
    fn rejects_what_is_not_x86_64() {
        assert!(!is_elf(b"#!/bin/sh\n"));
        let mut data = std::fs::read("/bin/sh").unwrap();
        data[4] = elf::ELFCLASS32.0;
        assert!(matches!(parse(&data), Err(ElfError::WrongMachine(_))));
        let mut data = std::fs::read("/bin/sh").unwrap();
        data[18] = elf::EM_AARCH64.0 as u8;
        assert_eq!(
            parse(&data),
            Err(ElfError::WrongMachine(format!(
                "e_machine {}",
                elf::EM_AARCH64.0
            )))
        );
        // Truncated after the header: the program headers are out of range.
        let data = std::fs::read("/bin/sh").unwrap();
        assert!(matches!(parse(&data[..80]), Err(ElfError::Malformed(_))));
    }

    #[test]
    fn search_paths_split_on_colons() {
        assert_eq!(
            split_path(b"$ORIGIN/../lib::/opt/x"),
            vec!["$ORIGIN/../lib".to_string(), "/opt/x".to_string()]
        );
    }
}
