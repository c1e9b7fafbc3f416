//! Compiles the seccomp policy (`seccomp/worker.json`, reviewed like code) into BPF at build
//! time, one file per filter in `OUT_DIR`, embedded by `src/seccomp.rs`.

use std::error::Error;
use std::fs::{self, File};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=seccomp/worker.json");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH")?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let names = ["stage1", "clone3_enosys", "stage2", "stage2_enosys"];
    if arch != "x86_64" {
        // The policy is written for x86_64 syscall names; other arches get empty programs, and
        // the seccomp layer reports itself unavailable there.
        for name in names {
            fs::write(out.join(format!("seccomp_{name}.bpf")), [])?;
        }
        return Ok(());
    }
    let filters = seccompiler::compile_from_json(
        File::open("seccomp/worker.json")?,
        seccompiler::TargetArch::x86_64,
    )?;
    for name in names {
        let program = filters
            .get(name)
            .ok_or_else(|| format!("seccomp/worker.json has no filter `{name}`"))?;
        let mut bytes = Vec::with_capacity(program.len() * 8);
        for insn in program {
            bytes.extend_from_slice(&insn.code.to_le_bytes());
            bytes.push(insn.jt);
            bytes.push(insn.jf);
            bytes.extend_from_slice(&insn.k.to_le_bytes());
        }
        fs::write(out.join(format!("seccomp_{name}.bpf")), bytes)?;
    }
    Ok(())
}
