//! Loading the guest: kernel (ELF vmlinux through its 64-bit entry, or a
//! bzImage), initramfs, command line, zero page with the e820 map, and the
//! MP table. The vCPU register state for entry is in [`cpu`].

pub mod cpu;
pub mod mptable;

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::{self, bzimage::BzImage, elf::Elf, KernelLoader};
use thiserror::Error;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::guest_files::{self, FileSpec};
use crate::layout::{
    e820_map, CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, MMIO_GAP_START, ZERO_PAGE_START,
};

/// Errors loading the guest.
#[derive(Debug, Error)]
pub enum BootError {
    /// The kernel file cannot be opened.
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The kernel is neither an x86-64 ELF nor a bzImage.
    #[error("{path} is not a loadable kernel (ELF: {elf}; bzImage: {bzimage})")]
    LoadKernel {
        path: PathBuf,
        elf: loader::Error,
        bzimage: loader::Error,
    },
    /// The initramfs cannot be read.
    #[error("cannot read initramfs {path}: {source}")]
    ReadInitramfs {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `--file` could not be added to the initramfs.
    #[error(transparent)]
    Files(#[from] crate::guest_files::FilesError),
    /// The initramfs does not fit below the kernel's limit.
    #[error("initramfs of {size} bytes does not fit in guest RAM below {limit:#x}")]
    InitramfsTooBig { size: u64, limit: u64 },
    /// The command line is too long or has invalid characters.
    #[error("kernel command line rejected: {0}")]
    Cmdline(#[from] linux_loader::cmdline::Error),
    /// Writing the initramfs into guest memory failed.
    #[error("writing initramfs into guest memory failed: {0}")]
    WriteInitramfs(#[source] vm_memory::GuestMemoryError),
    /// Writing the command line into guest memory failed.
    #[error("writing command line into guest memory failed: {0}")]
    WriteCmdline(#[source] loader::Error),
    /// Writing the zero page into guest memory failed.
    #[error("writing zero page into guest memory failed: {0}")]
    WriteZeroPage(#[source] linux_loader::configurator::Error),
    /// The MP table could not be written.
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
}

/// Where the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    /// 64-bit entry point (guest-physical, identity-mapped).
    pub rip: u64,
    /// The zero page, passed in RSI.
    pub zero_page: u64,
}

/// Kernel image formats ringvisor boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF vmlinux, entered at its 64-bit entry point.
    Elf,
    /// A bzImage, entered at its 64-bit entry (load address + 0x200).
    BzImage,
}

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
/// The highest address the 6.1 kernel accepts for the initramfs end
/// (`initrd_addr_max` of the boot protocol).
const INITRD_ADDR_MAX: u64 = 0x7fff_ffff;

/// Builds the command line from the VMM's defaults and the user's part.
pub fn build_cmdline(parts: &[&str]) -> Result<Cmdline, BootError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE)?;
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        // Everything after " -- " is passed to /init as argv: keep it last
        // and verbatim.
        if let Some(rest) = part.strip_prefix("--") {
            if rest.is_empty() || rest.starts_with(' ') {
                cmdline.insert_init_args(rest.trim())?;
                continue;
            }
        }
        if let Some((kernel, init)) = part.split_once(" -- ") {
            cmdline.insert_str(kernel.trim())?;
            cmdline.insert_init_args(init.trim())?;
        } else {
            cmdline.insert_str(part)?;
        }
    }
    Ok(cmdline)
}

fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
) -> Result<(loader::KernelLoaderResult, KernelFormat), BootError> {
    let mut file = File::open(path).map_err(|source| BootError::OpenKernel {
        path: path.to_path_buf(),
        source,
    })?;
    let elf = match Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(result) => return Ok((result, KernelFormat::Elf)),
        Err(e) => e,
    };
    match BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(result) => Ok((result, KernelFormat::BzImage)),
        Err(bzimage) => Err(BootError::LoadKernel {
            path: path.to_path_buf(),
            elf,
            bzimage,
        }),
    }
}

/// Places the initramfs, with the `--file` archive appended, at the top of
/// low RAM, page-aligned. Returns its address and size.
fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: Option<&Path>,
    files: &[FileSpec],
) -> Result<(u64, u64), BootError> {
    let mut data = match path {
        Some(path) => std::fs::read(path).map_err(|source| BootError::ReadInitramfs {
            path: path.to_path_buf(),
            source,
        })?,
        None => Vec::new(),
    };
    if !files.is_empty() {
        let extra = guest_files::build_archive(files, path.map(|p| (p, &data[..])))?;
        data = guest_files::newc::concatenate(data, &extra);
    }
    let size = data.len() as u64;
    let low_end = mem
        .last_addr()
        .raw_value()
        .min(MMIO_GAP_START - 1)
        .min(INITRD_ADDR_MAX)
        + 1;
    let too_big = BootError::InitramfsTooBig {
        size,
        limit: low_end,
    };
    let addr = low_end.checked_sub(size).ok_or(too_big)? & !0xfff;
    if addr < HIMEM_START {
        return Err(BootError::InitramfsTooBig {
            size,
            limit: low_end,
        });
    }
    mem.write_slice(&data, GuestAddress(addr))
        .map_err(BootError::WriteInitramfs)?;
    Ok((addr, size))
}

/// Loads kernel, initramfs (with the `--file` archive), command line,
/// zero page and MP table.
pub fn load_guest(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initramfs: Option<&Path>,
    files: &[FileSpec],
    cmdline: &Cmdline,
    cpus: u8,
) -> Result<(BootEntry, KernelFormat), BootError> {
    let (kernel_result, format) = load_kernel(mem, kernel)?;
    // The kernel must not overlap the initramfs: it is loaded first, the
    // initramfs goes at the top of RAM; a too-small guest is caught by the
    // overlap check below.
    let kernel_end = kernel_result.kernel_load.raw_value() + kernel_result.kernel_end;

    let cmdline_str = cmdline.as_cstring()?;
    let cmdline_len = cmdline_str.as_bytes_with_nul().len();
    loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(BootError::WriteCmdline)?;

    let mut params = boot_params::default();
    if let Some(hdr) = kernel_result.setup_header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;

    if initramfs.is_some() || !files.is_empty() {
        let (addr, size) = load_initramfs(mem, initramfs, files)?;
        if addr < kernel_end {
            return Err(BootError::InitramfsTooBig {
                size,
                limit: mem.last_addr().raw_value() + 1 - kernel_end,
            });
        }
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    let ram_size: u64 = mem.iter().map(vm_memory::GuestMemoryRegion::len).sum();
    let map = e820_map(ram_size);
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        slot.addr = entry.addr;
        slot.size = entry.size;
        slot.r#type = entry.kind as u32;
    }
    params.e820_entries = map.len() as u8;

    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(BootError::WriteZeroPage)?;
    mptable::setup(mem, cpus)?;

    let rip = match format {
        KernelFormat::Elf => kernel_result.kernel_load.raw_value(),
        KernelFormat::BzImage => kernel_result.kernel_load.raw_value() + 0x200,
    };
    Ok((
        BootEntry {
            rip,
            zero_page: ZERO_PAGE_START,
        },
        format,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_args_follow_the_kernel_arguments() {
        let c = build_cmdline(&["console=ttyS0", "rv.workload=x -- sh -c \"exit 3\""]).unwrap();
        assert_eq!(
            c.as_cstring().unwrap().to_str().unwrap(),
            "console=ttyS0 rv.workload=x -- sh -c \"exit 3\""
        );
        let c = build_cmdline(&["console=ttyS0", "-- /bin/demo"]).unwrap();
        assert_eq!(
            c.as_cstring().unwrap().to_str().unwrap(),
            "console=ttyS0 -- /bin/demo"
        );
    }

    #[test]
    fn overlong_command_line_is_an_error() {
        let long = "a".repeat(CMDLINE_MAX_SIZE + 1);
        assert!(build_cmdline(&[&long]).is_err());
    }

    #[test]
    fn missing_kernel_names_the_path() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let cmdline = build_cmdline(&["console=ttyS0"]).unwrap();
        let err = load_guest(
            &mem,
            Path::new("/nonexistent/vmlinux"),
            None,
            &[],
            &cmdline,
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/vmlinux"), "{err}");
    }

    #[test]
    fn garbage_kernel_is_refused_with_both_reasons() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let dir = std::env::temp_dir().join(format!("rv-boot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a-kernel");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let cmdline = build_cmdline(&["console=ttyS0"]).unwrap();
        let err = load_guest(&mem, &path, None, &[], &cmdline, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a loadable kernel"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
