//! Emulation-failure exits: on nested PVM the host's instruction emulator
//! stops on some instructions in guest kernel mode and hands them to the VMM
//! (KVM_EXIT_INTERNAL_ERROR, suberror KVM_INTERNAL_ERROR_EMULATION). The VMM
//! decodes them with iced-x86, carries out the few it knows on the vCPU's
//! registers and resumes the guest. The emulation itself is pure: it works
//! on a [`CpuState`] and a memory reader, and is unit-tested.

use iced_x86::{CpuidFeature, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use kvm_bindings::{kvm_fpu, kvm_regs};
use thiserror::Error;

/// Why an instruction could not be emulated.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EmulationError {
    /// The bytes do not decode to an instruction.
    #[error("undecodable instruction bytes {0:02x?}")]
    Undecodable(Vec<u8>),
    /// A valid instruction ringvisor does not emulate.
    #[error("no emulation for `{text}` (bytes {bytes:02x?})")]
    Unsupported { text: String, bytes: Vec<u8> },
    /// A memory operand could not be read.
    #[error("reading the memory operand of `{text}` at {addr:#x} failed")]
    Memory { text: String, addr: u64 },
}

impl EmulationError {
    /// What to do about the instruction that stopped the guest, when it is
    /// one a stock kernel is known to stop on under nested PVM (see
    /// [`stop_hint`]).
    pub fn stop_hint(&self) -> Option<&'static str> {
        match self {
            EmulationError::Unsupported { bytes, .. } => stop_hint(&decode(bytes, 0).ok()?),
            EmulationError::Undecodable(_) | EmulationError::Memory { .. } => None,
        }
    }
}

/// Hints for the instructions a stock kernel stops on under nested PVM
/// (`/work/shared/notes`: "What stops a stock guest"), by what fixes them.
pub mod hints {
    /// `int3` at CPL 0: `int3_selftest()` at boot.
    pub const INT3: &str = "int3 in guest kernel mode is what int3_selftest() runs at boot; \
        a kernel without ringvisor's PVM compatibility patch always stops there on nested PVM: \
        apply guest-kernel-patches/0001 (ringvisor passes its ringvisor_pvm parameter unless \
        --pvm off) or boot the kernel guest-images/build.sh builds";
    /// `cmpxchg16b`: SLUB's fast path.
    pub const CMPXCHG16B: &str = "cmpxchg16b (SLUB's fast path) cannot be emulated on nested \
        PVM; ringvisor hides CX16 in the vCPUs' CPUID there, so this kernel ran with --pvm off \
        or assumes CX16 (built for x86-64-v2 or later): use --pvm auto or on and a kernel built \
        for baseline x86-64";
    /// The XSAVE family: FPU set-up and context switches.
    pub const XSAVE: &str = "the XSAVE family (xsave, xrstor, xgetbv, ...) cannot be emulated \
        on nested PVM; ringvisor passes `noxsave` there, so this kernel ran with --pvm off or \
        does not honour noxsave: use --pvm auto or on";
    /// `clac` / `stac`: SMAP.
    pub const SMAP: &str = "clac/stac (SMAP) stop the guest on nested PVM; ringvisor passes \
        `clearcpuid=smap` there: use --pvm auto or on and keep --cmdline from overriding \
        clearcpuid";
    /// `popcnt` with an operand the VMM cannot read (e.g. GS-relative).
    pub const POPCNT: &str = "popcnt stops the guest on nested PVM and this operand is one \
        ringvisor cannot emulate; ringvisor passes `clearcpuid=popcnt` there: use --pvm auto or \
        on and keep --cmdline from overriding clearcpuid";
    /// x87 and MMX: the AMD FXSAVE-leak workaround, `fwait` in `fpu__drop()`.
    pub const X87: &str = "x87/MMX instructions in guest kernel mode (the AMD FXSAVE-leak \
        workaround at every FPU restore, the fwait in fpu__drop() at execve and exit) stop the \
        guest on nested PVM; guest-kernel-patches/0001 skips both when ringvisor passes \
        ringvisor_pvm: apply it and use --pvm auto or on";
    /// AVX, AVX2, AVX-512.
    pub const AVX: &str = "AVX/AVX-512 in guest kernel mode stops the guest on nested PVM; \
        ringvisor passes `noxsave clearcpuid=avx,avx2,avx512f` there: use --pvm auto or on and \
        keep --cmdline from overriding them";
    /// The other features ringvisor clears on the command line.
    pub const CLEARED_FEATURE: &str = "this instruction needs a CPU feature ringvisor turns off \
        on nested PVM with `clearcpuid=` (rdrand, rdseed, rdpid, movbe, bmi1, bmi2, fsgsbase, \
        pku, ...): use --pvm auto or on and keep --cmdline from overriding clearcpuid";
}

/// What to do about an instruction that stopped the guest with an
/// emulation failure, for the instructions a stock kernel is known to stop
/// on under nested PVM; `None` for any other.
pub fn stop_hint(instr: &Instruction) -> Option<&'static str> {
    match instr.mnemonic() {
        Mnemonic::Int3 => return Some(hints::INT3),
        Mnemonic::Cmpxchg16b => return Some(hints::CMPXCHG16B),
        Mnemonic::Clac | Mnemonic::Stac => return Some(hints::SMAP),
        Mnemonic::Popcnt => return Some(hints::POPCNT),
        Mnemonic::Wait | Mnemonic::Emms => return Some(hints::X87),
        _ => {}
    }
    instr
        .cpuid_features()
        .iter()
        .find_map(|feature| match feature {
            CpuidFeature::XSAVE
            | CpuidFeature::XSAVEC
            | CpuidFeature::XSAVEOPT
            | CpuidFeature::XSAVES => Some(hints::XSAVE),
            CpuidFeature::FPU | CpuidFeature::FPU287 | CpuidFeature::FPU387 | CpuidFeature::MMX => {
                Some(hints::X87)
            }
            CpuidFeature::AVX
            | CpuidFeature::AVX2
            | CpuidFeature::AVX512F
            | CpuidFeature::AVX512VL
            | CpuidFeature::AVX512BW
            | CpuidFeature::AVX512DQ
            | CpuidFeature::AVX512CD => Some(hints::AVX),
            CpuidFeature::RDRAND
            | CpuidFeature::RDSEED
            | CpuidFeature::RDPID
            | CpuidFeature::MOVBE
            | CpuidFeature::BMI1
            | CpuidFeature::BMI2
            | CpuidFeature::FSGSBASE
            | CpuidFeature::PKU => Some(hints::CLEARED_FEATURE),
            _ => None,
        })
}

/// The register state the emulator works on.
#[derive(Debug, Clone, Default)]
pub struct CpuState {
    /// General-purpose registers, RIP and RFLAGS.
    pub regs: kvm_regs,
    /// x87/SSE state, loaded only for instructions that need it.
    pub fpu: Option<kvm_fpu>,
}

/// What emulating one instruction needs besides registers.
pub trait EmulationContext {
    /// Reads `buf.len()` bytes at guest-virtual `addr`.
    fn read_virt(&mut self, addr: u64, buf: &mut [u8]) -> bool;
    /// The x87 state, for x87 instructions.
    fn fpu(&mut self) -> Option<kvm_fpu>;
}

const RFLAGS_CF: u64 = 1 << 0;
const RFLAGS_PF: u64 = 1 << 2;
const RFLAGS_AF: u64 = 1 << 4;
const RFLAGS_ZF: u64 = 1 << 6;
const RFLAGS_SF: u64 = 1 << 7;
const RFLAGS_OF: u64 = 1 << 11;
const RFLAGS_AC: u64 = 1 << 18;
/// x87 status word: exception flags, stack fault, error summary, busy.
const FSW_EXCEPTIONS: u16 = 0x80ff;

/// Decodes the instruction at the start of `bytes` (64-bit mode).
pub fn decode(bytes: &[u8], rip: u64) -> Result<Instruction, EmulationError> {
    let mut decoder = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
    let instr = decoder.decode();
    if instr.is_invalid() {
        return Err(EmulationError::Undecodable(bytes.to_vec()));
    }
    Ok(instr)
}

/// A mutable reference to the 64-bit register that holds `reg`.
fn gpr(regs: &mut kvm_regs, reg: Register) -> Option<&mut u64> {
    Some(match reg.full_register() {
        Register::RAX => &mut regs.rax,
        Register::RBX => &mut regs.rbx,
        Register::RCX => &mut regs.rcx,
        Register::RDX => &mut regs.rdx,
        Register::RSI => &mut regs.rsi,
        Register::RDI => &mut regs.rdi,
        Register::RSP => &mut regs.rsp,
        Register::RBP => &mut regs.rbp,
        Register::R8 => &mut regs.r8,
        Register::R9 => &mut regs.r9,
        Register::R10 => &mut regs.r10,
        Register::R11 => &mut regs.r11,
        Register::R12 => &mut regs.r12,
        Register::R13 => &mut regs.r13,
        Register::R14 => &mut regs.r14,
        Register::R15 => &mut regs.r15,
        _ => return None,
    })
}

fn operand_mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

fn unsupported(instr: &Instruction, bytes: &[u8]) -> EmulationError {
    EmulationError::Unsupported {
        text: instr.to_string(),
        bytes: bytes[..instr.len().min(bytes.len())].to_vec(),
    }
}

/// Reads the source operand (operand 1) of `instr`.
fn read_source(
    instr: &Instruction,
    state: &mut CpuState,
    ctx: &mut dyn EmulationContext,
    bytes: &[u8],
) -> Result<u64, EmulationError> {
    let size = instr.op0_register().size();
    match instr.op1_kind() {
        OpKind::Register => {
            let value = *gpr(&mut state.regs, instr.op1_register())
                .ok_or_else(|| unsupported(instr, bytes))?;
            Ok(value & operand_mask(size))
        }
        OpKind::Memory => {
            let regs = state.regs;
            let addr = instr
                .virtual_address(1, 0, |reg, _, _| {
                    let mut copy = regs;
                    gpr(&mut copy, reg).map(|v| *v).or(match reg {
                        Register::RIP => Some(instr.next_ip()),
                        // Flat segments in 64-bit mode; FS/GS-relative
                        // operands (per-CPU data) are not emulated.
                        Register::None
                        | Register::CS
                        | Register::DS
                        | Register::ES
                        | Register::SS => Some(0),
                        _ => None,
                    })
                })
                .ok_or_else(|| unsupported(instr, bytes))?;
            let mut buf = [0u8; 8];
            if !ctx.read_virt(addr, &mut buf[..size]) {
                return Err(EmulationError::Memory {
                    text: instr.to_string(),
                    addr,
                });
            }
            Ok(u64::from_le_bytes(buf))
        }
        _ => Err(unsupported(instr, bytes)),
    }
}

/// Emulates the instruction at the start of `bytes` on `state`, advancing
/// RIP past it. Returns the mnemonic for statistics.
pub fn emulate(
    bytes: &[u8],
    state: &mut CpuState,
    ctx: &mut dyn EmulationContext,
) -> Result<&'static str, EmulationError> {
    let instr = decode(bytes, state.regs.rip)?;
    let name = match instr.mnemonic() {
        Mnemonic::Clac => {
            state.regs.rflags &= !RFLAGS_AC;
            "clac"
        }
        Mnemonic::Stac => {
            state.regs.rflags |= RFLAGS_AC;
            "stac"
        }
        // No unmasked x87 exception can be pending: the guest runs with the
        // default control word, so a wait has nothing to wait for.
        Mnemonic::Wait => "fwait",
        Mnemonic::Fnclex => {
            let mut fpu = ctx.fpu().ok_or_else(|| unsupported(&instr, bytes))?;
            fpu.fsw &= !FSW_EXCEPTIONS;
            state.fpu = Some(fpu);
            "fnclex"
        }
        Mnemonic::Emms => {
            let mut fpu = ctx.fpu().ok_or_else(|| unsupported(&instr, bytes))?;
            // Abridged tag word: 0 marks every register empty.
            fpu.ftwx = 0;
            state.fpu = Some(fpu);
            "emms"
        }
        Mnemonic::Popcnt => {
            let size = instr.op0_register().size();
            let value = read_source(&instr, state, ctx, bytes)?;
            let count = u64::from(value.count_ones());
            let dst = gpr(&mut state.regs, instr.op0_register())
                .ok_or_else(|| unsupported(&instr, bytes))?;
            // 32-bit destinations zero-extend; 16-bit ones merge.
            *dst = match size {
                2 => (*dst & !0xffff) | count,
                _ => count,
            };
            state.regs.rflags &=
                !(RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF);
            if value == 0 {
                state.regs.rflags |= RFLAGS_ZF;
            }
            "popcnt"
        }
        _ => return Err(unsupported(&instr, bytes)),
    };
    state.regs.rip = instr.next_ip();
    Ok(name)
}

/// Extracts the instruction bytes KVM reports with an emulation failure
/// (`struct kvm_run.emulation_failure`: flags in data\[0\], then the length
/// byte and up to 15 bytes), if it reported them.
pub fn reported_instruction_bytes(ndata: u32, data: &[u64; 16]) -> Option<Vec<u8>> {
    const FLAG_INSTRUCTION_BYTES: u64 = 1;
    if ndata < 3 || data[0] & FLAG_INSTRUCTION_BYTES == 0 {
        return None;
    }
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&data[1].to_le_bytes());
    raw[8..].copy_from_slice(&data[2].to_le_bytes());
    let len = usize::from(raw[0]).min(15);
    (len > 0).then(|| raw[1..=len].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ctx {
        mem_base: u64,
        mem: Vec<u8>,
        fpu: kvm_fpu,
    }

    impl Default for Ctx {
        fn default() -> Self {
            Self {
                mem_base: 0x1000,
                mem: vec![0; 64],
                fpu: kvm_fpu::default(),
            }
        }
    }

    impl EmulationContext for Ctx {
        fn read_virt(&mut self, addr: u64, buf: &mut [u8]) -> bool {
            let Some(off) = addr.checked_sub(self.mem_base) else {
                return false;
            };
            let off = off as usize;
            match self.mem.get(off..off + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
        fn fpu(&mut self) -> Option<kvm_fpu> {
            Some(self.fpu)
        }
    }

    fn state(rip: u64) -> CpuState {
        CpuState {
            regs: kvm_regs {
                rip,
                rflags: 2,
                ..Default::default()
            },
            fpu: None,
        }
    }

    #[test]
    fn popcnt_register_forms() {
        // popcnt rax, rbx
        let mut s = state(0x100);
        s.regs.rbx = 0xf0f0;
        s.regs.rflags |= RFLAGS_CF;
        let bytes = [0xf3, 0x48, 0x0f, 0xb8, 0xc3];
        assert_eq!(emulate(&bytes, &mut s, &mut Ctx::default()), Ok("popcnt"));
        assert_eq!(s.regs.rax, 8);
        assert_eq!(s.regs.rip, 0x105);
        assert_eq!(s.regs.rflags & RFLAGS_CF, 0);

        // popcnt eax, edi with a zero source sets ZF and zero-extends.
        let mut s = state(0);
        s.regs.rax = u64::MAX;
        s.regs.rdi = 0xffff_ffff_0000_0000;
        assert_eq!(
            emulate(&[0xf3, 0x0f, 0xb8, 0xc7], &mut s, &mut Ctx::default()),
            Ok("popcnt")
        );
        assert_eq!(s.regs.rax, 0);
        assert_ne!(s.regs.rflags & RFLAGS_ZF, 0);
    }

    #[test]
    fn popcnt_memory_operand_reads_guest_memory() {
        // popcnt rax, [rdi+8]
        let mut ctx = Ctx::default();
        ctx.mem[8..16].copy_from_slice(&0x7u64.to_le_bytes());
        let mut s = state(0x10);
        s.regs.rdi = 0x1000;
        let bytes = [0xf3, 0x48, 0x0f, 0xb8, 0x47, 0x08];
        assert_eq!(emulate(&bytes, &mut s, &mut ctx), Ok("popcnt"));
        assert_eq!(s.regs.rax, 3);
        assert_eq!(s.regs.rip, 0x16);

        s.regs.rdi = 0x9000;
        s.regs.rip = 0x10;
        assert!(matches!(
            emulate(&bytes, &mut s, &mut ctx),
            Err(EmulationError::Memory { addr: 0x9008, .. })
        ));
        assert_eq!(s.regs.rip, 0x10, "a failed emulation must not move RIP");
    }

    #[test]
    fn smap_and_x87_instructions() {
        let mut s = state(0);
        emulate(&[0x0f, 0x01, 0xcb], &mut s, &mut Ctx::default()).unwrap(); // stac
        assert_ne!(s.regs.rflags & RFLAGS_AC, 0);
        emulate(&[0x0f, 0x01, 0xca], &mut s, &mut Ctx::default()).unwrap(); // clac
        assert_eq!(s.regs.rflags & RFLAGS_AC, 0);
        assert_eq!(s.regs.rip, 6);

        let mut ctx = Ctx::default();
        ctx.fpu.fsw = 0x80ff | 0x3800;
        ctx.fpu.ftwx = 0xff;
        let mut s = state(0);
        assert_eq!(emulate(&[0xdb, 0xe2], &mut s, &mut ctx), Ok("fnclex"));
        assert_eq!(s.fpu.unwrap().fsw, 0x3800, "TOP is kept");
        assert_eq!(emulate(&[0x0f, 0x77], &mut s, &mut ctx), Ok("emms"));
        assert_eq!(s.fpu.unwrap().ftwx, 0);
        assert_eq!(emulate(&[0x9b], &mut s, &mut ctx), Ok("fwait"));
        assert_eq!(s.regs.rip, 5);
    }

    #[test]
    fn unknown_and_invalid_instructions_are_reported() {
        let mut s = state(0);
        // xsave [rdi]
        let err = emulate(&[0x0f, 0xae, 0x27], &mut s, &mut Ctx::default()).unwrap_err();
        assert!(err.to_string().contains("xsave"), "{err}");
        assert!(matches!(
            emulate(&[0x0f, 0xff], &mut s, &mut Ctx::default()),
            Err(EmulationError::Undecodable(_))
        ));
        assert_eq!(s.regs.rip, 0);
    }

    fn hint_for(bytes: &[u8]) -> Option<&'static str> {
        let mut s = state(0);
        // A context without x87 state, as for an instruction that cannot
        // be emulated.
        struct NoFpu;
        impl EmulationContext for NoFpu {
            fn read_virt(&mut self, _: u64, _: &mut [u8]) -> bool {
                false
            }
            fn fpu(&mut self) -> Option<kvm_fpu> {
                None
            }
        }
        emulate(bytes, &mut s, &mut NoFpu).unwrap_err().stop_hint()
    }

    #[test]
    fn a_stock_kernels_known_stops_get_a_hint_naming_the_fix() {
        let int3 = hint_for(&[0xcc]).expect("int3");
        assert!(int3.contains("int3_selftest") && int3.contains("guest-kernel-patches/0001"));
        // lock cmpxchg16b [rdi]
        assert_eq!(
            hint_for(&[0xf0, 0x48, 0x0f, 0xc7, 0x0f]),
            Some(hints::CMPXCHG16B)
        );
        // xsave [rdi], xrstor [rdi], xsaves64 [rdi], xgetbv
        for xsave in [
            &[0x0f, 0xae, 0x27][..],
            &[0x0f, 0xae, 0x2f],
            &[0x48, 0x0f, 0xc7, 0x2f],
            &[0x0f, 0x01, 0xd0],
        ] {
            assert_eq!(hint_for(xsave), Some(hints::XSAVE), "{xsave:02x?}");
        }
        // fild dword [rdi]; fnclex and emms without x87 state to work on
        for x87 in [&[0xdb, 0x07][..], &[0xdb, 0xe2], &[0x0f, 0x77]] {
            assert_eq!(hint_for(x87), Some(hints::X87), "{x87:02x?}");
        }
        // popcnt rax, gs:[0x10] (per-CPU data: not emulated)
        assert_eq!(
            hint_for(&[0x65, 0xf3, 0x48, 0x0f, 0xb8, 0x04, 0x25, 0x10, 0, 0, 0]),
            Some(hints::POPCNT)
        );
        // vzeroupper; rdrand rax
        assert_eq!(hint_for(&[0xc5, 0xf8, 0x77]), Some(hints::AVX));
        assert_eq!(
            hint_for(&[0x48, 0x0f, 0xc7, 0xf0]),
            Some(hints::CLEARED_FEATURE)
        );
        for hint in [hints::INT3, hints::CMPXCHG16B, hints::XSAVE, hints::X87] {
            assert!(!hint.contains('\n'));
            assert!(hint.contains("--pvm") || hint.contains("0001"), "{hint}");
        }
    }

    #[test]
    fn other_stops_get_no_hint() {
        // hlt, in guest kernel mode an ordinary instruction, and an invalid
        // encoding.
        assert_eq!(hint_for(&[0xf4]), None);
        assert_eq!(hint_for(&[0x0f, 0xff]), None);
        let memory = EmulationError::Memory {
            text: "popcnt".into(),
            addr: 0,
        };
        assert_eq!(memory.stop_hint(), None);
    }

    #[test]
    fn reported_bytes_follow_the_kvm_layout() {
        let mut data = [0u64; 16];
        data[0] = 1;
        let mut raw = [0u8; 16];
        raw[0] = 5;
        raw[1..6].copy_from_slice(&[0xf3, 0x48, 0x0f, 0xb8, 0xc3]);
        data[1] = u64::from_le_bytes(raw[..8].try_into().unwrap());
        data[2] = u64::from_le_bytes(raw[8..].try_into().unwrap());
        assert_eq!(
            reported_instruction_bytes(8, &data),
            Some(vec![0xf3, 0x48, 0x0f, 0xb8, 0xc3])
        );
        assert_eq!(reported_instruction_bytes(2, &data), None);
        data[0] = 0;
        assert_eq!(reported_instruction_bytes(8, &data), None);
    }
}
